"""What a run leaves and what bad weights or labels get: the per-epoch metrics file, `--json`
summaries, non-finite tensors refused on load, labels checked against the classes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from helpers import wave
from waveinit import WaveError
from waveinit.io.datasets import Dataset, load_dataset
from waveinit.io.metrics import COLUMNS, MetricsLog

TINY_TRAIN = ["train", "--depth", "1", "--width", "64", "--epochs", "2", "--subset", "300"]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ----------------------------------------------------------------------------- metrics and --json


@pytest.mark.slow
def test_train_writes_metrics_and_one_json_object(tmp_path):
    out = tmp_path / "m.safetensors"
    result = wave(*TINY_TRAIN, "--out", out, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert result.stdout.count("\n") == 1
    assert summary["command"] == "train" and summary["out"] == str(out) and summary["epochs"] == 2
    assert summary["metrics"] == str(tmp_path / "m.metrics.csv")
    with open(tmp_path / "m.metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["eval_top1"]) == pytest.approx(100 * summary["test_accuracy"])
    assert float(rows[-1]["eval_top1"]) <= float(rows[-1]["eval_top5"]) <= 100
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([h["train_loss"] for h in summary["history"]])


def test_distill_and_spawn_print_one_json_object(ancestry, tmp_path):
    gene = tmp_path / "lg.safetensors"
    distilled = wave("distill", "--teacher", ancestry, "--templates", "2", "--epochs", "1", "--subset", "300", "--out", gene, "--json",
                     cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr
    summary = json.loads(distilled.stdout)
    assert summary["command"] == "distill" and summary["bytes"] == gene.stat().st_size
    assert summary["template_params"] > 0 and 0 <= summary["test_accuracy"] <= 1
    assert (tmp_path / "lg.metrics.csv").is_file()

    out = tmp_path / "spawned.safetensors"
    spawned = wave("spawn", "--learngene", gene, "--depth", "2", "--width", "128", "--no-fit", "--out", out, "--json", cwd=tmp_path)
    assert spawned.returncode == 0, spawned.stderr
    summary = json.loads(spawned.stdout)
    assert summary["command"] == "spawn" and summary["out"] == str(out) and summary["init"] == "wave-nofit"
    assert summary["spec"]["depth"] == 2 and summary["spec"]["width"] == 128 and out.is_file()


def test_metrics_log_keeps_earlier_epochs_on_resume_and_never_repeats_one(tmp_path):
    path = tmp_path / "run.metrics.csv"
    record = lambda e: {"epoch": e, "train_loss": 1.0 / e, "lr": 1e-3, "images_per_second": 10.0, "seconds": 1.0,  # noqa: E731
                        "eval": {"accuracy": 0.5, "loss": 2.0}}
    log = MetricsLog(path, resume=False)
    for e in (1, 2, 3):
        log.add(record(e))
    resumed = MetricsLog(path, resume=True)  # an older checkpoint at epoch 1: epochs 2 and 3 are run again
    resumed.add(record(2))
    with open(path, newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    fresh = MetricsLog(path, resume=False)  # a run started over replaces the file
    fresh.add(record(1))
    assert path.read_text().count("\n") == 2


# ----------------------------------------------------------------------------- non-finite weights


def poisoned(source, target, key: str, value: float) -> str:
    """A copy of a safetensors file with one entry of tensor `key` set to `value`; returns the key."""
    from safetensors import safe_open

    with safe_open(str(source), framework="np") as f:
        metadata = f.metadata()
    tensors = load_file(source)
    tensors[key] = tensors[key].copy()
    tensors[key].reshape(-1)[0] = value
    save_file(tensors, target, metadata)
    return key


def test_a_learngene_holding_nan_is_refused_before_spawning(learngene_file, tmp_path):
    bad = tmp_path / "nan.safetensors"
    key = poisoned(learngene_file, bad, "templates.mlp.fc1.weight", np.nan)
    out = tmp_path / "out.safetensors"
    result = wave("spawn", "--learngene", bad, "--depth", "2", "--width", "64", "--no-fit", "--out", out, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert str(bad) in line and key in line and "NaN" in line
    assert not out.exists()


def test_a_model_holding_infinity_is_refused_by_eval_and_as_teacher(ancestry, tmp_path):
    bad = tmp_path / "inf.safetensors"
    key = poisoned(ancestry, bad, "blocks.0.attn.qkv.weight", np.inf)
    result = wave("eval", bad, cwd=tmp_path)
    assert result.returncode == 2 and key in one_line(result.stderr) and "infinity" in result.stderr
    out = tmp_path / "lg.safetensors"
    result = wave("distill", "--teacher", bad, "--epochs", "1", "--out", out, cwd=tmp_path)
    assert result.returncode == 2 and str(bad) in one_line(result.stderr) and key in result.stderr
    assert not out.exists() and not (tmp_path / "lg.safetensors.ckpt").exists()


class Stop(Exception):
    pass


def stop_after_epoch_1(out):
    """An interrupted `wave train` run's checkpoint at `out`.ckpt (a finished run deletes its own)."""
    from waveinit.configs import TrainConfig
    from waveinit.tasks import random_vit, spec_for, train_vit

    def stop(progress):
        if progress.event == "epoch":
            raise Stop

    data = load_dataset("digits", subset=300, seed=0)
    with pytest.raises(Stop):
        train_vit(random_vit(spec_for(data, 1, 64), 0), data, TrainConfig(epochs=2, batch_size=64), out=out, device="cpu", on_progress=stop)


@pytest.mark.slow
def test_a_checkpoint_holding_nan_is_refused_on_resume(tmp_path):
    out = tmp_path / "m.safetensors"
    ckpt = tmp_path / "m.safetensors.ckpt"
    stop_after_epoch_1(out)
    poisoned(ckpt, ckpt, "model.head.weight", np.nan)
    before = ckpt.read_bytes()
    again = wave(*TINY_TRAIN, "--out", out, "--resume", cwd=tmp_path)
    assert again.returncode == 2
    line = again.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {ckpt}: tensor model.head.weight holds NaN") and "drop --resume" in line
    assert ckpt.read_bytes() == before  # the checkpoint is left as it was


# ----------------------------------------------------------------------------- labels


def test_labels_outside_the_classes_are_refused():
    digits = load_dataset("digits")
    labels = digits.train_labels.copy()
    labels[5] = 10
    with pytest.raises(WaveError, match=r"train label 10 is outside \[0, 10\)"):
        Dataset("bad", digits.train_images, labels, digits.test_images, digits.test_labels, 10)
    labels[5] = -1
    with pytest.raises(WaveError, match=r"label -1 is outside"):
        Dataset("bad", digits.train_images, labels, digits.test_images, digits.test_labels, 10)
    with pytest.raises(WaveError, match="not integers"):
        Dataset("bad", digits.train_images, digits.train_labels.astype(float), digits.test_images, digits.test_labels, 10)


def test_an_idx_folder_with_a_label_beyond_fashion_mnists_classes_is_one_line(tmp_path):
    import gzip
    import shutil

    source = "/usr/share/datasets/fashion-mnist"
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(f"{source}/{name}", tmp_path / name)
    labels = bytearray(gzip.decompress(open(f"{source}/train-labels-idx1-ubyte.gz", "rb").read()))
    labels[8 + 3] = 12  # Fashion-MNIST has classes 0..9
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes(labels))
    result = wave("train", "--data", "fashion-mnist", "--data-dir", tmp_path, "--epochs", "1", "--out", tmp_path / "m.safetensors",
                  cwd=tmp_path)
    assert result.returncode == 2
    assert "label 12 is outside [0, 10)" in one_line(result.stderr)


def test_a_model_of_other_classes_is_refused_by_eval(ancestry, tmp_path):
    result = wave("eval", ancestry, "--data", "fashion-mnist", cwd=tmp_path)
    assert result.returncode == 2 and "use data that matches" in one_line(result.stderr)


# ----------------------------------------------------------------------------- the shipped learngene


def test_the_shipped_learngene_is_found_by_name_and_says_where_it_comes_from(tmp_path):
    from waveinit.io.files import learngene_path, load_learngene, shipped_learngenes

    assert "fashion-mnist" in shipped_learngenes()
    path = learngene_path("fashion-mnist")
    assert path.is_file() and path.stat().st_size < 1_000_000  # a few hundred kB
    gene = load_learngene("fashion-mnist")
    provenance = gene.provenance
    assert provenance["data"] == "fashion-mnist" and provenance["train_size"] == 60000
    assert 0.8 < provenance["test_accuracy"] <= 1 and 0.8 < provenance["teacher_test_accuracy"] <= 1
    assert provenance["teacher_spec"]["depth"] >= 1 and "ancestry" in provenance

    shown = wave("inspect", "fashion-mnist", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["kind"] == "learngene" and info["path"] == str(path) and info["provenance"] == provenance


@pytest.mark.slow
def test_spawning_from_the_shipped_learngene_needs_no_training(tmp_path):
    out = tmp_path / "vit.safetensors"
    result = wave("spawn", "--learngene", "fashion-mnist", "--depth", "6", "--width", "384", "--fit-steps", "5", "--fit-samples", "200",
                  "--out", out, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["spec"]["depth"] == 6 and summary["spec"]["width"] == 384 and summary["data"] == "fashion-mnist"
    assert summary["init"] == "wave" and 0.1 < summary["test_accuracy"] <= 1 and out.is_file()


def test_an_unknown_learngene_name_lists_the_shipped_ones(tmp_path):
    result = wave("spawn", "--learngene", "imagenet", "--depth", "2", "--width", "64", "--no-fit", cwd=tmp_path)
    assert result.returncode == 2
    assert "no learngene of that name comes with waveinit" in one_line(result.stderr) and "fashion-mnist" in result.stderr
