"""`wave bench` end to end on digits, shrunk to seconds: every output, n/a cells, resumption,
determinism, one-line errors; and the `--quick` preset as it ships (about 2 minutes)."""

import csv
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from waveinit.bench.config import METHODS
from waveinit.bench.records import images_passed
from waveinit.spec import ROLE_NAMES

# The quick preset made smaller still: one seed, one epoch, a 1x32 size inside the 2x64
# ancestry and a 3x32 one deeper than it, a tiny ancestry and learngene, a two-rate sweep.
TINY = ["--quick", "--seeds", "1", "--epochs", "1", "--scratch-factor", "2", "--depths", "1", "--widths", "32",
        "--extra-sizes", "3x32", "--ancestry-epochs", "3", "--distill-epochs", "1", "--fit-steps", "5", "--fit-samples", "200",
        "--lrs", "3e-3,1e-2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def bench(*args):
    from waveinit.cli.main import app

    return CliRunner().invoke(app, ["bench", *map(str, args)])


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("bench") / "out"
    result = bench(*TINY, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_output_is_written_and_consistent(run):
    out, log = run
    for name in ("results.csv", "results.json", "results.md", "accuracy_vs_size.png", "accuracy_vs_epoch.png", "storage.png",
                 "cells.jsonl", "sweep.jsonl", "bench.json", "ancestry.safetensors", "learngene.safetensors", "nearest_kron.safetensors"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for plot in ("accuracy_vs_size.png", "accuracy_vs_epoch.png", "storage.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(out / "results.csv")
    report = json.loads((out / "results.json").read_text())
    assert len(rows) == len(report["rows"])
    cells = {(r["size"], r["method"], r["seed"]) for r in rows}
    assert cells == {(size, m, "0") for size in ("1x32", "3x32") for m in METHODS}
    for (size, method, _seed) in cells:
        if (size, method) == ("3x32", "weight-selection"):
            continue
        epochs = [int(r["epoch"]) for r in rows if (r["size"], r["method"]) == (size, method)]
        assert epochs == list(range(3 if method == "scratch-long" else 2)), (size, method)  # epoch 0, then 1 (scratch-long 2)
    for r in (r for r in rows if r["status"] == "ok"):
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and float(r["loss"]) > 0
        assert int(r["compute"]) == int(r["init_compute"]) + int(r["epoch"]) * int(r["train_images"])
    fit = images_passed(200, 64, 5)  # the scaler fit counts in full: 5 steps of 64 images
    assert {int(r["init_compute"]) for r in rows if r["method"] in ("wave", "nearest-kron")} == {fit}
    assert {int(r["init_compute"]) for r in rows if r["method"] in ("random", "wave-nofit", "scratch-long")} == {0}
    assert "[12/12]" in log


def test_weight_selection_is_not_applicable_beyond_the_ancestry(run):
    out, log = run
    rows = read_csv(out / "results.csv")
    beyond = [r for r in rows if (r["size"], r["method"]) == ("3x32", "weight-selection")]
    assert len(beyond) == 1 and beyond[0]["status"] == "n/a" and beyond[0]["accuracy"] == ""
    assert {r["status"] for r in rows if (r["size"], r["method"]) == ("1x32", "weight-selection")} == {"ok"}
    assert "3x32/weight-selection/seed0: not applicable" in log
    table = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| 3x32 |"))
    assert table.split(" | ")[3] == "n/a"  # size | parameters | random | weight-selection


def test_the_sweep_picks_each_methods_rate_on_validation_data(run):
    out, _ = run
    report = json.loads((out / "results.json").read_text())
    runs = report["sweep"]["runs"]
    assert report["sweep"]["size"] == "1x32"
    for method in ("random", "weight-selection", "nearest-kron", "wave", "wave-nofit"):
        mine = [r for r in runs if r["method"] == method]
        assert sorted(r["lr"] for r in mine) == [3e-3, 1e-2]
        best = max(mine, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
        assert report["learning_rates"][method] == best["lr"]
    assert report["learning_rates"]["scratch-long"] == report["learning_rates"]["random"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert all(r["lr"] == report["learning_rates"][r["method"]] for r in ok)
    assert "## Learning rates" in (out / "results.md").read_text()


def test_markdown_reports_accuracy_compute_savings_and_storage(run):
    out, _ = run
    md = (out / "results.md").read_text()
    for heading in ("## Ancestry and learngene", "## Test accuracy", "## Compute to reach random init's final accuracy",
                    "## WAVE against pre-training every size", "## Storage"):
        assert heading in md
    report = json.loads((out / "results.json").read_text())
    storage = report["storage"]
    assert storage["learngene_bytes"] == (out / "learngene.safetensors").stat().st_size
    assert storage["sizes"]["3x32"]["dense_bytes"] == 4 * report["rows"][-1]["params"]
    family = report["family"]
    train_images = report["rows"][0]["train_images"]
    assert family["ancestry"]["compute"] == 3 * train_images and family["learngene"]["compute"] == 1 * train_images
    assert report["compute"]["family_compute"] == 4 * train_images


def test_a_rerun_skips_finished_cells_and_more_seeds_only_add_cells(run):
    out, _ = run
    before = {name: (out / name).read_bytes() for name in ("cells.jsonl", "sweep.jsonl", "ancestry.safetensors", "learngene.safetensors")}
    again = bench(*TINY, "--out", out)
    assert again.exit_code == 0, again.output
    assert "skipped 12 finished cells" in again.output and "0 cells run, 12 skipped" in again.output
    assert "training the ancestry" not in again.output and "sweep " not in again.output
    assert all((out / name).read_bytes() == data for name, data in before.items())

    more = bench(*TINY, "--seeds", "2", "--methods", "random", "--out", out)
    assert more.exit_code == 0, more.output
    assert "2 cells run, 2 skipped" in more.output
    lines = (out / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 14 and (out / "cells.jsonl").read_text().startswith(before["cells.jsonl"].decode())


def test_a_cell_run_again_gives_the_same_numbers(run):
    # Determinism: rebuild the family from the files and rerun one cell from scratch.
    from waveinit.bench.config import BenchConfig
    from waveinit.bench.family import make_family
    from waveinit.bench.runner import bench_sizes, run_cell
    from waveinit.io.datasets import load_dataset

    out, _ = run
    saved = {json.loads(line)["key"]: json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()}
    settings = json.loads((out / "bench.json").read_text())["settings"]
    config = BenchConfig(**{**settings, "lrs": tuple(settings["lrs"]), "depths": (1,), "widths": (32,), "extra_sizes": ()})
    data = load_dataset("digits")
    family = make_family(config, data, out, None, None, "cpu", log=lambda _: None)
    (size,) = bench_sizes(config, family.ancestry.spec, family.learngene.side)
    record = saved["1x32/wave/seed0"]
    again = run_cell("wave", size, 0, record["lr"], family, data, config, "cpu")
    assert [(r["accuracy"], r["loss"]) for r in again["rows"]] == [(r["accuracy"], r["loss"]) for r in record["rows"]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "random,magic"], "unknown method 'magic'"),
        (["--extra-sizes", "8by256"], "is not DEPTHxWIDTH"),
        (["--lrs", "fast"], "'fast' is not a float"),
        (["--widths", "48"], "width 48 is not a multiple of the template side 32"),
        (["--ancestry", "missing.safetensors"], "no such file"),
        (["--epochs", "2"], "holds a bench made with other settings (epochs: 1 there, 2 now)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_training(run, args, message, tmp_path):
    out, _ = run
    target = out if "--epochs" in args else tmp_path / "new"
    result = bench(*TINY, *args, "--out", target)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "new" / "ancestry.safetensors").exists()


@pytest.mark.slow
def test_the_quick_preset(tmp_path):
    # `wave bench --quick` as it ships (about 2 minutes on 2 CPU cores): 5 sizes x 6 methods x 3 seeds.
    out = tmp_path / "quick"
    result = bench("--quick", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    summary = {(s["size"], s["method"]): s for s in report["summary"]}
    assert {size for size, _ in summary} == {"1x32", "1x64", "2x32", "2x64", "3x96"} and {m for _, m in summary} == set(METHODS)
    assert summary[("3x96", "weight-selection")]["status"] == "n/a"
    assert all(s["seeds"] == 3 for s in summary.values())
    family = report["family"]
    assert family["ancestry"]["test_accuracy"] > 0.8
    # At the ancestry's own size, weight selection is a copy of the ancestry, and the data-free
    # spawn a copy of the auxiliary model: epoch 0 scores what they scored.
    assert summary[("2x64", "weight-selection")]["mean"][0] == pytest.approx(family["ancestry"]["test_accuracy"], abs=0.006)
    assert summary[("2x64", "wave-nofit")]["mean"][0] == pytest.approx(family["learngene"]["test_accuracy"], abs=0.006)
    assert "| 3x96 |" in (out / "results.md").read_text()


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys\nfrom waveinit.cli.main import app\n"
            "try:\n    app(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert not {'torch', 'matplotlib'} & set(sys.modules)\nimport waveinit.selection\nassert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


# ----------------------------------------------------------------------------- the arithmetic, on hand-made records

N_TRAIN = 1000  # training images of the hand-made bench
FIT = 320  # wave's scaler fit: 5 steps of 64 images
ANCESTRY_SPEC = {"depth": 2, "width": 64, "heads": 1, "patch_size": 2, "image_size": 8, "channels": 1, "num_classes": 10}
# (size, method) -> per seed, accuracy after epoch 0, 1, ... (scratch-long: 3 epochs, the others 1)
ACCURACIES = {
    ("1x32", "random"): ([0.10, 0.60], [0.12, 0.70]),
    ("1x32", "nearest-kron"): ([0.30, 0.50], [0.30, 0.50]),
    ("1x32", "wave"): ([0.50, 0.80], [0.54, 0.84]),
    ("1x32", "scratch-long"): ([0.10, 0.60, 0.75, 0.83], [0.12, 0.70, 0.81, 0.85]),
    ("2x64", "random"): ([0.10, 0.50], [0.10, 0.60]),
    ("2x64", "wave"): ([0.40, 0.90], [0.44, 0.92]),
    ("2x64", "scratch-long"): ([0.10, 0.50, 0.70, 0.80], [0.10, 0.60, 0.72, 0.86]),
}


def hand_record(size, method, seed, accuracies):
    depth, width = map(int, size.split("x"))
    init = FIT if method in ("wave", "nearest-kron") else 0
    rows = [{"epoch": e, "accuracy": a, "loss": 2.0 - a, "train_loss": 2.1 - a, "seconds": 0.5 * e,
             "compute": init + e * N_TRAIN, "images": N_TRAIN if e else 0} for e, a in enumerate(accuracies)]
    return {"key": f"{size}/{method}/seed{seed}", "size": size, "depth": depth, "width": width, "heads": 1,
            "params": 0, "method": method, "seed": seed, "status": "ok", "lr": 1e-3, "init_compute": init,
            "init_images": 600 if init else 0, "init_teacher_forward": 0, "train_images": N_TRAIN, "test_images": 359, "rows": rows}


def hand_records():
    records = [hand_record(size, method, seed, accs)
               for (size, method), per_seed in ACCURACIES.items() for seed, accs in enumerate(per_seed)]
    records += [{"key": f"2x64/weight-selection/seed{seed}", "size": "2x64", "depth": 2, "width": 64, "heads": 1, "params": 0,
                 "method": "weight-selection", "seed": seed, "status": "n/a", "reason": "not applicable: hand-made"}
                for seed in (0, 1)]
    return records


def hand_family(ancestry_compute=6000, learngene_compute=2000):
    return {
        "ancestry": {"spec": ANCESTRY_SPEC, "compute": ancestry_compute, "bytes": 420_000},
        "learngene": {"side": 32, "templates": {**{name: 2 for name in ROLE_NAMES}, "attn.qkv.weight": 3},
                      "template_params": 12_345, "compute": learngene_compute, "bytes": 50_000},
        "nearest_kron": {"compute": 0, "bytes": 50_000},
    }


def test_summarise_means_and_sample_std_over_seeds():
    from waveinit.bench.report import flat_rows, summarise

    records = hand_records()
    summary = summarise(records)
    assert set(summary) == set(ACCURACIES) | {("2x64", "weight-selection")}
    s = summary[("1x32", "wave")]
    assert s["status"] == "ok" and s["seeds"] == 2 and s["epochs"] == [0, 1] and s["train_images"] == N_TRAIN
    assert s["mean"] == pytest.approx([0.52, 0.82], abs=1e-12)
    # sample std (n - 1): two values a, b have std |a - b| / sqrt(2)
    assert s["std"] == pytest.approx([0.04 / 2 ** 0.5, 0.04 / 2 ** 0.5], abs=1e-12)
    assert s["compute"] == [FIT, FIT + N_TRAIN]
    long = summary[("1x32", "scratch-long")]
    assert long["epochs"] == [0, 1, 2, 3] and long["compute"] == [0, 1000, 2000, 3000]
    assert long["mean"] == pytest.approx([0.11, 0.65, 0.78, 0.84], abs=1e-12)
    assert long["std"] == pytest.approx([0.02 / 2 ** 0.5, 0.1 / 2 ** 0.5, 0.06 / 2 ** 0.5, 0.02 / 2 ** 0.5], abs=1e-12)
    assert summary[("1x32", "nearest-kron")]["std"] == [0.0, 0.0]  # equal seeds: no spread
    na = summary[("2x64", "weight-selection")]
    assert na["status"] == "n/a" and na["seeds"] == 2 and na["reason"] == "not applicable: hand-made" and "mean" not in na
    # one seed: std 0, not NaN
    one = summarise([r for r in records if r["seed"] == 0])
    assert one[("1x32", "wave")]["std"] == [0.0, 0.0] and one[("1x32", "wave")]["mean"] == [0.50, 0.80]
    # three seeds: std with ddof=1, checked against the formula
    third = hand_record("1x32", "wave", 2, [0.61, 0.95])
    three = summarise([r for r in records if (r["size"], r["method"]) == ("1x32", "wave")] + [third])[("1x32", "wave")]
    final = [0.80, 0.84, 0.95]
    mean = sum(final) / 3
    assert three["mean"][1] == pytest.approx(mean, abs=1e-12)
    assert three["std"][1] == pytest.approx((sum((x - mean) ** 2 for x in final) / 2) ** 0.5, abs=1e-12)

    rows = flat_rows(records)
    assert len(rows) == sum(len(per_seed) * len(per_seed[0]) for per_seed in ACCURACIES.values()) + 2  # + one per n/a cell
    na_rows = [r for r in rows if r["status"] == "n/a"]
    assert len(na_rows) == 2 and all(r["note"] == "not applicable: hand-made" and "accuracy" not in r for r in na_rows)
    last = next(r for r in rows if (r["size"], r["method"], r["seed"], r.get("epoch")) == ("1x32", "wave", 1, 1))
    assert last["accuracy"] == 0.84 and last["compute"] == FIT + N_TRAIN
    assert last["compute_epochs"] == pytest.approx((FIT + N_TRAIN) / N_TRAIN)


def test_first_reaching_is_the_first_epoch_at_or_above_the_target():
    from waveinit.bench.report import first_reaching

    s = {"epochs": [0, 1, 2, 3], "mean": [0.1, 0.5, 0.5, 0.9], "compute": [100, 1100, 2100, 3100]}
    assert first_reaching(s, 0.05) == (0, 100)
    assert first_reaching(s, 0.5) == (1, 1100)  # reaching means >=, and the first such epoch
    assert first_reaching(s, 0.5 + 1e-13) == (1, 1100)  # float noise below 1e-12 does not count as missing it
    assert first_reaching(s, 0.5 + 1e-9) == (3, 3100)
    assert first_reaching(s, 0.9) == (3, 3100)
    assert first_reaching(s, 0.91) is None
    # the mean of (0.6, 0.7) is not exactly 0.65 in floating point, yet 0.65 is reached
    assert first_reaching({"epochs": [1], "mean": [(0.6 + 0.7) / 2], "compute": [7]}, 0.65) == (1, 7)


def test_compute_table_against_numbers_worked_by_hand():
    from waveinit.bench.report import compute_table, summarise

    summary = summarise(hand_records())
    methods = ["random", "weight-selection", "nearest-kron", "wave", "scratch-long"]
    table = compute_table(summary, ["1x32", "2x64"], methods, hand_family(), epochs=1)
    # the ancestry (6000) and the learngene (2000) are made once, shared by the two sizes
    assert table["family_compute"] == 8000 and table["amortised_per_size"] == 4000

    small = table["sizes"]["1x32"]
    assert small["random_final"] == pytest.approx(0.65)  # random's mean after `epochs` (1) epochs
    assert small["to_random_final"] == {
        "random": {"epoch": 1, "compute": 1000},
        "nearest-kron": None,  # 0.50 never reaches 0.65
        "wave": {"epoch": 1, "compute": FIT + 1000},  # 0.52 at epoch 0 is not enough
        "scratch-long": {"epoch": 1, "compute": 1000},
    }
    wave = small["wave"]
    assert wave["final"] == pytest.approx(0.82) and wave["compute"] == FIT + 1000  # fit + one epoch
    assert wave["with_amortised_family"] == FIT + 1000 + 4000
    # scratch-long's means 0.11, 0.65, 0.78, 0.84: first >= 0.82 at epoch 3
    assert (wave["scratch_epoch"], wave["scratch_compute"], wave["scratch_max_compute"]) == (3, 3000, 3000)
    assert wave["saving"] == pytest.approx(3000 / 5320) and wave["saving_at_least"] is None

    big = table["sizes"]["2x64"]
    assert big["random_final"] == pytest.approx(0.55)
    assert big["to_random_final"] == {"random": {"epoch": 1, "compute": 1000}, "wave": {"epoch": 1, "compute": 1320},
                                      "scratch-long": {"epoch": 1, "compute": 1000}}  # n/a and absent methods left out
    wave = big["wave"]
    assert wave["final"] == pytest.approx(0.91)
    # scratch-long's means 0.1, 0.55, 0.71, 0.83 never reach 0.91: only a lower bound on the saving
    assert wave["scratch_compute"] is None and wave["scratch_epoch"] is None and wave["saving"] is None
    assert wave["saving_at_least"] == pytest.approx(3000 / 5320)

    total = table["total"]
    assert total["scratch"] == 3000 + 3000 and total["scratch_lower_bound"] is True  # 2x64's count is its maximum
    assert total["wave"] == 1320 + 1320 + 8000 and total["family_included"] is True
    assert total["saving"] == pytest.approx(6000 / 10640)

    # a family of given files has no compute: nothing amortised, WAVE's own compute only
    unknown = compute_table(summary, ["1x32", "2x64"], methods, hand_family(ancestry_compute=None), epochs=1)
    assert unknown["family_compute"] is None and unknown["amortised_per_size"] is None
    assert unknown["sizes"]["1x32"]["wave"]["with_amortised_family"] is None
    assert unknown["sizes"]["1x32"]["wave"]["saving"] == pytest.approx(3000 / 1320)
    assert unknown["total"]["wave"] == 2640 and unknown["total"]["family_included"] is False
    assert unknown["total"]["saving"] == pytest.approx(6000 / 2640)

    # one size carries the whole family
    one = compute_table(summary, ["1x32"], methods, hand_family(), epochs=1)
    assert one["amortised_per_size"] == 8000 and one["sizes"]["1x32"]["wave"]["saving"] == pytest.approx(3000 / 9320)
    # without scratch-long records there is no saving to report, and no total
    no_long = compute_table({k: v for k, v in summary.items() if k[1] != "scratch-long"}, ["1x32"], ["random", "wave"], hand_family(), epochs=1)
    assert "wave" not in no_long["sizes"]["1x32"] and "total" not in no_long
    assert no_long["sizes"]["1x32"]["to_random_final"] == {"random": {"epoch": 1, "compute": 1000}, "wave": {"epoch": 1, "compute": 1320}}


def test_storage_table_against_parameter_counts_worked_by_hand():
    from waveinit.bench.report import storage_table

    storage = storage_table(hand_records(), hand_family())
    # ViT of width w, depth d, 1x8x8 images in 2x2 patches (17 tokens, patch dim 4), 10 classes, MLP 4w:
    #   outside the blocks: cls w + pos 17w + patch 4w + w + final norm 2w + head 10w + 10 = 35w + 10
    #   per block: norms 4w, qkv 3w^2 + 3w, proj w^2 + w, fc1 4w^2 + 4w, fc2 4w^2 + w = 12w^2 + 13w
    def params(d, w):
        return 35 * w + 10 + d * (12 * w * w + 13 * w)

    assert (params(1, 32), params(2, 64)) == (13_834, 102_218)
    # scalers, side 32, k = w / 32 blocks per width axis: outside the blocks 7k + 1 per template
    # (cls, pos, patch weight, patch bias, norm weight, norm bias, head weight: k each; head bias: 1);
    # per block 12k^2 + 13k per template, of which qkv.weight is 3k^2 (it has 3 templates, the rest 2).
    def scalers(d, w):
        k = w // 32
        return 2 * (7 * k + 1 + d * (12 * k * k + 13 * k)) + d * 3 * k * k

    assert (scalers(1, 32), scalers(2, 64)) == (69, 350)
    assert storage["sizes"] == {
        "1x32": {"params": 13_834, "dense_bytes": 4 * 13_834, "scaler_params": 69, "scaler_bytes": 4 * 69},
        "2x64": {"params": 102_218, "dense_bytes": 4 * 102_218, "scaler_params": 350, "scaler_bytes": 4 * 350},
    }
    assert storage["learngene_bytes"] == 50_000 and storage["template_params"] == 12_345
    assert storage["dense_total_bytes"] == 4 * (13_834 + 102_218) == 464_208
    assert storage["learngene_and_scalers_bytes"] == 50_000 + 4 * (69 + 350) == 51_676
    assert storage["ratio"] == pytest.approx(464_208 / 51_676)


@pytest.mark.parametrize("samples, batch, steps, expected", [
    (600, 64, 5, 320),  # within the first epoch: full batches only
    (600, 64, 10, 600),  # one epoch: 9 batches of 64 and a partial last batch of 24
    (600, 64, 13, 792),  # an epoch and 3 batches into the next (max_steps mid-epoch)
    (100, 64, 2, 100),  # 64 + 36
    (100, 64, 3, 164),  # 64 + 36, then 64
    (50, 64, 3, 150),  # one short batch per epoch
    (128, 64, 4, 256),  # exact batches
    (600, 64, 0, 0),
])
def test_images_passed_counts_partial_last_batches(samples, batch, steps, expected):
    assert images_passed(samples, batch, steps) == expected


def test_images_passed_is_what_the_engine_draws():
    # the engine's batches: epoch after epoch, ceil(samples / batch) steps, the last one short
    for samples in (1, 7, 63, 64, 65, 200):
        for batch in (1, 8, 64):
            per_epoch = -(-samples // batch)
            drawn = [min(batch, samples - (g % per_epoch) * batch) for g in range(3 * per_epoch + 2)]
            for steps in range(len(drawn) + 1):
                assert images_passed(samples, batch, steps) == sum(drawn[:steps]), (samples, batch, steps)


def test_training_compute_from_provenance():
    from waveinit.bench.records import training_compute

    config = {"epochs": 6, "batch_size": 64, "max_steps": None}
    assert training_compute({"config": config, "train_size": 1438}) == 6 * 1438
    # max_steps decides over epochs: 1438 images are 23 batches (22 of 64, one of 30); 30 steps = one epoch + 7 batches
    assert training_compute({"config": {**config, "max_steps": 30}, "train_size": 1438}) == 1438 + 7 * 64
    assert training_compute({"config": {**config, "max_steps": 23}, "train_size": 1438}) == 1438
    assert training_compute({"config": {**config, "max_steps": 5}, "train_size": 1438}) == 5 * 64
    # unknown: no training record (a file given from elsewhere)
    assert training_compute({}) is None
    assert training_compute({"config": config}) is None
    assert training_compute({"config": "not a dict", "train_size": 1438}) is None
    assert training_compute({"config": config, "train_size": 0}) is None
