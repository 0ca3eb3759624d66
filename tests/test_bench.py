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
