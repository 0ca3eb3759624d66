"""`wave bench` end to end on digits, shrunk to seconds: every output, n/a cells, resumption,
determinism, one-line errors; and the `--quick` preset as it ships (about 2 minutes)."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from waveinit.bench.config import DEFAULT_METHODS, DOWNSTREAM_METHODS
from waveinit.bench.records import RecordFile, images_passed
from waveinit.errors import WaveError
from waveinit.spec import ROLE_NAMES
from waveinit.tasks import FIT_HOLDOUT

# The quick preset made smaller still: one seed, one epoch, a 1x64 size inside the 2x64 ancestry
# (every method applies) and a 3x32 one deeper than it (weight selection and TLEG do not), a tiny
# ancestry, one learngene candidate, a two-rate sweep, a two-point fit study, 200 downstream images.
TINY = ["--quick", "--seeds", "1", "--epochs", "1", "--scratch-epochs", "2", "--depths", "1", "--widths", "64",
        "--extra-sizes", "3x32", "--ancestry-epochs", "3", "--capacity", "2x32x1", "--fit-steps", "5", "--fit-samples", "200",
        "--fit-study", "5", "--lrs", "3e-3,1e-2", "--downstream", "fashion-mnist", "--downstream-subset", "200"]
DOWNSTREAM = list(DOWNSTREAM_METHODS)  # every method but kd-per-size, scratch the yardstick


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
    for name in ("results.csv", "results.json", "results.md", "accuracy_vs_size.png", "accuracy_vs_epoch.png", "accuracy_vs_compute.png",
                 "capacity.png", "storage.png", "cells.jsonl", "sweep.jsonl", "fit.jsonl", "downstream.jsonl", "bench.json",
                 "ancestry.safetensors", "learngenes/t2-s32-e1.safetensors", "tleg-e1.safetensors", "nearest_kron.safetensors"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for plot in ("accuracy_vs_size.png", "accuracy_vs_epoch.png", "accuracy_vs_compute.png", "capacity.png", "storage.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(out / "results.csv")
    report = json.loads((out / "results.json").read_text())
    assert len(rows) == len(report["rows"])
    main = [r for r in rows if r["data"] == "digits"]
    assert {(r["size"], r["method"], r["seed"]) for r in main} == {(size, m, "0") for size in ("1x64", "3x32") for m in DEFAULT_METHODS}
    for r in main:
        if r["status"] == "ok":
            assert int(r["epoch"]) <= (2 if r["method"] == "scratch" else 1)
    scratch = [int(r["epoch"]) for r in main if (r["size"], r["method"]) == ("1x64", "scratch")]
    assert scratch == [0, 1, 2]  # scored after every epoch
    for r in (r for r in rows if r["status"] == "ok"):
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and float(r["loss"]) > 0
        assert int(r["compute"]) == int(r["init_compute"]) + int(r["epoch"]) * int(r["train_images"])
    fit = images_passed(200 - 200 // FIT_HOLDOUT, 64, 5)  # the scaler fit counts in full: 5 steps of 64 of the 160 images it trains on
    assert {int(r["init_compute"]) for r in main if r["method"] in ("wave", "nearest-kron")} == {fit}
    # kd-per-size mirrors the fit: as many steps, batches and images, so the same passes
    assert {int(r["init_compute"]) for r in main if r["method"] == "kd-per-size"} == {fit}
    free = ("random", "mimetic", "weight-selection", "tleg", "wave-nofit", "scratch")
    assert {int(r["init_compute"]) for r in main if r["method"] in free and r["status"] == "ok"} == {0}  # downstream: the head warm-up
    assert "[18/18]" in log and "[16/16]" in log


def test_methods_that_cannot_make_a_size_are_not_applicable(run):
    out, log = run
    rows = read_csv(out / "results.csv")
    status = {(r["data"], r["size"], r["method"]): r["status"] for r in rows}
    assert status[("digits", "3x32", "weight-selection")] == "n/a"  # deeper than the ancestry: selection cannot grow
    assert status[("digits", "3x32", "tleg")] == "n/a"  # another width than the ancestry's
    assert status[("digits", "1x64", "weight-selection")] == status[("digits", "1x64", "tleg")] == "ok"
    assert "3x32/tleg/seed0: not applicable" in log
    table = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| 3x32 |"))
    cells = [c.strip() for c in table.strip("|").split("|")]
    assert cells[2 + DEFAULT_METHODS.index("weight-selection")] == "n/a" and cells[2 + DEFAULT_METHODS.index("tleg")] == "n/a"
    report = json.loads((out / "results.json").read_text())
    reason = next(s["reason"] for s in report["summary"] if (s["size"], s["method"]) == ("3x32", "tleg"))
    assert "TLEG makes only its ancestry's width 64" in reason


def test_tleg_and_weight_selection_at_the_ancestrys_own_size_copy_what_they_inherit(run):
    # At the ancestry's size, weight selection is the ancestry, and TLEG's expansion at the
    # auxiliary's depth its distilled model: scored alike, they must score the same.
    from waveinit.bench.config import QUICK
    from waveinit.bench.family import make_family
    from waveinit.bench.methods import initialise
    from waveinit.io.datasets import load_dataset
    from waveinit.training.evaluation import evaluate

    out, _ = run
    data = load_dataset("digits")
    family = make_family(QUICK, data, out, out / "ancestry.safetensors", out / "learngenes" / "t2-s32-e1.safetensors", 10**9, True, "cpu",
                         log=lambda _: None)
    assert family.tleg_path == out / "tleg-e1.safetensors"  # made by the run, reused here
    score = lambda model: evaluate(model, data.test_images, data.test_labels, 256, "cpu")["accuracy"]  # noqa: E731
    own = family.ancestry.spec
    assert score(initialise("weight-selection", own, 0, family, data, QUICK, "cpu").model) == score(family.ancestry)
    assert score(initialise("tleg", own, 0, family, data, QUICK, "cpu").model) == pytest.approx(family.tleg.provenance["test_accuracy"], abs=0.003)


def test_the_sweep_picks_each_methods_rate_on_validation_data(run):
    out, _ = run
    report = json.loads((out / "results.json").read_text())
    runs = report["sweep"]["runs"]
    assert report["sweep"]["size"] == "1x64"
    for method in (m for m in DEFAULT_METHODS if m != "scratch"):
        mine = [r for r in runs if r["method"] == method]
        assert sorted(r["lr"] for r in mine) == [3e-3, 1e-2], method
        best = max(mine, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
        assert report["learning_rates"][method] == best["lr"]
    assert report["learning_rates"]["scratch"] == report["learning_rates"]["random"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert all(r["lr"] == report["learning_rates"][r["method"]] for r in ok)  # downstream cells too
    assert "## Learning rates" in (out / "results.md").read_text()


def test_markdown_reports_every_study(run):
    out, _ = run
    md = (out / "results.md").read_text()
    for heading in ("## The family", "## The learngene's capacity", "## Test accuracy", "## Scratch compute to reach each method's accuracy",
                    "## Against pre-training every size (the n-times claim), per method", "## The scaler fit", "## Learning rates",
                    "## Downstream: fashion-mnist", "## Time", "## Storage"):
        assert heading in md, heading
    report = json.loads((out / "results.json").read_text())
    storage = report["storage"]
    assert storage["learngene_bytes"] == (out / "learngenes" / "t2-s32-e1.safetensors").stat().st_size
    family = report["family"]
    digits_train = 1438
    assert family["ancestry"]["compute"] == 3 * digits_train and family["learngene"]["compute"] == 1 * digits_train
    assert family["tleg"]["compute"] == 1 * digits_train  # the learngene's budget
    assert [c["chosen"] for c in family["capacity"]] == [True]
    assert "`capacity.png`" in md.split("## Storage")[1] and (out / "capacity.png").exists()
    assert report["compute"]["learngene_compute"] == digits_train and report["compute"]["ancestry_compute"] == 3 * digits_train
    totals = report["compute"]["totals"]  # each method charged the family file it spawns from, once
    assert totals["tleg"]["charged"] == family["tleg"]["compute"] and totals["wave"]["charged"] == family["learngene"]["compute"]
    assert totals["random"]["charged"] == 0 and "| tleg |" in md.split("the n-times claim")[1]
    fits = {(f["size"], f["steps"]) for f in report["fit_study"]}
    assert fits == {(size, k) for size in ("1x64", "3x32") for k in (0, 5)}
    fit = images_passed(200 - 200 // FIT_HOLDOUT, 64, 5)  # 5 steps of 64 of the 160 images the fit trains on
    assert all(f["compute"] == (fit if f["steps"] else 0) for f in report["fit_study"])
    gains = report["downstream"]["fashion-mnist"]["gains"]
    assert set(gains) == set(DOWNSTREAM) - {"random", "scratch"}
    far = report["downstream"]["fashion-mnist"]["compute"]["sizes"]["1x64"]
    assert set(far) == set(DOWNSTREAM) - {"scratch"} and far["wave"]["compute"] == fit + 200


def test_downstream_cells_start_the_data_dependent_parameters_afresh(run):
    out, _ = run
    rows = [r for r in read_csv(out / "results.csv") if r["data"] == "fashion-mnist"]
    assert {(r["size"], r["method"]) for r in rows} == {(size, m) for size in ("1x64", "3x32") for m in DOWNSTREAM}
    assert {int(r["train_images"]) for r in rows if r["status"] == "ok"} == {200}
    # 28x28 images: patch 7, so the models are other shapes than the family's (8x8 digits, patch 2)
    assert {(r["size"], r["method"]) for r in rows if r["status"] == "n/a"} == {("3x32", "weight-selection"), ("3x32", "tleg")}


def test_downstream_methods_share_the_head_warm_up_and_every_row_counts_flops(run):
    from waveinit.flops import forward_flops, train_flops
    from waveinit.io.files import load_model
    from waveinit.spec import ViTSpec

    out, _ = run
    far = [json.loads(line) for line in (out / "downstream.jsonl").read_text().splitlines()]
    fit = images_passed(200 - 200 // FIT_HOLDOUT, 64, 5)  # wave's fit: 5 steps over 160 images
    for r in (r for r in far if r["status"] == "ok"):
        assert r["head_warmup"] == (0 if r["method"] in ("wave", "nearest-kron", "scratch") else fit), r["key"]
        assert r["init_compute"] == (0 if r["method"] == "scratch" else fit), r["key"]  # a scaler fit, or the others' warm-up
    ancestry = load_model(out / "ancestry.safetensors").spec
    for r in (json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()):
        if r["status"] != "ok":
            continue
        spec = ViTSpec(depth=r["depth"], width=r["width"], heads=r["heads"], patch_size=2, image_size=8, channels=1, num_classes=10)
        assert r["train_flops_per_image"] == train_flops(spec)
        assert r["init_flops"] == (r["init_compute"] * train_flops(spec) + r["init_teacher_forward"] * forward_flops(ancestry)
                                   + r["init_forward"] * forward_flops(spec))
        held = 200 // FIT_HOLDOUT  # the fit scores its held-out images before, at each epoch end ("best") and after
        if r["method"] in ("wave", "nearest-kron"):
            assert r["init_forward"] % held == 0 and r["init_forward"] >= 3 * held, r["key"]
        else:
            assert r["init_forward"] == 0, r["key"]
        # kd-per-size's epochs add the ancestry's logits, computed once over the training set (the plain recipe: cached)
        teacher = r["train_images"] if r["method"] == "kd-per-size" else 0
        assert [row.get("teacher_forward", 0) for row in r["rows"]] == [teacher if row["epoch"] else 0 for row in r["rows"]]
        assert [row["flops"] for row in r["rows"]] == [r["init_flops"] + row["epoch"] * r["train_images"] * train_flops(spec)
                                                       + row.get("teacher_forward", 0) * forward_flops(ancestry) for row in r["rows"]]


def test_the_head_warm_up_trains_only_what_the_data_made_fresh():
    # a 2x32 model on digits (8x8, patch 2) from a 6x192 family on 28x28 images (patch 7): the
    # classifier and the patch embedding's weights are fresh, whatever the model's size; the rest
    # (inherited from the family by the method) stays as it was
    import torch

    from waveinit.bench.config import BenchConfig
    from waveinit.bench.methods import fresh_keys, random_vit, warm_up_head
    from waveinit.io.datasets import load_dataset
    from waveinit.spec import ViTSpec

    spec = ViTSpec(depth=2, width=32, heads=1, patch_size=2, image_size=8, channels=1, num_classes=10)
    family = ViTSpec(depth=6, width=192, heads=3, patch_size=7, image_size=28, channels=1, num_classes=10)
    assert fresh_keys(spec, family) == {"head.weight", "head.bias", "patch_embed.proj.weight"}
    assert fresh_keys(spec, ViTSpec(depth=6, width=192, heads=3, patch_size=2, image_size=8, channels=1, num_classes=10)) == {
        "head.weight", "head.bias"}
    five_classes = ViTSpec(depth=6, width=192, heads=3, patch_size=2, image_size=16, channels=3, num_classes=5)
    assert fresh_keys(spec, five_classes) == {"head.weight", "head.bias", "patch_embed.proj.weight", "pos_embed"}

    model = random_vit(spec, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = BenchConfig(fit_steps=3, fit_samples=200, fit_batch_size=32, fit_lr=0.1)
    warm_up_head(model, fresh_keys(spec, family), load_dataset("digits"), config, seed=0, device="cpu")
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"head.weight", "head.bias", "patch_embed.proj.weight"}
    assert all(p.requires_grad for p in model.parameters())


def test_a_rerun_skips_finished_cells_and_more_seeds_only_add_cells(run):
    out, _ = run
    names = ("cells.jsonl", "sweep.jsonl", "fit.jsonl", "downstream.jsonl", "ancestry.safetensors", "learngenes/t2-s32-e1.safetensors")
    before = {name: (out / name).read_bytes() for name in names}
    again = bench(*TINY, "--out", out)
    assert again.exit_code == 0, again.output
    assert "0 cells run, 34 skipped" in again.output
    assert "training the ancestry" not in again.output and "sweep " not in again.output and "fit study" not in again.output
    assert all((out / name).read_bytes() == data for name, data in before.items())

    more = bench(*TINY, "--seeds", "2", "--methods", "random", "--downstream", "none", "--out", out)
    assert more.exit_code == 0, more.output
    assert "2 cells run, 2 skipped" in more.output
    lines = (out / "cells.jsonl").read_text().splitlines()
    assert len(lines) == 20 and (out / "cells.jsonl").read_text().startswith(before["cells.jsonl"].decode())


def one_size_family(out, **changes):
    """The bench in `out` rebuilt from its files for one size (1x64): (config, data, family, size)."""
    from waveinit.bench.config import BenchConfig
    from waveinit.bench.family import make_family
    from waveinit.bench.runner import bench_sizes
    from waveinit.io.datasets import load_dataset

    settings = json.loads((out / "bench.json").read_text())["settings"]
    config = BenchConfig(**{**settings, "lrs": tuple(settings["lrs"]), "capacity": tuple(map(tuple, settings["capacity"])),
                            "depths": (1,), "widths": (64,), "extra_sizes": (), **changes})
    data = load_dataset("digits")
    family = make_family(config, data, out, None, None, 10**9, True, "cpu", log=lambda _: None)
    (size,) = bench_sizes(config, family.ancestry.spec, family.learngene.side)
    return config, data, family, size


def test_a_cell_run_again_gives_the_same_numbers(run):
    # Determinism: rebuild the family from the files and rerun cells from scratch.
    from waveinit.bench.runner import run_cell

    out, _ = run
    saved = {json.loads(line)["key"]: json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()}
    config, data, family, size = one_size_family(out)
    for method in ("wave", "kd-per-size", "tleg", "mimetic"):
        record = saved[f"1x64/{method}/seed0"]
        again = run_cell(method, size, 0, record["lr"], family, data, config, "cpu")
        assert [(r["accuracy"], r["loss"]) for r in again["rows"]] == [(r["accuracy"], r["loss"]) for r in record["rows"]], method


def test_the_init_cache_gives_what_initialise_gives_and_fits_once(run):
    # The sweep's rates and seed 0's cell share one scaler fit: the cached start must be the
    # very model a fresh fit makes, with its cost, and training one copy must not touch it.
    import torch

    from waveinit.bench.methods import InitCache, initialise

    out, _ = run
    config, data, family, size = one_size_family(out)
    cache = InitCache()
    first = cache("wave", size, 0, family, data, config, "cpu", lr=1e-3)
    with torch.no_grad():
        for p in first.model.parameters():
            p.add_(1.0)  # as a sweep's training would
    again = cache("wave", size, 0, family, data, config, "cpu", lr=3e-3)  # another rate: the same fit
    fresh = initialise("wave", size, 0, family, data, config, "cpu")
    assert len(cache.entries) == 1 and again.model is not first.model
    for (key, a), b in zip(again.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert (again.compute, again.forward, again.teacher_forward, again.images) == (fresh.compute, fresh.forward, fresh.teacher_forward,
                                                                                  fresh.images)
    cache("random", size, 0, family, data, config, "cpu")
    assert len(cache.entries) == 1  # only the fitted methods are kept


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "random,magic"], "unknown method 'magic'"),
        (["--extra-sizes", "8by256"], "is not DEPTHxWIDTH"),
        (["--capacity", "8x64"], "is not TEMPLATESxSIDExEPOCHS"),
        (["--capacity", "8x16x2"], "no candidate of template side 32"),
        (["--lrs", "fast"], "'fast' is not a float"),
        (["--widths", "48"], "width 48 is not a multiple of the template side 32"),
        (["--ancestry", "missing.safetensors"], "no such file"),
        (["--downstream", "nowhere"], "unknown dataset 'nowhere'"),
        (["--preset", "tpu"], "unknown preset 'tpu'"),
        (["--epochs", "2"], "holds a bench made with other settings (epochs: 1 there, 2 now)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_training(run, args, message, tmp_path):
    out, _ = run
    target = out if "--epochs" in args else tmp_path / "new"
    args = [a for a in TINY if a != "--quick"] + ["--preset", "quick"] + args if "--preset" in args else [*TINY, *args]
    result = bench(*args, "--out", target)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "new" / "ancestry.safetensors").exists()


def test_a_resume_under_other_library_defaults_is_refused(run, tmp_path):
    # A run spans sessions while the project's defaults move: cells made under another spawn
    # rule (or distillation loss, or training recipe) must not be mixed with new ones.
    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    header = json.loads((copy / "bench.json").read_text())
    assert header["defaults"]["fit"]["depth_rule"] == "interpolate"
    header["defaults"]["fit"]["depth_rule"] = "relative"
    (copy / "bench.json").write_text(json.dumps(header))
    before = (copy / "cells.jsonl").read_text()
    result = bench(*TINY, "--out", copy)
    assert result.exit_code == 2, result.output
    assert "other library defaults (fit.depth_rule: relative there, interpolate now)" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and (copy / "cells.jsonl").read_text() == before


@pytest.mark.slow
def test_the_quick_preset(tmp_path):
    # `wave bench --quick` as it ships (a few minutes on 2 CPU cores): every method, 3 sizes,
    # 3 seeds, and a downstream dataset.
    out = tmp_path / "quick"
    result = bench("--quick", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    summary = {(s["size"], s["method"]): s for s in report["summary"]}
    assert {size for size, _ in summary} == {"1x32", "1x64", "3x96"} and {m for _, m in summary} == set(DEFAULT_METHODS)
    assert summary[("3x96", "weight-selection")]["status"] == "n/a" and summary[("3x96", "tleg")]["status"] == "n/a"
    assert all(s["seeds"] == 3 for s in summary.values())
    family = report["family"]
    assert family["ancestry"]["test_accuracy"] > 0.8
    assert len(family["capacity"]) == 3 and sum(c["chosen"] for c in family["capacity"]) == 1
    far = report["downstream"]["fashion-mnist"]
    assert {(s["size"], s["method"]) for s in far["summary"]} == {(size, m) for size in ("1x32", "1x64", "3x96") for m in DOWNSTREAM}
    assert all(s["seeds"] == 3 for s in far["summary"])
    assert "| 3x96 |" in (out / "results.md").read_text()


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys\nfrom waveinit.cli.main import app\n"
            "try:\n    app(['bench', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert not {'torch', 'matplotlib'} & set(sys.modules)\nimport waveinit.selection\nassert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_the_report_lists_only_the_plots_it_drew():
    # a learngene given to the bench (--learngene) has no capacity study, so no capacity.png
    from waveinit.bench.markdown import _storage_section

    storage = {"sizes": {}, "learngene_bytes": 10, "dense_total_bytes": 40, "learngene_and_scalers_bytes": 12, "ratio": 40 / 12}
    assert "capacity.png" not in "\n".join(_storage_section(storage, with_capacity=False))
    assert "`capacity.png`" in "\n".join(_storage_section(storage, with_capacity=True))


def test_the_time_section_counts_each_budget_run_once():
    # budgets: every row after the first is its own run from the same start (init 10 s + 5, + 12);
    # one run: the rows are its running total
    from waveinit.bench.config import BenchConfig
    from waveinit.bench.markdown import _time_section
    from waveinit.bench.report import cell_seconds, time_table

    rows = [{"seconds": 10.0}, {"seconds": 15.0}, {"seconds": 22.0}]
    assert cell_seconds({"rows": rows}, budgets=True) == 10 + 5 + 12
    assert cell_seconds({"rows": rows}, budgets=False) == 22
    assert cell_seconds({"rows": []}, budgets=True) == 0
    config = BenchConfig(budgets=(1, 2), scratch_budgets=None, scratch_epochs=2)
    family = {"ancestry": {"how": "given: a.safetensors", "seconds": 7200.0}, "tleg": {"how": "distilled by wave bench", "seconds": 3600.0}}
    records = [{"method": "wave", "rows": rows}, {"method": "scratch", "rows": rows}]
    seconds = time_table(config, family, records, [{"seconds": 36.0}], [])
    assert seconds["cells"] == {"wave": 27.0, "scratch": 22.0} and seconds["fit_study"] == 36.0
    text = _time_section(seconds)[-1]
    assert f"in all, with what this run made of the family but the ancestry, {(3600 + 27 + 22 + 36) / 3600:.2f} h" in text  # not the ancestry's 2 h
    assert "ancestry 2.00 h (given)" in text and "tleg 1.00 h (made by this run)" in text


def test_the_defaults_the_help_shows_are_the_presets_and_parse_back_to_them():
    # the help's defaults are written from the presets: fed back to their options, they give the preset's values
    from waveinit.bench.config import PRESETS
    from waveinit.cli.bench import _shown, defaults, parse_capacity, parse_list, parse_names, parse_sizes

    options = {"depths": lambda t: parse_list(t, int, "--depths"), "widths": lambda t: parse_list(t, int, "--widths"),
               "lrs": lambda t: parse_list(t, float, "--lrs"), "budgets": lambda t: parse_list(t, int, "--budgets"),
               "scratch_budgets": lambda t: parse_list(t, int, "--scratch-budgets"),
               "fit_study_steps": lambda t: parse_list(t, int, "--fit-study"), "extra_sizes": parse_sizes,
               "capacity": parse_capacity, "downstream": parse_names, "seeds": int, "fit_steps": int, "data": str}
    for name in ("cpu", "quick"):
        for field, parse in options.items():
            value = getattr(PRESETS[name], field)
            if value is not None:
                assert parse(_shown(value, "none")) == value, (name, field)
    assert defaults("depths") == "default: 2,4,6; --quick: 1"  # the CPU preset is protocol v3's grid
    assert defaults("batch_size") == "default: 64"  # the same in both: said once


# ----------------------------------------------------------------------------- the arithmetic, on hand-made records

N_TRAIN = 1000  # training images of the hand-made bench
FIT = 320  # wave's scaler fit: 5 steps of 64 images
ANCESTRY_SPEC = {"depth": 2, "width": 64, "heads": 1, "patch_size": 2, "image_size": 8, "channels": 1, "num_classes": 10}
# (size, method) -> per seed, accuracy after epoch 0, 1, ... (scratch: 3 epochs, the others 1)
ACCURACIES = {
    ("1x32", "random"): ([0.10, 0.60], [0.12, 0.70]),
    ("1x32", "nearest-kron"): ([0.30, 0.50], [0.30, 0.50]),
    ("1x32", "wave"): ([0.50, 0.80], [0.54, 0.84]),
    ("1x32", "scratch"): ([0.10, 0.60, 0.75, 0.83], [0.12, 0.70, 0.81, 0.85]),
    ("2x64", "random"): ([0.10, 0.50], [0.10, 0.60]),
    ("2x64", "wave"): ([0.40, 0.90], [0.44, 0.92]),
    ("2x64", "scratch"): ([0.10, 0.50, 0.70, 0.80], [0.10, 0.60, 0.72, 0.86]),
}


PER_IMAGE = {"1x32": 10, "2x64": 40}  # training FLOPs per image of each hand-made size
TEACHER = 7  # the ancestry's forward FLOPs per image: wave's fit runs it on every fit image


def hand_record(size, method, seed, accuracies):
    depth, width = map(int, size.split("x"))
    init = FIT if method in ("wave", "nearest-kron") else 0
    teacher = FIT * TEACHER if method == "wave" else 0
    rows = [{"epoch": e, "accuracy": a, "loss": 2.0 - a, "train_loss": 2.1 - a, "seconds": 0.5 * e,
             "compute": init + e * N_TRAIN, "flops": (init + e * N_TRAIN) * PER_IMAGE[size] + teacher, "images": N_TRAIN if e else 0}
            for e, a in enumerate(accuracies)]
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
        "ancestry": {"spec": ANCESTRY_SPEC, "compute": ancestry_compute, "bytes": 420_000,
                     "flops": ancestry_compute * 50 if ancestry_compute else None},
        "learngene": {"side": 32, "templates": {**{name: 2 for name in ROLE_NAMES}, "attn.qkv.weight": 3},
                      "template_params": 12_345, "compute": learngene_compute, "bytes": 50_000, "flops": learngene_compute * 50 + 1000 * TEACHER},
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
    long = summary[("1x32", "scratch")]
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


def test_scratch_compute_to_reach_interpolates_between_scored_epochs():
    from waveinit.bench.report import scratch_compute_to_reach

    s = {"compute": [0, 1000, 2000, 3000], "mean": [0.1, 0.5, 0.5, 0.9]}
    assert scratch_compute_to_reach(s, 0.05) == 0.0 and scratch_compute_to_reach(s, 0.1) == 0.0  # its initial accuracy
    assert scratch_compute_to_reach(s, 0.3) == pytest.approx(500)  # halfway from 0.1 to 0.5
    assert scratch_compute_to_reach(s, 0.5) == pytest.approx(1000)  # the first epoch at the target, not the flat stretch after
    assert scratch_compute_to_reach(s, 0.7) == pytest.approx(2500)
    assert scratch_compute_to_reach(s, 0.9) == pytest.approx(3000)
    assert scratch_compute_to_reach(s, 0.91) is None  # beyond its last epoch
    # a dip is passed over: the first segment that reaches the target counts
    assert scratch_compute_to_reach({"compute": [0, 10, 20], "mean": [0.1, 0.4, 0.3]}, 0.35) == pytest.approx(10 * 0.25 / 0.3)
    # the short run (random init annealed over 1000 passes) lifts the envelope where it beats the long run
    assert scratch_compute_to_reach(s, 0.6, short=(1000, 0.6)) == pytest.approx(1000)
    # 0.5 at 2000 is below the envelope, which stays at 0.6 until scratch passes it
    assert scratch_compute_to_reach(s, 0.7, short=(1000, 0.6)) == pytest.approx(2000 + 1000 * (0.7 - 0.6) / (0.9 - 0.6))
    assert scratch_compute_to_reach(s, 0.3, short=(1000, 0.2)) == pytest.approx(500)  # a weaker short run changes nothing


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 0.2), min_size=2, max_size=5), st.lists(st.floats(1.1, 4.0), min_size=5, max_size=5),
       st.floats(0.0, 1.0))
def test_scratch_compute_to_reach_against_numpy_interp(gains, factors, where):
    # a rising scratch curve at 0 and then growing compute: linear reading = np.interp in compute,
    # log reading = np.interp in log-compute (past the first segment, which has no logarithm at 0)
    from waveinit.bench.report import scratch_compute_to_reach

    compute = np.concatenate([[0.0], 100 * np.cumprod(factors[: len(gains)])])
    accuracy = 0.1 + np.concatenate([[0.0], np.cumsum(gains)])
    s = {"compute": compute.tolist(), "mean": accuracy.tolist()}
    target = accuracy[0] + where * (accuracy[-1] - accuracy[0])
    assert scratch_compute_to_reach(s, target) == pytest.approx(np.interp(target, accuracy, compute), rel=1e-9, abs=1e-9)
    log = scratch_compute_to_reach(s, target, scale="log")
    if target <= accuracy[1]:
        assert log == pytest.approx(np.interp(target, accuracy, compute), rel=1e-9, abs=1e-9)
    else:
        assert log == pytest.approx(np.exp(np.interp(target, accuracy[1:], np.log(compute[1:]))), rel=1e-9)
        assert log <= scratch_compute_to_reach(s, target) * (1 + 1e-12)  # log-compute never needs more


def test_compute_table_against_numbers_worked_by_hand():
    from waveinit.bench.report import compute_table, summarise

    summary = summarise(hand_records())
    methods = ["random", "weight-selection", "nearest-kron", "wave", "scratch"]
    table = compute_table(summary, ["1x32", "2x64"], methods, hand_family(), epochs=1)
    assert table["ancestry_compute"] == 6000 and table["learngene_compute"] == 2000

    small = table["sizes"]["1x32"]
    assert set(small) == {"random", "nearest-kron", "wave"}  # scratch is the yardstick; absent methods left out
    # scratch's means 0.11, 0.65, 0.78, 0.84 at 0, 1000, 2000, 3000 image passes
    assert small["random"]["final"] == pytest.approx(0.65) and small["random"]["scratch_equivalent"] == pytest.approx(1000)
    assert small["nearest-kron"]["scratch_equivalent"] == pytest.approx(1000 * (0.50 - 0.11) / (0.65 - 0.11))
    wave = small["wave"]
    assert wave["final"] == pytest.approx(0.82) and wave["compute"] == FIT + 1000  # fit + one epoch
    assert wave["scratch_equivalent"] == pytest.approx(2000 + 1000 * (0.82 - 0.78) / (0.84 - 0.78)) and wave["scratch_max"] == 3000

    big = table["sizes"]["2x64"]
    assert set(big) == {"random", "wave"}  # weight selection is n/a there
    # scratch's means 0.1, 0.55, 0.71, 0.83 never reach 0.91: only a lower bound
    assert big["wave"]["final"] == pytest.approx(0.91) and big["wave"]["scratch_equivalent"] is None

    total = table["totals"]["wave"]
    scratch = small["wave"]["scratch_equivalent"] + 3000  # 2x64 counts scratch's whole run
    assert total["scratch"] == pytest.approx(scratch) and total["scratch_lower_bound"] is True and total["sizes"] == 2
    assert total["method"] == 2 * (FIT + 1000) and total["charged"] == 2000  # the learngene's distillation, once
    assert total["saving"] == pytest.approx(scratch / (2 * (FIT + 1000) + 2000))
    assert total["saving_with_ancestry"] == pytest.approx(scratch / (2 * (FIT + 1000) + 8000))

    # in FLOPs: scratch's curve is its passes at 10 (1x32) or 40 (2x64) FLOPs each, so its FLOPs to
    # wave's accuracy are the passes times that; wave's own add the teacher's forward passes in its fit
    assert wave["flops"] == (FIT + 1000) * 10 + FIT * TEACHER
    assert wave["scratch_equivalent_flops"] == pytest.approx(10 * wave["scratch_equivalent"]) and wave["scratch_max_flops"] == 30_000
    assert small["random"]["flops"] == 10_000 and big["wave"]["scratch_equivalent_flops"] is None
    flops = 10 * wave["scratch_equivalent"] + 40 * 3000
    waves = (FIT + 1000) * 10 + (FIT + 1000) * 40 + 2 * FIT * TEACHER
    assert total["scratch_flops"] == pytest.approx(flops) and total["method_flops"] == waves
    assert total["saving_flops"] == pytest.approx(flops / (waves + 2000 * 50 + 1000 * TEACHER))
    assert total["saving_flops_with_ancestry"] == pytest.approx(flops / (waves + 2000 * 50 + 1000 * TEACHER + 6000 * 50))

    # read in log-compute, scratch reaches wave's 0.82 at 1x32 between 2000 (0.78) and 3000 (0.84)
    # passes at 2000 * 1.5 ** (2/3); a curve through 0 is read linearly on its first segment
    assert wave["scratch_equivalent_log"] == pytest.approx(2000 * 1.5 ** ((0.82 - 0.78) / (0.84 - 0.78)))
    assert small["nearest-kron"]["scratch_equivalent_log"] == pytest.approx(small["nearest-kron"]["scratch_equivalent"])
    assert total["scratch_log"] == pytest.approx(wave["scratch_equivalent_log"] + 3000)
    assert total["saving_flops_log"] == pytest.approx((10 * wave["scratch_equivalent_log"] + 40 * 3000) / (waves + 2000 * 50 + 1000 * TEACHER))

    # random is charged nothing, not even the ancestry, which it never reads; nearest-kron the ancestry only
    rnd, nk = table["totals"]["random"], table["totals"]["nearest-kron"]
    assert rnd["sizes"] == 2 and rnd["charged"] == 0 and rnd["saving"] == rnd["saving_with_ancestry"]
    assert rnd["scratch"] == pytest.approx(1000 + big["random"]["scratch_equivalent"]) and rnd["saving"] == pytest.approx(rnd["scratch"] / 2000)
    assert nk["sizes"] == 1 and nk["charged"] == 0 and nk["saving_with_ancestry"] == pytest.approx(nk["scratch"] / (nk["method"] + 6000))

    # a given ancestry has no compute: the saving with it is not reported
    unknown = compute_table(summary, ["1x32", "2x64"], methods, hand_family(ancestry_compute=None), epochs=1)["totals"]["wave"]
    assert "saving_with_ancestry" not in unknown and unknown["saving"] == pytest.approx(total["saving"])
    # without scratch there is nothing to measure against, and no total
    no_scratch = compute_table({k: v for k, v in summary.items() if k[1] != "scratch"}, ["1x32"], ["random", "wave"], hand_family(), epochs=1)
    assert no_scratch["sizes"]["1x32"]["wave"]["scratch_equivalent"] is None and no_scratch["totals"] == {}


def test_each_method_total_is_charged_the_family_file_it_spawns_from():
    from waveinit.bench.report import method_total

    def entry(own, reach, longest=5000):
        return {"compute": own, "scratch_max": longest, "scratch_equivalent": reach, "scratch_equivalent_log": reach and reach / 2,
                "flops": 10 * own, "scratch_max_flops": 10 * longest, "scratch_equivalent_flops": reach and 10 * reach,
                "scratch_equivalent_flops_log": reach and 5 * reach}

    family = {"ancestry": {"compute": 9000, "flops": 90_000}, "learngene": {"compute": 2000, "flops": 20_000},
              "tleg": {"compute": 3000, "flops": 30_000}}
    entries = [entry(1000, 4000), entry(1000, None)]  # the second size: scratch never got there
    tleg = method_total(entries, "tleg", family)
    assert tleg["charged"] == 3000 and tleg["charged_flops"] == 30_000 and tleg["scratch_lower_bound"] is True
    assert tleg["scratch"] == 4000 + 5000 and tleg["scratch_log"] == 2000 + 5000  # the longest run where never reached
    assert tleg["saving"] == pytest.approx(9000 / (2000 + 3000)) and tleg["saving_log"] == pytest.approx(7000 / 5000)
    assert tleg["saving_flops_with_ancestry"] == pytest.approx(90_000 / (20_000 + 30_000 + 90_000))
    assert method_total(entries, "wave", family)["charged"] == 2000 == method_total(entries, "wave-nofit", family)["charged"]
    mimetic = method_total(entries, "mimetic", family)
    assert mimetic["charged"] == 0 and mimetic["saving_with_ancestry"] == mimetic["saving"] == pytest.approx(9000 / 2000)
    # a charge of unknown cost leaves the saving out rather than report it as free
    unknown = method_total(entries, "tleg", {**family, "tleg": {"compute": None, "flops": None}})
    assert "saving" not in unknown and "saving_flops" not in unknown and unknown["scratch"] == 9000


def test_the_learngene_is_chosen_by_the_written_rule():
    from waveinit.bench.config import BenchConfig
    from waveinit.bench.family import choose_learngene

    config = BenchConfig(side=64, capacity_tolerance=0.01, capacity_bytes_fraction=0.05)

    def cand(templates, side, epochs, nbytes, gap):
        return {"templates": templates, "side": side, "epochs": epochs, "bytes": nbytes, "fraction_of_family": nbytes / 10_000,
                "gap": gap, "score": 0.9 - gap}

    rows = [cand(4, 64, 3, 200, 0.03), cand(8, 64, 3, 400, 0.008), cand(8, 64, 6, 400, 0.005), cand(16, 64, 3, 450, 0.001),
            cand(16, 32, 3, 100, 0.0), cand(32, 64, 3, 900, 0.0)]
    # within 1 point and at most 1/20 of 10,000 bytes: 8x64 (3 and 6 epochs) and 16x64; the fewest bytes, then epochs
    assert choose_learngene(rows, config) is rows[1]
    # none within the tolerance: the most accurate of the small enough ones (32x64 is too big, 16x32 another side)
    far = [cand(4, 64, 3, 200, 0.05), cand(8, 64, 3, 400, 0.02), cand(32, 64, 3, 900, 0.0), cand(16, 32, 3, 100, 0.0)]
    assert choose_learngene(far, config) is far[1]
    # none small enough: the smallest of the side
    big = [cand(32, 64, 3, 900, 0.0), cand(64, 64, 3, 1800, 0.0)]
    assert choose_learngene(big, config) is big[0]


def test_downstream_gains_are_means_over_sizes_of_seed_means():
    from waveinit.bench.report import downstream_table

    def rec(size, method, seed, final):
        r = hand_record(size, method, seed, [0.1, final])
        return {**r, "data": "other"}

    records = [rec("1x32", "random", 0, 0.5), rec("1x32", "random", 1, 0.6), rec("1x32", "wave", 0, 0.7), rec("1x32", "wave", 1, 0.8),
               rec("2x64", "random", 0, 0.4), rec("2x64", "wave", 0, 0.5), rec("2x64", "weight-selection", 0, 0.6),
               {**hand_records()[-1], "data": "other", "size": "1x32"}]  # weight selection n/a at 1x32
    table = downstream_table(records, ["random", "weight-selection", "wave"])["other"]
    assert table["sizes"] == ["1x32", "2x64"] and table["shared_sizes"] == ["2x64"]  # every method applies at 2x64 only
    assert table["gains"] == {
        "wave": {"mean_gain": pytest.approx(((0.75 - 0.55) + (0.5 - 0.4)) / 2), "sizes": 2, "mean_gain_shared": pytest.approx(0.1)},
        "weight-selection": {"mean_gain": pytest.approx(0.2), "sizes": 1, "mean_gain_shared": pytest.approx(0.2)},
    }


def test_downstream_gains_and_savings_are_read_after_each_budget():
    from waveinit.bench.report import downstream_table

    def rec(method, seed, accuracies):
        return {**hand_record("1x32", method, seed, accuracies), "data": "other"}

    # budgets 1 and 2 (the records' epochs 0, 1, 2); wave leads by 0.3 after one epoch and 0.1 after two
    records = [rec("random", s, [0.1, 0.4, 0.7]) for s in (0, 1)] + [rec("wave", s, [0.5, 0.7, 0.8]) for s in (0, 1)]
    records += [rec("scratch", s, [0.1, 0.4, 0.7, 0.75, 0.8]) for s in (0, 1)]
    table = downstream_table(records, ["random", "wave", "scratch"], epochs=1, budgets=(1, 2))["other"]
    assert table["gains"]["wave"]["mean_gain"] == pytest.approx(0.3)  # after the headline budget, not the last one
    assert table["per_budget"][2]["gains"]["wave"]["mean_gain"] == pytest.approx(0.1)
    assert table["per_budget"][1]["compute"]["sizes"]["1x32"]["wave"]["scratch_equivalent"] == pytest.approx(2000)
    assert table["per_budget"][2]["compute"]["sizes"]["1x32"]["wave"]["scratch_equivalent"] == pytest.approx(4000)

    from waveinit.bench.config import BenchConfig
    from waveinit.bench.markdown import _downstream_section

    markdown = "\n".join(_downstream_section(BenchConfig(budgets=(1, 2), scratch_budgets=(1, 2, 3, 4)), {"other": table}))
    row = "| 1x32 | 10.0 ± 0.0 -> 40.0 ± 0.0 / 70.0 ± 0.0 | 50.0 ± 0.0 -> 70.0 ± 0.0 / 80.0 ± 0.0 | 40.0 ± 0.0 / 70.0 ± 0.0 / 75.0 ± 0.0 / 80.0 ± 0.0 |"
    assert row in markdown  # random, wave: after initialisation -> each budget; scratch: each of its budgets
    assert "after 2 epoch(s) (points, mean over the sizes each applies to): wave +10.0 (1 sizes)" in markdown
    assert "### other: scratch compute to reach each method's accuracy after 2 epoch(s)" in markdown


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


def test_family_validation_is_held_out_of_the_family_the_descendants_and_the_sweeps():
    import dataclasses

    import numpy as np

    from waveinit.bench.config import BenchConfig
    from waveinit.bench.runner import bench_data, validation_split
    from waveinit.io.datasets import load_dataset, split_validation

    config = BenchConfig(data="digits", subset=500, family_validation=0.25)
    full, data, held_out = bench_data(config)
    everything = load_dataset("digits")
    train_part, val_part = split_validation(everything, 0.25, seed=0)
    np.testing.assert_array_equal(held_out.test_images, val_part.test_images)  # protocol v3's split: split_validation, seed 0
    np.testing.assert_array_equal(full.train_images, train_part.train_images)
    np.testing.assert_array_equal(full.test_images, everything.test_images)  # the real test set kept for the final tables
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert not rows(held_out.test_images) & rows(full.train_images) and len(data.train_labels) == 500
    assert rows(data.train_images) <= rows(full.train_images)
    trains_on, scored_on = validation_split(config, data, held_out)
    assert trains_on is data and rows(scored_on.test_images) == rows(held_out.test_images)
    np.testing.assert_array_equal(scored_on.train_images, data.train_images)
    legacy = dataclasses.replace(config, family_validation=None)
    old_full, old_data, none = bench_data(legacy)
    assert none is None and len(old_full.train_labels) == len(everything.train_labels)
    with pytest.raises(Exception, match="family validation must be a fraction"):
        BenchConfig(family_validation=1.5).check()


def test_sweep_every_size_trains_each_method_at_its_own_sizes_rate(tmp_path):
    out = tmp_path / "every"
    result = bench(*TINY, "--methods", "random,wave,scratch", "--downstream", "none", "--sweep-every-size", "--out", out)
    assert result.exit_code == 0, result.output
    sweeps = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert {(r["size"], r["method"]) for r in sweeps} == {(s, m) for s in ("1x64", "3x32") for m in ("random", "wave")}
    best = {}
    for r in sweeps:
        key = (r["size"], r["method"])
        if key not in best or (r["val_accuracy"], -r["val_loss"]) > (best[key]["val_accuracy"], -best[key]["val_loss"]):
            best[key] = r
    for cell in (json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()):
        method = "random" if cell["method"] == "scratch" else cell["method"]
        assert cell["lr"] == best[(cell["size"], method)]["lr"], cell["key"]
    report = json.loads((out / "results.json").read_text())
    assert set(report["learning_rates_per_size"]) == {"1x64", "3x32"}
    assert "### The rate of each method at each size" in (out / "results.md").read_text()


def test_budgets_are_separate_runs_each_annealed_to_its_end(run):
    import dataclasses

    from waveinit.bench.runner import run_cell
    from waveinit.configs import TrainConfig
    from waveinit.tasks import random_vit
    from waveinit.training.engine import train
    from waveinit.training.evaluation import evaluate

    out, _ = run
    config, data, family, size = one_size_family(out, scratch_epochs=2, scratch_budgets=(1, 2))
    record = run_cell("scratch", size, 0, 3e-3, family, data, config, "cpu")
    assert [r["epoch"] for r in record["rows"]] == [0, 1, 2]
    for row in record["rows"][1:]:  # each budget: random init trained that long on its own schedule
        model = random_vit(size, 0)
        train(model, data.train_images, data.train_labels, TrainConfig(epochs=row["epoch"], batch_size=config.batch_size, lr=3e-3, seed=0),
              device="cpu")
        assert evaluate(model, data.test_images, data.test_labels, 256, "cpu")["accuracy"] == row["accuracy"]
        assert row["compute"] == row["epoch"] * len(data.train_labels)
    one_run = run_cell("scratch", size, 0, 3e-3, family, data, dataclasses.replace(config, scratch_budgets=None), "cpu")
    assert one_run["rows"][2]["accuracy"] == record["rows"][2]["accuracy"]  # the longest budget is the one run
    with pytest.raises(Exception, match=r"must be positive and include epochs \(1\)"):
        dataclasses.replace(config, budgets=(2, 4)).check()


def test_the_ancestry_recipe_trains_every_method_as_the_ancestry_was(run):
    # --recipe ancestry: scratch is random init trained with the ancestry's regularisation (no
    # flips on digits), and kd-per-size's teacher then runs on every erased batch, counted per epoch.
    from waveinit.bench.config import BenchConfig
    from waveinit.bench.runner import run_cell
    from waveinit.configs import TrainConfig
    from waveinit.flops import forward_flops
    from waveinit.tasks import random_vit
    from waveinit.training.engine import train
    from waveinit.training.evaluation import evaluate
    from waveinit.training.objectives import smoothed

    out, _ = run
    config, data, family, size = one_size_family(out, recipe="ancestry")
    assert config.ancestry_augment is False  # digits: a flipped digit is another symbol
    record = run_cell("scratch", size, 0, 3e-3, family, data, config, "cpu")
    model = random_vit(size, 0)
    recipe = TrainConfig(epochs=config.scratch_epochs, batch_size=config.batch_size, lr=3e-3, seed=0, reprob=0.25, smoothing=0.1, drop_path=0.1)
    train(model, data.train_images, data.train_labels, recipe, loss_fn=smoothed(0.1), device="cpu")
    assert evaluate(model, data.test_images, data.test_labels, 256, "cpu")["accuracy"] == record["rows"][-1]["accuracy"]
    plain = json.loads(next(line for line in (out / "cells.jsonl").read_text().splitlines() if '"1x64/scratch/seed0"' in line))
    assert [r["accuracy"] for r in plain["rows"]] != [r["accuracy"] for r in record["rows"]]

    kd = run_cell("kd-per-size", size, 0, 3e-3, family, data, config, "cpu")
    n = len(data.train_labels)
    assert [row.get("teacher_forward", 0) for row in kd["rows"]] == [row["epoch"] * n for row in kd["rows"]]
    assert kd["rows"][-1]["flops"] == kd["init_flops"] + n * kd["train_flops_per_image"] + n * forward_flops(family.ancestry.spec)
    with pytest.raises(Exception, match="unknown training recipe 'heavy'"):
        BenchConfig(recipe="heavy").check()


def test_with_a_family_validation_split_the_capacity_study_chooses_on_it(run, tmp_path):
    import dataclasses
    import shutil

    from waveinit.bench.config import BenchConfig
    from waveinit.bench.family import make_family
    from waveinit.io.datasets import load_dataset, split_validation

    out, _ = run
    shutil.copytree(out / "learngenes", tmp_path / "learngenes")
    shutil.copyfile(out / "ancestry.safetensors", tmp_path / "ancestry.safetensors")
    settings = json.loads((out / "bench.json").read_text())["settings"]
    config = BenchConfig(**{**settings, "lrs": tuple(settings["lrs"]), "capacity": tuple(map(tuple, settings["capacity"]))})
    data = load_dataset("digits")
    # the held-out images are the test set here, so the auxiliary's accuracy on them must be what distill recorded on it
    _, held = split_validation(data, 0.25, seed=0)
    held = dataclasses.replace(held, test_images=data.test_images, test_labels=data.test_labels)
    family = make_family(config, data, tmp_path, None, None, 10**9, False, "cpu", log=lambda _: None, held_out=held)
    (row,) = family.record["capacity"]
    assert row["chosen_on"] == "val_accuracy" and row["chosen"]
    assert row["score"] == row["val_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-9)
    assert row["gap"] == pytest.approx(family.record["ancestry"]["val_accuracy"] - row["val_accuracy"])
    # the family's FLOPs: passes at the model's training cost, the teacher's logits once per image (cached)
    from waveinit.flops import forward_flops, train_flops

    gene, ancestry = family.record["learngene"], family.record["ancestry"]
    assert gene["teacher_forward"] == gene["train_images"] == len(data.train_labels)
    assert gene["flops"] == gene["compute"] * train_flops(family.learngene.spec) + gene["teacher_forward"] * forward_flops(family.ancestry.spec)
    assert ancestry["flops"] == ancestry["compute"] * train_flops(family.ancestry.spec) and ancestry["compute"] > 0
    plain = make_family(config, data, tmp_path, None, None, 10**9, False, "cpu", log=lambda _: None)
    assert plain.record["capacity"][0]["chosen_on"] == "test_accuracy" and plain.record["ancestry"]["val_accuracy"] is None


def test_budgets_give_curves_for_every_method_and_flop_savings_per_budget(tmp_path):
    out = tmp_path / "budgets"
    result = bench(*TINY, "--methods", "random,wave,scratch", "--downstream", "none", "--budgets", "1,2", "--scratch-budgets", "1,2",
                   "--out", out)
    assert result.exit_code == 0, result.output
    cells = {r["key"]: r for r in (json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines())}
    assert [row["epoch"] for row in cells["1x64/wave/seed0"]["rows"]] == [0, 1, 2]
    report = json.loads((out / "results.json").read_text())
    assert set(report["compute_per_budget"]) == {"1", "2"}
    for budget in (1, 2):
        wave = report["compute_per_budget"][str(budget)]["sizes"]["1x64"]["wave"]
        row = cells["1x64/wave/seed0"]["rows"][budget]
        assert wave["flops"] == row["flops"] and wave["compute"] == row["compute"] and wave["final"] == row["accuracy"]
        scratch = [r["flops"] for r in cells["1x64/scratch/seed0"]["rows"]]
        assert wave["scratch_max_flops"] == scratch[-1]
        assert wave["scratch_equivalent_flops"] is None or 0 <= wave["scratch_equivalent_flops"] <= scratch[-1]
    markdown = (out / "results.md").read_text()
    assert "## Test accuracy (%) after each budget: 1 / 2 epoch(s) (scratch: 1 / 2)" in markdown
    assert "## FLOP savings after 1 / 2 epoch(s)" in markdown
    assert (out / "savings_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_v3_presets_hold_protocol_v3():
    # docs/bench/protocol-v3.md, "wave bench v3": the family's split is the one the committed
    # ancestry and learngenes were made on, the fit is `wave spawn`'s, every budget has its run
    from pathlib import Path

    from waveinit.bench.config import PRESETS
    from waveinit.configs import SpawnConfig

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        import make_family
    finally:
        sys.path.remove(str(benchmarks))
    spawn = SpawnConfig()
    assert PRESETS["cpu"] is PRESETS["v3"] and PRESETS["gpu"] is PRESETS["v3-gpu"]  # the default bench is protocol v3
    for name in ("v3", "v3-gpu"):
        p = PRESETS[name]
        p.check()
        assert p.family_validation == make_family.VALIDATION and p.data == "fashion-mnist"
        assert (p.ancestry_depth, p.ancestry_width) == (make_family.ANCESTRY["depth"], make_family.ANCESTRY["width"])
        assert (p.fit_steps, p.fit_lr, p.fit_samples, p.fit_batch) == (spawn.fit_steps, spawn.lr, spawn.fit_samples, spawn.batch_size)
        # downstream (digits, 1,438 training images), scratch's curve reaches past the fit alone (18 epochs of it)
        far = p.for_downstream()
        assert far.scratch_epochs * 1438 > 2 * p.fit_steps * p.fit_batch and max(far.scratch_budgets) == far.scratch_epochs
        assert p.recipe == "ancestry" and p.sweep_every_size and len(p.lrs) == 3 and p.seeds >= 2
        assert len(p.budgets) > 1 and len(p.scratch_budgets) > 1 and max(p.scratch_budgets) == p.scratch_epochs
        sizes = [(d, w) for d in p.depths for w in p.widths] + list(p.extra_sizes)
        assert min(d for d, _ in sizes) == 2 and max(d for d, _ in sizes) >= 6
        assert min(w for _, w in sizes) == 64 and any(w > p.ancestry_width for _, w in sizes)  # one beyond the ancestry


def test_processes_sharing_a_record_file_keep_each_others_records(tmp_path):
    # two processes (as `wave bench --methods ...` on each core of a machine) add records to the
    # same file at once; each addition rewrites the file, so without reading back under a lock
    # one would drop the other's records
    path = tmp_path / "cells.jsonl"
    RecordFile(path).add({"key": "before", "value": -1})
    script = ("import sys; from pathlib import Path; from waveinit.bench.records import RecordFile\n"
              "store = RecordFile(Path(sys.argv[1]))\n"
              "for i in range(150): store.add({'key': f'{sys.argv[2]}{i}', 'value': i})\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path), name]) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    records = RecordFile(path).records
    assert set(records) == {"before"} | {f"{name}{i}" for name in "ab" for i in range(150)}
    assert records["b149"] == {"key": "b149", "value": 149}


def test_the_v4_arms_are_v3_but_the_recipe_and_the_lower_rate():
    # docs/bench/protocol-v4.md, item 1: two arms, each v3's settings but its recipe; the
    # ancestry arm's fingerprint is v3's but lower_lrs, so it may start from v3's records.
    from waveinit.bench.config import PRESETS

    for cpu in ("", "gpu-"):
        plain, ancestry, v3 = PRESETS[f"v4-{cpu}plain"], PRESETS[f"v4-{cpu}ancestry"], PRESETS[f"v3{'-gpu' if cpu else ''}"]
        plain.check()
        assert (plain.recipe, ancestry.recipe) == ("plain", "ancestry") and plain.lower_lrs == (1e-4,) and plain.downstream == ()
        v4, old = ancestry.fingerprint(), v3.fingerprint()
        assert v4.pop("lower_lrs") == [1e-4] and v4 == old
    assert "lower_lrs" not in PRESETS["v3"].fingerprint()  # benches made before it resume


def test_a_lower_rate_is_tried_only_while_the_lowest_wins(tmp_path):
    from waveinit.bench.records import RecordFile
    from waveinit.bench.runner import sweep_learning_rates

    out = tmp_path / "low"
    assert bench(*TINY, "--methods", "random", "--downstream", "none", "--extra-sizes", "none", "--out", out).exit_code == 0
    config, data, family, size = one_size_family(out)
    store = RecordFile(out / "sweep.jsonl")
    # pretend the grid's lowest rate won for random and its highest for wave-nofit: only random goes lower
    for method, accuracies in (("random", {3e-3: 0.9, 1e-2: 0.1}), ("wave-nofit", {3e-3: 0.1, 1e-2: 0.9})):
        for lr, accuracy in accuracies.items():
            store.add({"key": f"{method}/1x64/lr{lr:g}", "method": method, "size": "1x64", "lr": lr, "epochs": 1,
                       "val_accuracy": accuracy, "val_loss": 1.0, "val_samples": 1})
    lowered = dataclasses.replace(config, lower_lrs=(1e-3, 3e-4))
    rates = sweep_learning_rates(lowered, family, data, size, store, "cpu", lambda _: None, ("random", "wave-nofit"))
    tried = {(r["method"], r["lr"]) for r in store.records.values()}
    assert ("random", 1e-3) in tried and ("wave-nofit", 1e-3) not in tried
    low = store["random/1x64/lr0.001"]
    assert (("random", 3e-4) in tried) == (low["val_accuracy"] > 0.9)  # 3e-4 only if 1e-3 beat the grid's 0.9
    assert rates["random"] in (3e-3, 1e-3, 3e-4) and rates["wave-nofit"] == 1e-2
    with pytest.raises(WaveError, match="must fall"):
        dataclasses.replace(config, lower_lrs=(3e-4, 1e-3)).check()


def test_a_finished_cell_at_another_rate_runs_again():
    from waveinit.bench.records import RecordFile
    from waveinit.bench.runner import finished

    store = RecordFile(Path("/nonexistent/cells.jsonl"))
    store.records = {"a": {"key": "a", "status": "ok", "lr": 3e-4}, "b": {"key": "b", "status": "n/a"}}
    assert finished(store, "a", 3e-4) and not finished(store, "a", 1e-4)
    assert finished(store, "b", 1e-4) and not finished(store, "c", 1e-4)


def test_where_the_loss_lies_methods_are_what_they_say(run):
    # ws-auxiliary: weight selection of the auxiliary itself (spawned data-free at its own size);
    # wave-first: wave's fit from the depth rule "first".
    import numpy as np

    from waveinit.backends.torch import dense_numpy
    from waveinit.bench.methods import initialise, not_applicable
    from waveinit.learngene import materialize
    from waveinit.selection import weight_selection
    from waveinit.spec import data_fields, resized

    out, _ = run
    config, data, family, size = one_size_family(out)
    gene = family.learngene
    auxiliary = materialize(gene.spec, gene.side, gene.templates, gene.scalers, gene.order)
    want = weight_selection(auxiliary, gene.spec, resized(size, **data_fields(gene.spec)))
    got = dense_numpy(initialise("ws-auxiliary", size, 0, family, data, config, "cpu").model.state_dict())
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    deeper = size.replace(depth=gene.spec.depth + 1)
    assert "exceeds" in not_applicable("ws-auxiliary", deeper, family)
    from waveinit.api import plan_spawn, run_spawn
    from waveinit.bench.methods import fit_config

    shallow = size.replace(depth=1)
    first = dense_numpy(initialise("wave-first", shallow, 0, family, data, config, "cpu").model.state_dict())
    fit = dataclasses.replace(fit_config(config, 0), depth_rule="first")
    want = run_spawn(plan_spawn(gene, 1, shallow.width, shallow.heads, data=data, patch=shallow.patch_size, config=fit,
                                teacher=family.ancestry, teacher_name=str(family.ancestry_path), fresh_head=False, device="cpu"))
    assert want.provenance["depth_rule"] == "first"
    for key, value in want.state_dict.items():
        np.testing.assert_array_equal(first[key], value, err_msg=key)


def test_the_recipe_is_chosen_per_method_and_size_on_validation_and_labels_the_rows(tmp_path):
    # protocol v4, item 1, on hand-made records: each arm's best rate, then the better arm (ties: plain)
    from waveinit.bench.arms import merge
    from waveinit.bench.records import RecordFile

    sweeps = {  # arm -> (method, size, lr, validation accuracy, loss)
        "plain": [("wave", "2x64", 1e-3, 0.80, 0.5), ("wave", "2x64", 3e-4, 0.70, 0.6), ("random", "2x64", 1e-3, 0.50, 1.0)],
        "ancestry": [("wave", "2x64", 1e-3, 0.75, 0.5), ("wave", "2x64", 3e-4, 0.85, 0.4), ("random", "2x64", 1e-3, 0.50, 1.0)],
    }
    for arm, runs in sweeps.items():
        store = RecordFile(tmp_path / arm / "sweep.jsonl")
        (tmp_path / arm).mkdir(exist_ok=True)
        for m, size, lr, acc, loss in runs:
            store.add({"key": f"{m}/{size}/lr{lr:g}", "method": m, "size": size, "lr": lr, "val_accuracy": acc, "val_loss": loss})
        cells = RecordFile(tmp_path / arm / "cells.jsonl")
        for m, lr in (("wave", 3e-4), ("wave-nofit", 1e-3), ("scratch", 1e-3), ("wave", 1e-3)):
            key = f"2x64/{m}/seed0" if lr == 3e-4 or m != "wave" else "2x64/wave/seed1"
            cells.add({"key": key, "size": "2x64", "depth": 2, "width": 64, "heads": 1, "params": 10, "method": m, "seed": int(key[-1]),
                       "data": "d", "status": "ok", "lr": lr, "init_compute": 0, "train_images": 10,
                       "rows": [{"epoch": e, "accuracy": 0.5, "loss": 1.0, "train_loss": None, "seconds": 1.0, "compute": 10 * e, "images": 10}
                                for e in (0, 1)]})
    report = merge(tmp_path)
    assert report["chosen"] == {"wave/2x64": "ancestry", "random/2x64": "plain", "scratch/2x64": "plain"}  # random ties: plain
    rows = read_csv(tmp_path / "results.csv")
    arms = {(r["method"], r["seed"], r["arm"], r["lr"]) for r in rows}
    # wave: only cells at each arm's chosen rate (3e-4 in ancestry, 1e-3 in plain); the chosen arm's rows are "main"
    assert arms == {("wave", "0", "main", "0.0003"), ("wave", "1", "plain", "0.001"), ("scratch", "0", "main", "0.001"),
                    ("scratch", "0", "ancestry", "0.001")}
    assert "| 2x64 | wave | 80.0 (0.001) | 85.0 (0.0003) | ancestry |" in (tmp_path / "results.md").read_text()
