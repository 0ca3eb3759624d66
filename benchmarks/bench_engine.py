"""The training engine against bare PyTorch loops: what its guarantees cost, and what
`torch.compile` buys.

    python benchmarks/bench_engine.py [--sizes 2x64,4x128,6x192] [--steps 40] [--repeats 5]
                                      [--threads 2] [--batch 64] [--compile] [--data fashion-mnist]

For each size (28x28 images, patch 7, 10 classes) it times, in one process and interleaved
(repeat r runs every variant once before repeat r + 1 starts), whole runs of `--steps` AdamW
steps with the same model, data, batch, order, optimizer groups, warm-up and cosine schedule and
gradient clipping:

- train: `training.engine.train` on a plain ViT (cross-entropy, a checkpoint at the start and at
  the end, the metrics file, finite checks, interrupt checks, per-step reseeding) against a bare
  loop of forward, backward, clip and step;
- distill, cached: the engine on the templated auxiliary model with `tasks.teacher_kd_loss` over
  precomputed teacher logits, against a bare loop reading the same logits;
- distill, online: the same with the teacher's forward pass in every step (what augmentation
  forces), against a bare loop doing the same;
- fit: the engine on the templated model of the same size with its templates frozen and only
  the scalers learning, as `wave spawn`'s scaler fit trains it (cross-entropy, no checkpoint),
  against "train: engine, no checkpoint": the ratio says how fast a fit step is against a
  training step of the same model (1.00x: as fast; above: faster).

It prints the median seconds of each and the ratio bare / engine (1.00x: the engine is as fast as
a bare loop). "engine, no checkpoint" is the same run without the checkpoint file: the engine
writes it at the start and at the end of every epoch (fsynced; 32 MB for a 6x192 ViT with its
AdamW state), a cost a real epoch (938 steps of Fashion-MNIST) spreads over 20 times as many
steps as a run here. With `--compile` it adds the engine with `TrainConfig(compile=True)` for train and
distill (online): the first run's extra time is the compile time, and the speed-up is the median
of the later runs against the engine without compile. Models are built outside the timed part.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from waveinit import ViTSpec
from waveinit.backends.torch import TemplatedViT, ViT
from waveinit.configs import DistillConfig, TrainConfig
from waveinit.io.metrics import MetricsLog
from waveinit.tasks import teacher_kd_loss
from waveinit.training.engine import train
from waveinit.training.evaluation import predict_logits
from waveinit.training.objectives import default_param_groups, kd_loss, lr_at

DISTILL = DistillConfig()


def load_images(name: str, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """n training images (n, 1, 28, 28) and labels: Fashion-MNIST when it is installed, else
    seeded noise of the same shape (speed does not depend on the pixels)."""
    from waveinit.errors import WaveError
    from waveinit.io.datasets import load_dataset

    try:
        data = load_dataset(name, subset=n, seed=0)
        if data.image_size == 28 and len(data.train_labels) == n:
            return np.asarray(data.train_images, dtype=np.float32), np.asarray(data.train_labels), f"{name} ({n:,} images)"
    except WaveError:
        pass
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n), f"seeded noise ({n:,} images, {name} not found)"


# ----------------------------------------------------------------------------- the runs


def engine_run(model, images, labels, config, loss_fn=None, groups=None, folder: Path | None = None, checkpoint: bool = True) -> None:
    """One engine run with every guarantee on: a checkpoint file (written at the start and at the
    end of the epoch, fsynced) and the metrics file; `checkpoint=False` leaves the file out, which
    isolates the per-step overhead from those two per-epoch writes."""
    log = MetricsLog(folder / "run.metrics.csv", resume=False)
    on_progress = lambda p: log.add(p.record) if p.event == "epoch" else None  # noqa: E731
    kwargs = {"loss_fn": loss_fn} if loss_fn is not None else {}
    train(model, images, labels, config, param_groups=groups, device="cpu", checkpoint=folder / "run.ckpt" if checkpoint else None,
          on_progress=on_progress, **kwargs)


def bare_run(model, images, labels, config, per_sample_loss, groups) -> None:
    """The same steps in a plain loop: the epoch's permutation, AdamW with the engine's groups and
    schedule, gradient clipping; nothing else."""
    x, y = torch.from_numpy(images), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    order = torch.from_numpy(np.random.default_rng([config.seed, 0]).permutation(len(y)))
    optimizer = torch.optim.AdamW([{**g, "lr": config.lr} for g in groups], lr=config.lr)
    params = [p for g in groups for p in g["params"]]
    steps = config.max_steps
    for step in range(steps):
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, config)
        optimizer.zero_grad(set_to_none=True)
        per_sample_loss(model(x[idx]), x[idx], y[idx], idx).mean().backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()


def distill_groups(model: TemplatedViT, weight_decay: float) -> list[dict]:
    """`tasks.distill`'s groups: weight decay on the templates, none on the scalers."""
    templates, scalers = model.role_tensors()
    return [{"params": list(templates.values()), "weight_decay": weight_decay},
            {"params": list(scalers.values()), "weight_decay": 0.0}]


def cases(spec: ViTSpec, images, labels, config: TrainConfig, with_compile: bool, folder: Path) -> dict:
    """name -> a function doing one timed run on a fresh copy of the same starting model."""
    torch.manual_seed(0)
    plain, teacher = ViT(spec), ViT(spec).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = TemplatedViT(spec, 64, DISTILL.templates, seed=0)
    cached = teacher_kd_loss(teacher, images, DISTILL.temperature, DISTILL.kd_weight, config.batch_size, torch.device("cpu"))
    online = teacher_kd_loss(teacher, images, DISTILL.temperature, DISTILL.kd_weight, config.batch_size, torch.device("cpu"), cache=False)
    logits = predict_logits(teacher, images, config.batch_size, torch.device("cpu"))  # the bare loop's cache

    def bare_cached(out, x, y, idx):
        return kd_loss(out, logits[idx], y, DISTILL.temperature, DISTILL.kd_weight)

    def bare_online(out, x, y, idx):
        with torch.no_grad():
            teacher_logits = teacher(x)
        return kd_loss(out, teacher_logits, y, DISTILL.temperature, DISTILL.kd_weight)

    def ce(out, x, y, idx):
        return F.cross_entropy(out, y, reduction="none")

    def run_plain(engine: bool, compiled: bool = False, checkpoint: bool = True):
        model = copy.deepcopy(plain)
        groups = default_param_groups(model, config.weight_decay)
        if engine:
            return lambda: engine_run(model, images, labels, _with(config, compiled), groups=groups, folder=folder, checkpoint=checkpoint)
        return lambda: bare_run(model, images, labels, config, ce, groups)

    def run_student(loss, engine: bool, compiled: bool = False, checkpoint: bool = True):
        model = copy.deepcopy(student)
        groups = distill_groups(model, config.weight_decay)
        if engine:
            return lambda: engine_run(model, images, labels, _with(config, compiled), loss_fn=loss, groups=groups, folder=folder,
                                      checkpoint=checkpoint)
        return lambda: bare_run(model, images, labels, config, loss, groups)

    def run_fit():
        model = copy.deepcopy(student)
        templates, scalers = model.role_tensors()
        for t in templates.values():
            t.requires_grad_(False)  # frozen, as in tasks.fit_scalers
        groups = [{"params": list(scalers.values()), "weight_decay": 0.0}]
        return lambda: engine_run(model, images, labels, config, groups=groups, folder=folder, checkpoint=False)

    made = {
        "train: engine": lambda: run_plain(True),
        "train: engine, no checkpoint": lambda: run_plain(True, checkpoint=False),
        "train: bare": lambda: run_plain(False),
        "distill cached: engine": lambda: run_student(cached, True),
        "distill cached: engine, no checkpoint": lambda: run_student(cached, True, checkpoint=False),
        "distill cached: bare": lambda: run_student(bare_cached, False),
        "distill online: engine": lambda: run_student(online, True),
        "distill online: engine, no checkpoint": lambda: run_student(online, True, checkpoint=False),
        "distill online: bare": lambda: run_student(bare_online, False),
        "fit: engine": run_fit,
    }
    if with_compile:
        made["train: engine, compiled"] = lambda: run_plain(True, compiled=True)
        made["distill online: engine, compiled"] = lambda: run_student(online, True, compiled=True)
    return made


def _with(config: TrainConfig, compiled: bool) -> TrainConfig:
    from dataclasses import replace

    return replace(config, compile=compiled)


def timed(make) -> float:
    run = make()  # a fresh model copy and optimizer groups, outside the clock
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_size(spec: ViTSpec, images, labels, args, folder: Path) -> dict:
    config = TrainConfig(epochs=1, max_steps=args.steps, batch_size=args.batch, lr=1e-3)
    made = cases(spec, images, labels, config, args.compile, folder)
    times = {name: [] for name in made}
    for _ in range(args.repeats + 1):  # the first round warms up allocators and compiles
        for name, make in made.items():
            times[name].append(timed(make))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2x64,4x128,6x192", help="depth x width, comma-separated")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*lru_cache.*")  # dynamo tracing array_api_compat's cached helpers

    images, labels, described = load_images(args.data, args.steps * args.batch)
    print(f"{args.steps} steps of batch {args.batch} per run, {args.repeats} interleaved repeats after a warm-up, "
          f"{args.threads} threads, torch {torch.__version__}, {described}")
    print(f"{'size':>6} {'case':<34} {'median s':>9} {'img/s':>8} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            depth, width = (int(v) for v in size.split("x"))
            spec = ViTSpec(depth=depth, width=width, patch_size=7, image_size=28, channels=1, num_classes=10)
            times = bench_size(spec, images, labels, args, Path(tmp))
            median = {name: statistics.median(t[1:]) for name, t in times.items()}
            for name, seconds in median.items():
                kind, variant = name.split(": ")
                if variant == "bare":
                    ratio = ""
                elif kind == "fit":
                    ratio = f"{median['train: engine, no checkpoint'] / seconds:.3f}x"  # against a training step of the same model
                elif variant.startswith("engine") and "compiled" not in variant:
                    ratio = f"{median[f'{kind}: bare'] / seconds:.3f}x"  # engine speed as a fraction of the bare loop's
                else:
                    ratio = f"{median[f'{kind}: engine'] / seconds:.3f}x"  # compiled against the engine without compile
                print(f"{size:>6} {name:<34} {seconds:>9.3f} {args.steps * args.batch / seconds:>8,.0f} {ratio:>7}", flush=True)
            for name, t in times.items():
                if name.endswith("compiled"):
                    print(f"{size:>6} {name + ': compile time':<34} {t[0] - median[name]:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
