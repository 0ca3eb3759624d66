"""The training engine, specified on real data (scikit-learn's 8x8 digits) with a small MLP.

What must hold: it learns; same seed -> bit-identical parameters; the schedule and the losses
are the formulas of their docstrings; a run interrupted (by an exception, or by SIGKILL in a
real process) and resumed ends bit-identical to an uninterrupted one; a resume with other
settings is refused; a non-finite loss stops the run and leaves the last good checkpoint; two
processes under torchrun compute what one process computes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import ENV, add_tensor, run_python

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

from waveinit import ViTSpec  # noqa: E402
from waveinit.backends.torch import TemplatedViT  # noqa: E402
from waveinit.configs import TrainConfig  # noqa: E402
from waveinit.errors import WaveError  # noqa: E402
from waveinit.io.datasets import load_dataset  # noqa: E402
from waveinit.io.files import read_checkpoint_header  # noqa: E402
from waveinit.io.storage import CHECKPOINT_FORMAT  # noqa: E402
from waveinit.training.distributed import distributed_context, resolve_device  # noqa: E402
from waveinit.training.engine import train  # noqa: E402
from waveinit.training.evaluation import evaluate, predict_logits  # noqa: E402
from waveinit.training.objectives import cross_entropy_loss, default_param_groups, distillation_loss, kd_loss, lr_at  # noqa: E402

# 1,438 train images: batch 64 gives 23 steps an epoch, the last one of 30 images.
CONFIG = TrainConfig(epochs=3, batch_size=64, lr=1e-2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def fit(digits, config=CONFIG, model=None, **kwargs):
    model = model if model is not None else mlp()
    result = train(model, digits.train_images, digits.train_labels, config, device="cpu", **kwargs)
    return model, result


# ----------------------------------------------------------------------------- learning

def test_training_learns_digits_and_reports_progress(digits):
    events = []
    model, result = fit(digits, TrainConfig(epochs=5, batch_size=64, lr=1e-2), on_progress=events.append,
                        eval_data=(digits.test_images, digits.test_labels))

    assert result.steps == 5 * 23 and result.resumed_from is None and len(result.history) == 5
    final = result.history[-1]["eval"]
    assert final["accuracy"] > 0.85 and final["samples"] == 359
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    # The epoch's eval is the model as returned.
    assert evaluate(model, digits.test_images, digits.test_labels, 100, "cpu") == pytest.approx(final)
    epoch_events = [p for p in events if p.event == "epoch"]
    assert [p.epoch for p in epoch_events] == [0, 1, 2, 3, 4]  # 0-based, like the steps of a loop
    assert [p.train_loss for p in epoch_events] == [h["train_loss"] for h in result.history]
    assert epoch_events[-1].global_step == epoch_events[-1].total_steps == 115
    assert all(p.images_per_second > 0 and p.seconds_left >= 0 for p in events)


def test_max_steps_spans_the_schedule_and_may_end_mid_epoch(digits):
    config = TrainConfig(epochs=100, batch_size=64, lr=1e-2, max_steps=30)
    _, result = fit(digits, config)
    assert result.steps == 30
    assert [h["epoch"] for h in result.history] == [1, 2]  # 23 steps, then 7
    assert result.history[-1]["lr"] == pytest.approx(config.lr * config.min_lr_ratio)


def test_predict_logits_and_evaluate_agree_with_the_model(digits):
    model = mlp()
    logits = predict_logits(model, digits.test_images, 50, "cpu")
    with torch.no_grad():
        expected = model(torch.from_numpy(digits.test_images))
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"
    torch.testing.assert_close(logits, expected)
    got = evaluate(model, digits.test_images, digits.test_labels, 50, "cpu")
    labels = torch.from_numpy(digits.test_labels)
    assert got["accuracy"] == (expected.argmax(1) == labels).double().mean().item()
    assert got["loss"] == pytest.approx(F.cross_entropy(expected, labels).item(), rel=1e-6)


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_bit_identical_parameters_other_seed_does_not(digits):
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-2, seed=3)
    a, result_a = fit(digits, config)
    b, result_b = fit(digits, config)
    assert_bit_identical(state(a), state(b))
    assert [h["train_loss"] for h in result_a.history] == [h["train_loss"] for h in result_b.history]
    c, _ = fit(digits, TrainConfig(epochs=2, batch_size=64, lr=1e-2, seed=4))
    assert not torch.equal(state(a)["1.weight"], state(c)["1.weight"])


def test_dropout_randomness_is_reproducible(digits):
    def dropout_mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.3), nn.GELU(), nn.Linear(32, 10))

    config = TrainConfig(epochs=1, batch_size=64, lr=1e-2)
    a, b = dropout_mlp(), dropout_mlp()
    fit(digits, config, model=a)
    torch.manual_seed(123)  # the caller's generator state must not matter
    fit(digits, config, model=b)
    assert_bit_identical(state(a), state(b))


# ----------------------------------------------------------------------------- schedule, groups, losses

def test_lr_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    config = TrainConfig(lr=2.0, warmup_fraction=0.1, min_lr_ratio=0.01)
    total, warmup = 101, 10
    lrs = [lr_at(s, total, config) for s in range(total)]
    assert lrs[0] == pytest.approx(2.0 / 11)  # step 0 already learns
    assert lrs[warmup - 1] == pytest.approx(2.0 * 10 / 11)
    assert lrs[warmup] == 2.0  # the peak
    assert lrs[55] == pytest.approx((2.0 + 0.02) / 2)  # half way down the cosine
    assert lrs[-1] == pytest.approx(0.02)  # the floor, at the last step
    assert all(x < y for x, y in zip(lrs[:warmup], lrs[1:warmup + 1]))
    assert all(x > y for x, y in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert lr_at(500, total, config) == pytest.approx(0.02)
    no_warmup = TrainConfig(lr=1.0, warmup_fraction=0.0, min_lr_ratio=0.0)
    assert lr_at(0, 10, no_warmup) == 1.0 and lr_at(9, 10, no_warmup) == 0.0


def test_default_param_groups_exempt_biases_norms_and_embeddings_from_decay():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
            self.fc = nn.Linear(8, 8)
            self.norm = nn.LayerNorm(8)
            self.frozen = nn.Linear(8, 8)
            self.frozen.requires_grad_(False)

    model = Tiny()
    decay, no_decay = default_param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {"fc.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {"cls_token", "pos_embed", "fc.bias", "norm.weight", "norm.bias"}


def test_kd_loss_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    student, teacher = rng.standard_normal((2, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    t, alpha = 2.5, 0.7

    def log_softmax(z):
        z = z.astype(np.float64)
        return z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)

    p_teacher = np.exp(log_softmax(teacher / t))
    kl = (p_teacher * (log_softmax(teacher / t) - log_softmax(student / t))).sum(1)
    ce = -log_softmax(student)[np.arange(6), labels]
    expected = alpha * t * t * kl + (1 - alpha) * ce

    s, te, y = torch.from_numpy(student), torch.from_numpy(teacher), torch.from_numpy(labels)
    got = kd_loss(s, te, y, t, alpha)
    assert got.shape == (6,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert torch.equal(kd_loss(s, te, y, t, 0.0), cross_entropy_loss(s, None, y, None))
    assert torch.equal(kd_loss(s, s.clone(), y, t, 1.0), torch.zeros(6))  # KL(p || p) = 0
    assert torch.equal(distillation_loss(t, alpha)(s, te, y), got)


def test_distillation_settings_are_checked_once_when_the_loss_is_built():
    with pytest.raises(WaveError, match="distillation temperature must be positive, got 0.0"):
        distillation_loss(0.0, 0.5)
    with pytest.raises(WaveError, match=r"distillation weight \(alpha\) must be in \[0, 1\], got 1.5"):
        distillation_loss(2.0, 1.5)


def test_a_loss_that_is_not_per_sample_is_refused(digits):
    with pytest.raises(WaveError, match="per-sample losses of shape"):
        fit(digits, loss_fn=lambda logits, images, labels, indices: F.cross_entropy(logits, labels))


def test_indices_given_to_the_loss_name_the_samples_of_the_batch(digits):
    images, labels = torch.from_numpy(digits.train_images), torch.from_numpy(digits.train_labels)

    def checking_loss(logits, batch_images, batch_labels, indices):
        assert torch.equal(batch_images, images[indices]) and torch.equal(batch_labels, labels[indices])
        return cross_entropy_loss(logits, batch_images, batch_labels, indices)

    fit(digits, TrainConfig(epochs=1, batch_size=100), loss_fn=checking_loss)


# ----------------------------------------------------------------------------- devices

def test_devices_and_processes():
    assert distributed_context() == (0, 1)  # not under torchrun: nothing is initialised
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(WaveError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(WaveError, match="no CUDA GPU.*--device cpu"):
            resolve_device("cuda:0")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_bf16_autocast_learns_and_is_deterministic(digits):
    config = TrainConfig(epochs=5, batch_size=64, lr=1e-2)  # amp=None: bf16 autocast on CUDA
    runs = []
    for _ in range(2):
        model = mlp()
        result = train(model, digits.train_images, digits.train_labels, config, device="cuda",
                       eval_data=(digits.test_images, digits.test_labels))
        runs.append((state(model), result))
    assert runs[0][1].history[-1]["eval"]["accuracy"] > 0.85
    assert all(torch.isfinite(v).all() for v in runs[0][0].values())
    assert_bit_identical(runs[0][0], runs[1][0])


# ----------------------------------------------------------------------------- checkpoints

class Interrupt(Exception):
    pass


def test_checkpoint_file_is_safetensors_with_a_header(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    model, result = fit(digits, TrainConfig(epochs=1, batch_size=64), checkpoint=path, meta={"data": "digits"})
    header = read_checkpoint_header(path)
    assert header["complete"] and header["global_step"] == 23 and header["history"] == result.history
    assert header["fingerprint"]["meta"] == {"data": "digits"}
    assert header["fingerprint"]["config"]["lr"] == 1e-3
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == CHECKPOINT_FORMAT
        keys = set(f.keys())
    assert {f"model.{k}" for k in model.state_dict()} <= keys
    assert {"optim.0.exp_avg", "optim.0.exp_avg_sq", "optim.0.step", "train.loss_sum"} <= keys
    assert_bit_identical({k[6:]: v for k, v in load_file(path).items() if k.startswith("model.")}, state(model))


def test_interrupted_run_resumes_bit_identical(digits, tmp_path):
    config = TrainConfig(epochs=3, batch_size=64, lr=1e-2, checkpoint_every=5)
    eval_data = (digits.test_images, digits.test_labels)
    reference, expected = fit(digits, config, checkpoint=tmp_path / "a.ckpt", eval_data=eval_data)

    def stop_mid_epoch_2(progress):
        if progress.event == "checkpoint" and progress.epoch == 1:  # the second epoch
            raise Interrupt

    path = tmp_path / "b.ckpt"
    with pytest.raises(Interrupt):
        fit(digits, config, checkpoint=path, eval_data=eval_data, on_progress=stop_mid_epoch_2)
    header = read_checkpoint_header(path)
    assert header["epoch"] == 1 and 0 < header["step"] < 23 and not header["complete"]

    events = []
    resumed, result = fit(digits, config, model=mlp(seed=99), checkpoint=path, resume=True,
                          eval_data=eval_data, on_progress=events.append)
    assert result.resumed_from == header["global_step"] == 25  # the checkpoint after 5 steps of epoch 2
    assert events[0].event == "resumed"
    assert_bit_identical(state(resumed), state(reference))
    strip = lambda history: [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in history]  # noqa: E731
    assert strip(result.history) == strip(expected.history)


def test_complete_run_resumes_at_once_with_its_history_and_weights(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    trained, first = fit(digits, TrainConfig(epochs=1, batch_size=64), checkpoint=path)
    again, second = fit(digits, TrainConfig(epochs=1, batch_size=64), model=mlp(seed=5), checkpoint=path, resume=True)
    assert second.history == first.history and second.steps == 23 and second.resumed_from == 23
    assert_bit_identical(state(again), state(trained))


def test_resume_without_a_checkpoint_starts_fresh_and_no_resume_overwrites(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    _, fresh = fit(digits, TrainConfig(epochs=1, batch_size=64), checkpoint=path, resume=True)
    assert fresh.resumed_from is None and read_checkpoint_header(path)["complete"]
    _, again = fit(digits, TrainConfig(epochs=2, batch_size=64), checkpoint=path, resume=False)
    assert again.resumed_from is None and read_checkpoint_header(path)["global_step"] == 46


def test_resume_with_other_settings_is_refused(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    fit(digits, TrainConfig(epochs=1, batch_size=64), checkpoint=path, meta={"data": "digits"})
    with pytest.raises(WaveError, match=r"config\.lr: 0\.001 there, 0\.002 now.*drop --resume"):
        fit(digits, TrainConfig(epochs=1, batch_size=64, lr=2e-3), checkpoint=path, resume=True, meta={"data": "digits"})
    with pytest.raises(WaveError, match=r"meta\.data: \"digits\" there, \"fashion\" now"):
        fit(digits, TrainConfig(epochs=1, batch_size=64), checkpoint=path, resume=True, meta={"data": "fashion"})
    with pytest.raises(WaveError, match=r"data\.labels"):
        train(mlp(), digits.train_images, digits.train_labels[::-1].copy(), TrainConfig(epochs=1, batch_size=64),
              device="cpu", checkpoint=path, resume=True, meta={"data": "digits"})


def test_a_checkpoint_with_a_tensor_it_should_not_hold_is_refused_by_name(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    config = TrainConfig(epochs=1, batch_size=64)
    fit(digits, config, checkpoint=path)
    written = path.read_bytes()
    # The MLP has parameters 0 to 3 (1.weight, 1.bias, 3.weight, 3.bias); AdamW keeps no momentum_buffer; no EMA is kept.
    for name in ("extra", "model.1.weight_orig", "optim.4.exp_avg", "optim.0.momentum_buffer", "ema.1.weight"):
        path.write_bytes(written)
        add_tensor(path, name, np.zeros(3, np.float32))
        with pytest.raises(WaveError) as e:
            fit(digits, config, checkpoint=path, resume=True)
        assert str(e.value) == (f"{path}: unexpected tensor {name!r} (not part of a checkpoint of this model and optimizer): "
                                f"the file was written by another tool or damaged; drop --resume to start over")
    path.write_bytes(written)
    assert fit(digits, config, checkpoint=path, resume=True)[1].resumed_from == 23  # as written, it resumes


def test_a_file_that_is_not_a_checkpoint_is_never_overwritten(digits, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(3)}, path)
    with pytest.raises(WaveError, match="not a training checkpoint"):
        fit(digits, checkpoint=path)
    assert torch.equal(load_file(path)["w"], torch.zeros(3))


@pytest.mark.slow
def test_sigkilled_process_resumes_bit_identical(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys, time\n"
        "import torch\n"
        "import torch.nn.functional as F\n"
        "from torch import nn\n"
        "from safetensors.torch import save_file\n"
        "from waveinit.io.datasets import load_dataset\n"
        "from waveinit.configs import TrainConfig\n"
        "from waveinit.training.engine import train\n"
        "checkpoint, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])\n"
        "ds = load_dataset('digits')\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))\n"
        "def loss_fn(logits, images, labels, indices):\n"
        "    time.sleep(delay)  # slows the run down so that it can be killed mid-epoch; changes no number\n"
        "    return F.cross_entropy(logits, labels, reduction='none')\n"
        "config = TrainConfig(epochs=3, batch_size=64, lr=1e-2, checkpoint_every=3)\n"
        "result = train(model, ds.train_images, ds.train_labels, config, loss_fn=loss_fn, device='cpu', checkpoint=checkpoint, resume=True)\n"
        "save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)\n"
        "print(json.dumps({'resumed_from': result.resumed_from, 'steps': result.steps}))\n"
    )

    def start(name: str, delay: float) -> subprocess.Popen:
        args = [sys.executable, str(script), str(tmp_path / f"{name}.ckpt"), str(tmp_path / f"{name}.safetensors"), str(delay)]
        return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    reference = start("reference", 0.0)
    victim = start("victim", 0.02)  # 69 steps of >= 20 ms
    checkpoint, seen = tmp_path / "victim.ckpt", None
    deadline = time.monotonic() + 60
    while victim.poll() is None and time.monotonic() < deadline:
        if checkpoint.exists():
            header = read_checkpoint_header(checkpoint)
            if header["epoch"] == 1 and header["step"] > 0:  # mid-way through the second epoch
                os.kill(victim.pid, signal.SIGKILL)
                seen = header["global_step"]
                break
        time.sleep(0.005)
    victim.wait()
    assert seen is not None, f"the run ended before a mid-epoch checkpoint was seen: {victim.communicate()[1][-2000:]}"
    assert victim.returncode == -signal.SIGKILL

    resumed = start("victim", 0.0)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert seen <= report["resumed_from"] < 69 and report["steps"] == 69
    assert reference.wait(timeout=120) == 0, reference.communicate()[1][-2000:]
    assert_bit_identical(load_file(tmp_path / "victim.safetensors"), load_file(tmp_path / "reference.safetensors"))


# ----------------------------------------------------------------------------- non-finite losses

def assert_finite_checkpoint(path: Path) -> dict:
    for key, value in load_file(path).items():
        assert torch.isfinite(value).all(), key
    return read_checkpoint_header(path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    calls = []

    def nan_from_step_30(logits, images, labels, indices):
        calls.append(1)
        losses = cross_entropy_loss(logits, images, labels, indices)
        return losses * math.nan if len(calls) >= 30 else losses

    path = tmp_path / "run.ckpt"
    with pytest.raises(WaveError) as e:
        fit(digits, TrainConfig(epochs=3, batch_size=64, checkpoint_every=10), checkpoint=path, loss_fn=nan_from_step_30)
    message = str(e.value)
    assert "\n" not in message
    assert "non-finite loss at epoch 2, step 7 (global step 30)" in message
    assert f"last good checkpoint {path} (global step 23)" in message and "lower --lr" in message
    assert assert_finite_checkpoint(path)["global_step"] == 23  # the epoch-end one; step 30's was never written


def test_exploding_learning_rate_stops_with_a_finite_checkpoint(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    with pytest.raises(WaveError, match="non-finite .*lower --lr"):
        fit(digits, TrainConfig(epochs=2, batch_size=64, lr=1e30, grad_clip=None, checkpoint_every=5), checkpoint=path)
    assert not assert_finite_checkpoint(path)["complete"]


# ----------------------------------------------------------------------------- several processes

DISTRIBUTED_SCRIPT = """
import json, sys
import torch
from torch import nn
from safetensors.torch import load_file, save_file
from waveinit.io.datasets import load_dataset
from waveinit.configs import TrainConfig
from waveinit.training.distributed import close_distributed, distributed_context
from waveinit.training.engine import train
from waveinit.training.evaluation import evaluate, predict_logits

folder = sys.argv[1]
ds = load_dataset("digits")
model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 10))
model.load_state_dict(load_file(f"{folder}/initial.safetensors"))
rank, world = distributed_context()
before = evaluate(model, ds.test_images, ds.test_labels, 64, "cpu")
logits = predict_logits(model, ds.test_images, 50, "cpu")
config = TrainConfig(**json.loads(sys.argv[2]))
result = train(model, ds.train_images[:201], ds.train_labels[:201], config, device="cpu",
               eval_data=(ds.test_images, ds.test_labels), checkpoint=f"{folder}/run.ckpt")
report = {"rank": rank, "world": world, "before": before, "history": result.history, "steps": result.steps}
with open(f"{folder}/rank{rank}.json", "w") as f:
    json.dump(report, f)
if rank == 0:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{folder}/trained.safetensors")
    save_file({"logits": logits}, f"{folder}/logits.safetensors")
close_distributed()  # rank 1 waits here for rank 0's saving, instead of tearing the group down under it
"""


@pytest.mark.slow
def test_two_processes_compute_what_one_process_computes(digits, tmp_path):
    # 201 images in batches of 50: every epoch ends with a batch of ONE image, so rank 1's
    # shard is empty there and the empty-shard path runs too.
    config = TrainConfig(epochs=2, batch_size=50, lr=1e-2)
    initial = mlp()
    save_file(state(initial), tmp_path / "initial.safetensors")
    (tmp_path / "dist.py").write_text(DISTRIBUTED_SCRIPT)
    done = run_python("-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                      tmp_path / "dist.py", tmp_path, json.dumps(config.__dict__), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["before"] == ranks[1]["before"]

    # One process, same data, same global batches.
    eval_data = (digits.test_images, digits.test_labels)
    before = evaluate(initial, *eval_data, 64, "cpu")
    logits = predict_logits(initial, digits.test_images, 50, "cpu")
    result = train(initial, digits.train_images[:201], digits.train_labels[:201], config, device="cpu", eval_data=eval_data)

    assert ranks[0]["before"]["accuracy"] == before["accuracy"]
    assert ranks[0]["before"]["loss"] == pytest.approx(before["loss"], rel=1e-6)
    torch.testing.assert_close(load_file(tmp_path / "logits.safetensors")["logits"], logits, rtol=1e-6, atol=1e-6)
    trained = load_file(tmp_path / "trained.safetensors")
    for key, value in state(initial).items():
        relative = (trained[key] - value).norm() / value.norm()
        assert relative < 1e-5, f"{key}: relative difference {relative:.2e}"
    for two, one in zip(ranks[0]["history"], result.history):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert two["eval"]["accuracy"] == one["eval"]["accuracy"]
    assert_bit_identical({k[6:]: v for k, v in load_file(tmp_path / "run.ckpt").items() if k.startswith("model.")}, trained)


def test_shift_and_flip_moves_each_image_within_its_bound_and_no_further():
    import numpy as np
    import torch

    from waveinit.training.batches import shift_and_flip

    torch.manual_seed(0)
    x = torch.randn(64, 2, 20, 20)
    y = shift_and_flip(x)
    m = 2  # side 20 // 10
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (m, m), (m, m)), mode="edge")
    seen = set()
    for i in range(len(x)):
        # the one (dy, dx, flip) that explains sample i, by brute force over every candidate
        found = [(dy, dx, f) for dy in range(2 * m + 1) for dx in range(2 * m + 1) for f in (False, True)
                 if np.array_equal(y[i].numpy(), (lambda c: c[..., ::-1] if f else c)(padded[i, :, dy:dy + 20, dx:dx + 20]))]
        assert found, i
        seen.update(found)
    assert len(seen) > 10  # shifts and flips vary between images
    torch.manual_seed(0)
    assert not torch.equal(shift_and_flip(x), shift_and_flip(x))  # two draws differ...
    torch.manual_seed(1)
    a = shift_and_flip(x)
    torch.manual_seed(1)
    assert torch.equal(a, shift_and_flip(x))  # ...and one seed gives one draw


def test_training_with_augment_is_deterministic_and_differs_from_without(tmp_path):
    import numpy as np

    from waveinit.configs import TrainConfig
    from waveinit.io.datasets import load_dataset
    from waveinit.spec import ViTSpec
    from waveinit.tasks import random_vit
    from waveinit.training.engine import train

    data = load_dataset("digits", subset=256)
    spec = ViTSpec(depth=1, width=32, heads=1, patch_size=2, image_size=8, channels=1, num_classes=10)
    losses = []
    for augment in (True, True, False):
        model = random_vit(spec, 0)
        result = train(model, data.train_images, data.train_labels, TrainConfig(epochs=1, batch_size=64, augment=augment), device="cpu")
        losses.append(result.history[-1]["train_loss"])
    assert losses[0] == losses[1] and not np.isclose(losses[0], losses[2])


def test_augmenting_digits_is_refused_in_one_line(tmp_path):
    from helpers import wave

    result = wave("train", "--data", "digits", "--augment", "--epochs", "1", "--out", tmp_path / "m.safetensors", cwd=tmp_path)
    assert result.returncode == 2 and "turns digits into other symbols" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_a_compiled_run_resumes_bit_identical(digits, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-2, checkpoint_every=5, compile=True)
    reference, _ = fit(digits, config, checkpoint=tmp_path / "a.ckpt")

    def stop_in_epoch_2(progress):
        if progress.event == "checkpoint" and progress.epoch == 1:
            raise Interrupt

    path = tmp_path / "b.ckpt"
    with pytest.raises(Interrupt):
        fit(digits, config, checkpoint=path, on_progress=stop_in_epoch_2)
    resumed, result = fit(digits, config, model=mlp(seed=99), checkpoint=path, resume=True)
    assert result.resumed_from == 25
    assert_bit_identical(state(resumed), state(reference))


@pytest.mark.slow
def test_compiled_templated_training_matches_eager(digits):
    spec = ViTSpec(depth=1, width=64, patch_size=2, image_size=8, channels=1, num_classes=10)
    runs = []
    for compiled in (False, True):
        model = TemplatedViT(spec, 64, 2, seed=0)
        train(model, digits.train_images, digits.train_labels, TrainConfig(max_steps=8, batch_size=64, lr=1e-3, compile=compiled), device="cpu")
        runs.append(state(model))
    for key in runs[0]:
        torch.testing.assert_close(runs[1][key], runs[0][key], rtol=1e-4, atol=1e-5)
