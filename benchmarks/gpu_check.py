"""The CUDA path, checked in one short call on a lent GPU, with one JSON report.

    python benchmarks/gpu_check.py [--out gpu_check.json]      # on a GPU machine: a few minutes
    python benchmarks/gpu_check.py --tiny [--out FILE]          # on any CPU: the same steps, tiny (CI)

What it runs, each step recorded as {"ok": ..., figures..., "error": ...} (a failing step does
not stop the others; the exit code is 1 if any failed):

1. `cuda_tests`: the tests that need a GPU (`pytest -m cuda`).
2. `train`, `distill_cached`, `distill_online`: `tasks.train_vit` and `tasks.distill` on a
   ViT-S/16-224-shaped model (12 blocks, width 384, 6 heads, 3x224x224 images, 100 classes;
   bf16 autocast, the engine's default on CUDA) over synthetic in-memory images; images/s of the
   last epoch and peak GPU memory. `distill_vs_train` is the templated student's images/s over
   the plain ViT's (aim: 0.8 or more).
3. `compile` (GPU only): `train` again with `TrainConfig(compile=True)`.
4. `spawn` and `eval`: `waveinit.spawn` of a 6x384 model from the distilled learngene with a
   short scaler fit, and `evaluate` of the trained model.
5. `folder`: PNG files written to a class folder tree, trained through the file pipeline with
   DataLoader workers; `pipeline_images_per_second` (decoding alone) against the step's.
6. `torchrun`: `torchrun --nproc_per_node 1 -m waveinit.cli train` on the folder (NCCL on a GPU,
   gloo on a CPU).
7. `determinism`: the same short training twice; the two weight digests must match.

`--tiny` runs every step on the CPU with a 2x64 model, 32x32 images and a few hundred images,
so CI keeps the script from rotting; its speeds mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from waveinit import ViTSpec
from waveinit.configs import DistillConfig, TrainConfig
from waveinit.io.datasets import Dataset, load_dataset
from waveinit.io.storage import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scale:
    spec: ViTSpec  # the plain ViT trained, and the distillation's teacher
    spawn: tuple[int, int]  # depth, width of the spawned model
    images: int  # synthetic training images (in memory)
    folder_images: int  # PNG files written for the folder steps
    batch: int
    epochs: int
    workers: int


FULL = Scale(ViTSpec(depth=12, width=384, heads=6, patch_size=16, image_size=224, channels=3, num_classes=100),
             spawn=(6, 384), images=1024, folder_images=1024, batch=128, epochs=2, workers=4)
TINY = Scale(ViTSpec(depth=2, width=64, heads=1, patch_size=8, image_size=32, channels=3, num_classes=10),
             spawn=(2, 64), images=256, folder_images=120, batch=32, epochs=2, workers=2)


def synthetic(scale: Scale, seed: int = 0) -> Dataset:
    """Seeded images in [-1, 1] and labels; speed does not depend on the pixels."""
    rng = np.random.default_rng(seed)
    s = scale.spec
    shape = (s.channels, s.image_size, s.image_size)
    train = rng.uniform(-1, 1, (scale.images, *shape)).astype(np.float32)
    test = rng.uniform(-1, 1, (scale.images // 4, *shape)).astype(np.float32)
    return Dataset("synthetic", train, rng.integers(0, s.num_classes, scale.images), test,
                   rng.integers(0, s.num_classes, scale.images // 4), s.num_classes)


def write_folder(root: Path, scale: Scale) -> Path:
    """A train/ and val/ tree of PNG files, 4 classes, at the model's image size."""
    from PIL import Image

    rng = np.random.default_rng(1)
    side = scale.spec.image_size
    for split, n in (("train", scale.folder_images), ("val", max(8, scale.folder_images // 8))):
        for i in range(n):
            folder = root / split / f"class{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- the steps


class Check:
    """Runs the steps, keeps their records and what later steps need."""

    def __init__(self, scale: Scale, device: str, work: Path):
        self.scale, self.device, self.work = scale, device, work
        self.cuda = device.startswith("cuda")
        self.data = synthetic(scale)
        self.report: dict = {}

    def step(self, name: str, fn) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            record = {"ok": True, **fn()}
        except Exception as e:  # recorded, and the other steps still run
            record = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
        record["seconds"] = round(time.perf_counter() - start, 3)
        if self.cuda:
            record["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.report[name] = record
        print(f"{name}: {'ok' if record['ok'] else 'FAILED ' + record['error']} ({record['seconds']:.1f} s)", flush=True)

    def config(self, **changes) -> TrainConfig:
        return TrainConfig(**{"epochs": self.scale.epochs, "batch_size": self.scale.batch, "lr": 5e-4, "seed": 0, **changes})

    def cuda_tests(self) -> dict:
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(ROOT / "tests")],
                             capture_output=True, text=True, cwd=ROOT)
        if run.returncode not in (0, 5):
            raise RuntimeError(f"pytest -m cuda exited {run.returncode}: {run.stdout[-400:]}")
        return {"summary": run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""}

    def train(self, compile_model: bool = False) -> dict:
        from waveinit.tasks import random_vit, train_vit

        model = random_vit(self.scale.spec, seed=0)
        result = train_vit(model, self.data, self.config(compile=compile_model), out=self.work / f"train{int(compile_model)}.safetensors",
                           device=self.device)
        self.teacher = model
        return _speed(result)

    def distill(self, cache: bool) -> dict:
        from waveinit.tasks import distill

        config = DistillConfig(templates=4, side=64, cache_teacher=cache)
        result = distill(self.teacher, self.data, self.scale.spec.plain(), self.config(), config,
                         out=self.work / f"learngene{int(cache)}.safetensors", device=self.device)
        self.learngene = result.learngene
        return _speed(result.train)

    def spawn(self) -> dict:
        import waveinit

        depth, width = self.scale.spawn
        model = waveinit.spawn(self.learngene, depth, width, data=self.data, fit_steps=20, fit_samples=self.scale.batch * 4,
                               batch_size=self.scale.batch, device=self.device)
        return {"size": f"{depth}x{width}", "test_accuracy": model.provenance["test_accuracy"], "kept": model.provenance["fit_kept"]}

    def eval(self) -> dict:
        from waveinit.training.evaluation import evaluate

        start = time.perf_counter()
        result = evaluate(self.teacher, self.data.test_images, self.data.test_labels, 256, self.device)
        return {"images_per_second": round(result["samples"] / (time.perf_counter() - start), 1)}

    def folder(self) -> dict:
        from waveinit.tasks import random_vit, spec_for, train_vit
        from waveinit.training.batches import shard_batches

        self.folder_root = write_folder(self.work / "images", self.scale)
        data = load_dataset(f"folder:{self.folder_root}")
        n, bs = len(data.train_labels), self.scale.batch
        order = np.random.default_rng(0).permutation(n)
        start = time.perf_counter()
        feed = shard_batches(data.train_images, data.train_labels, order, bs, 0, 1, 0, 0, 0, -(-n // bs), self.scale.workers, pin=self.cuda)
        for _ in feed:
            pass
        pipeline = n / (time.perf_counter() - start)
        s = self.scale.spec
        model = random_vit(spec_for(data, s.depth, s.width, s.heads, s.patch_size), seed=0)
        result = train_vit(model, data, self.config(), out=self.work / "folder.safetensors", device=self.device, workers=self.scale.workers)
        step = _speed(result)["images_per_second"]
        return {"pipeline_images_per_second": round(pipeline, 1), "step_images_per_second": step,
                "pipeline_over_step": round(pipeline / step, 3)}

    def torchrun(self) -> dict:
        s = self.scale.spec
        out = self.work / "torchrun.safetensors"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "waveinit.cli", "train",
                   "--data", f"folder:{self.folder_root}", "--depth", str(s.depth), "--width", str(s.width), "--heads", str(s.heads),
                   "--patch", str(s.patch_size), "--epochs", "1", "--batch-size", str(self.scale.batch),
                   "--device", "cuda" if self.cuda else "cpu", "--workers", str(self.scale.workers), "--out", str(out), "--json"]
        run = subprocess.run(command, capture_output=True, text=True, cwd=self.work)
        if run.returncode != 0:
            raise RuntimeError(f"torchrun exited {run.returncode}: {run.stderr[-600:]}")
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        return {"backend": "nccl" if self.cuda else "gloo", "test_accuracy": summary["test_accuracy"],
                "images_per_second": round(summary["history"][-1]["images_per_second"], 1)}

    def determinism(self) -> dict:
        from waveinit.tasks import random_vit
        from waveinit.training.engine import train

        digests = []
        for _ in range(2):
            model = random_vit(self.scale.spec, seed=0)
            train(model, self.data.train_images, self.data.train_labels, self.config(epochs=1, max_steps=5), device=self.device)
            digests.append(_digest(model))
        if digests[0] != digests[1]:
            raise RuntimeError(f"two runs with seed 0 ended with different weights ({digests[0][:12]} vs {digests[1][:12]})")
        return {"digest": digests[0][:16]}


def _speed(result) -> dict:
    last = result.history[-1]
    return {"images_per_second": round(last["images_per_second"], 1), "test_accuracy": last["eval"]["accuracy"] if last["eval"] else None}


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU: the steps, not the speeds (CI)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA GPU visible: run with --tiny on a CPU", file=sys.stderr)
        return 2
    scale = TINY if args.tiny else FULL
    with tempfile.TemporaryDirectory() as tmp:
        check = Check(scale, device, Path(tmp))
        check.step("cuda_tests", check.cuda_tests)
        check.step("train", check.train)
        check.step("distill_cached", lambda: check.distill(cache=True))
        check.step("distill_online", lambda: check.distill(cache=False))
        if not args.tiny:
            check.step("compile", lambda: check.train(compile_model=True))
        check.step("spawn", check.spawn)
        check.step("eval", check.eval)
        check.step("folder", check.folder)
        check.step("torchrun", check.torchrun)
        check.step("determinism", check.determinism)
    r = check.report
    header = {
        "device": torch.cuda.get_device_name(0) if check.cuda else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny,
        "model": scale.spec.to_dict(), "images": scale.images, "batch": scale.batch,
        "threads": torch.get_num_threads(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid(),
        # the templated student's images/s over the plain ViT's, teacher logits cached (aim: 0.8 or more)
        "distill_vs_train": round(r["distill_cached"]["images_per_second"] / r["train"]["images_per_second"], 3)
        if r["train"]["ok"] and r["distill_cached"]["ok"] else None,
    }
    atomic_write_bytes(args.out, (json.dumps({**header, "steps": r}, indent=2) + "\n").encode())
    failed = [name for name, record in r.items() if not record["ok"]]
    print(f"report: {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else "; every step passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
