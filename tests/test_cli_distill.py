"""`wave train` and `wave distill` end to end on the real digits data: files, resumption after
SIGKILL, two processes under torch.distributed (gloo), and bad input."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import run_python, start_wave, wave
from waveinit import load_learngene, load_model
from waveinit.backends.torch import TemplatedViT
from waveinit.cli.main import app
from waveinit.io.datasets import load_dataset
from waveinit.io.files import read_checkpoint_header
from waveinit.training.evaluation import evaluate

runner = CliRunner()
SMALL_DISTILL = ["--depth", "2", "--width", "64", "--templates", "2", "--batch-size", "32", "--subset", "400"]


def test_train_writes_a_model_file_with_its_test_accuracy(ancestry):
    model = load_model(ancestry)
    assert (model.spec.depth, model.spec.width, model.spec.image_size, model.spec.num_classes) == (2, 64, 8, 10)
    assert model.provenance["data"] == "digits" and model.provenance["init"] == "random"
    assert model.provenance["test_accuracy"] > 0.5  # chance is 0.1


def test_distill_end_to_end(ancestry, learngene_file):
    learngene = load_learngene(learngene_file)
    assert learngene.spec == load_model(ancestry).spec  # the auxiliary model defaults to the teacher's shape
    assert set(learngene.counts.values()) == {2} and learngene.side == 64
    p = learngene.provenance
    assert p["data"] == "digits" and p["epochs"] == 6 and p["teacher"] == str(ancestry)
    assert p["teacher_spec"]["width"] == 64 and p["teacher_test_accuracy"] > 0.5
    # The reloaded learngene is the distilled model: it scores exactly what the file says.
    data = load_dataset("digits")
    again = evaluate(TemplatedViT.from_learngene(learngene), data.test_images, data.test_labels, 256, torch.device("cpu"))
    assert again["accuracy"] == pytest.approx(p["test_accuracy"], abs=1e-12)
    assert p["test_accuracy"] > 0.3


@pytest.mark.slow
def test_distill_with_no_arguments_trains_an_ancestry_first(tmp_path):
    result = wave("distill", "--epochs", "1", "--subset", "128", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "training a 6x192 ancestry" in result.stderr
    assert (tmp_path / "runs" / "ancestry.safetensors").is_file()
    assert load_learngene(tmp_path / "runs" / "learngene.safetensors").spec.width == 192


def _tensors(path):
    learngene = load_learngene(path)
    return {f"t.{k}": v for k, v in learngene.templates.items()} | {f"s.{k}": v for k, v in learngene.scalers.items()}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(ancestry, tmp_path):
    args = ["distill", "--teacher", ancestry, *SMALL_DISTILL, "--epochs", "2", "--checkpoint-every", "3"]
    whole = wave(*args, "--out", tmp_path / "whole.safetensors")
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed.safetensors"
    checkpoint = tmp_path / "killed.safetensors.ckpt"
    process = start_wave(*args, "--out", out, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps_per_epoch = 13  # 400 images, batch 32
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a checkpoint inside the second epoch
        if checkpoint.exists():
            header = read_checkpoint_header(checkpoint)
            if header["global_step"] > steps_per_epoch + 1:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    header = read_checkpoint_header(checkpoint)
    assert not out.exists(), "the run was killed before it finished"
    assert steps_per_epoch < header["global_step"] < 2 * steps_per_epoch, header

    resumed = wave(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stderr
    expected, actual = _tensors(tmp_path / "whole.safetensors"), _tensors(out)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["st", "ts"])
def test_two_processes_with_gloo_match_one_process(ancestry, tmp_path, order):
    args = ["distill", "--teacher", ancestry, *SMALL_DISTILL, "--epochs", "1", "--device", "cpu", "--kron-order", order]
    one = wave(*args, "--out", tmp_path / "one.safetensors")
    assert one.returncode == 0, one.stderr
    two = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "waveinit.cli", *args,
                     "--out", tmp_path / "two.safetensors")
    assert two.returncode == 0, two.stderr
    genes = [load_learngene(tmp_path / f"{n}.safetensors") for n in ("one", "two")]
    assert [g.provenance["processes"] for g in genes] == [1, 2]
    if order == "st":  # the same gradients, averaged over the ranks: every factor equal up to rounding
        expected, actual = _tensors(tmp_path / "one.safetensors"), _tensors(tmp_path / "two.safetensors")
        for key in expected:
            rel = np.linalg.norm(actual[key] - expected[key]) / np.linalg.norm(expected[key])
            assert rel < 1e-5, (key, rel)
    # Under kron(T, S) a template entry can span only the key bias, which attention ignores (a
    # shift of every key's logit for a query): its gradient is rounding noise, which AdamW turns
    # into steps of the rate's size, and its shared scalers carry the noise to the other roles
    # (1e-4 of their norm here). The factors then differ in that dead direction, so the check is
    # on what the learngene computes.
    data = load_dataset("digits")
    images = torch.from_numpy(data.test_images[:300]).float()
    with torch.no_grad():
        logits = [TemplatedViT.from_learngene(g).eval()(images) for g in genes]
    assert float((logits[1] - logits[0]).norm() / logits[0].norm()) < 1e-4
    assert torch.equal(logits[0].argmax(1), logits[1].argmax(1))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "96"], "width 96 is not a multiple of the template side 64"),
        (["--heads", "3"], "heads 3 does not divide width 64"),
        (["--depth", "0"], "depth must be at least 1"),
        (["--data", "nonsense"], "nonsense"),
        (["--data", "fashion-mnist", "--data-dir", "/nonexistent"], "apt-get install dataset-fashion-mnist"),
    ],
)
def test_bad_distill_input_is_one_line_and_exit_2(ancestry, tmp_path, args, message):
    out = tmp_path / "learngene.safetensors"
    result = wave("distill", "--teacher", ancestry, "--epochs", "1", "--out", out, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists() and not (tmp_path / "learngene.safetensors.ckpt").exists()


@pytest.mark.slow
def test_missing_or_wrong_kind_of_teacher(ancestry, tmp_path):
    result = wave("distill", "--teacher", tmp_path / "nothing.safetensors", "--out", tmp_path / "lg.safetensors")
    assert result.returncode == 2 and "no such file" in result.stderr and "Traceback" not in result.stderr
    learngene = tmp_path / "lg.safetensors"
    assert runner.invoke(app, ["distill", "--teacher", str(ancestry), *SMALL_DISTILL, "--epochs", "1", "--out", str(learngene)]).exit_code == 0
    result = wave("distill", "--teacher", learngene, "--out", tmp_path / "lg2.safetensors")
    assert result.returncode == 2 and "expected a model file" in result.stderr


@pytest.mark.slow
def test_distill_without_the_cache_matches_the_cached_run(ancestry, tmp_path):
    args = ["distill", "--teacher", ancestry, *SMALL_DISTILL, "--epochs", "1"]
    cached, direct = wave(*args, "--out", tmp_path / "cached.safetensors"), wave(*args, "--no-cache", "--out", tmp_path / "direct.safetensors")
    assert cached.returncode == 0 and direct.returncode == 0, direct.stderr
    expected, actual = _tensors(tmp_path / "cached.safetensors"), _tensors(tmp_path / "direct.safetensors")
    for key in expected:  # the same teacher logits, computed in other batches: equal up to rounding
        rel = np.linalg.norm(actual[key] - expected[key]) / np.linalg.norm(expected[key])
        assert rel < 1e-4, (key, rel)


def test_distillation_can_start_from_the_teachers_nearest_kronecker_sums(tmp_path):
    # init "nearest-kron": before any step, the auxiliary's weights are the teacher's nearest
    # Kronecker sums (learngene_from_weights); an auxiliary of another shape is refused.
    from waveinit import learngene_from_weights, materialize
    from waveinit.backends.torch import dense_numpy
    from waveinit.configs import DistillConfig, TrainConfig
    from waveinit.errors import WaveError
    from waveinit.tasks import distill, random_vit, spec_for

    data = load_dataset("digits", subset=128)
    teacher = random_vit(spec_for(data, 2, 64, patch=2), 0)
    settings = DistillConfig(templates=2, side=32, init="nearest-kron", order="st")  # nearest_kron's order
    config = TrainConfig(max_steps=1, batch_size=32, lr=1e-12, weight_decay=0.0)  # one step that moves nothing
    result = distill(teacher, data, teacher.spec, config, settings, out=tmp_path / "lg.safetensors", device="cpu")
    nearest = learngene_from_weights(dense_numpy(teacher.state_dict()), teacher.spec, 32, 2)
    got = materialize(teacher.spec, 32, result.learngene.templates, result.learngene.scalers)
    want = materialize(teacher.spec, 32, nearest.templates, nearest.scalers)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for name, t in result.learngene.templates.items():  # terms beyond a role's rank can learn: none is all zero
        assert np.asarray(t).reshape(len(t), -1).any(axis=1).all(), name
    with pytest.raises(WaveError, match="needs the teacher's shape"):
        distill(teacher, data, teacher.spec.replace(depth=1), config, settings, out=tmp_path / "other.safetensors", device="cpu")


def test_wave_distill_distils_through_thirds_of_the_auxiliary_by_default(ancestry, tmp_path):
    # protocol v4, item 3 (tests/test_ablations.py recomputes the choice): a 2x64 teacher's thirds
    # are 1x64 and 2x64; --sizes one keeps the auxiliary alone, and --templated matrices (dense
    # roles, one copy only) falls back to it, saying so.
    runs = {}
    for name, extra in (("thirds", []), ("one", ["--sizes", "one"]), ("matrices", ["--templated", "matrices"])):
        out = tmp_path / f"{name}.safetensors"
        result = wave("distill", "--teacher", ancestry, "--templates", "2", "--epochs", "1", "--subset", "128", "--out", out, "--json", *extra,
                      cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        runs[name] = (json.loads(result.stdout), load_learngene(out), result.stderr)
    summary, gene, _ = runs["thirds"]
    assert summary["sizes"] == ["2x64", "1x64"] and list(gene.sizes) == ["2x64", "1x64"]
    assert (gene.spec.depth, gene.spec.width) == (2, 64)  # the largest is the auxiliary, the teacher's shape
    assert runs["one"][0]["sizes"] == ["2x64"] and not runs["one"][1].auxiliaries
    assert runs["matrices"][0]["sizes"] == ["2x64"] and "distilling through 2x64 only" in runs["matrices"][2]
