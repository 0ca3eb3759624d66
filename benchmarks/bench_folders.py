"""Image folders streamed from disk: the data pipeline against the training step, and memory.

    python benchmarks/bench_folders.py [--images 2000 20000] [--steps 8] [--workers 0 1 2]

1. Pipeline alone: images/s of the engine's batch feed (`training.batches.shard_batches`:
   decode, centre crop or random-resized crop, resize to 224) over a folder of 224-px-ish JPEGs,
   with 0, 1 and 2 DataLoader workers.
2. A ViT-Ti-shaped `wave distill` step (auxiliary 12 x 192, patch 16, 224 px, 4 templates of
   64 x 64 per role; a ViT-Ti teacher, its logits computed per batch as with --augment) fed
   from the same folder: images/s with 0, 1 and 2 workers.
3. Peak RSS of a whole epoch of the pipeline (2 workers) over a folder of each size in
   --images, in a fresh process each: memory must not grow with the number of images.

The folders are made once in --root (random JPEGs of 200-260 px a side, 10 classes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_folder(root: Path, n: int, classes: int = 10) -> Path:
    import numpy as np
    from PIL import Image

    folder = root / f"jpegs_{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    rng = np.random.default_rng(n)
    for i in range(n):
        c = folder / f"class_{i % classes:02d}"
        c.mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(200, 261, 2))
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)  # smooth-ish content compresses like a photo
        image = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        image.save(c / f"{i:06d}.jpg", quality=90)
    done.touch()
    return folder


def pipeline_rate(folder: Path, workers: int, batch: int, limit: int | None) -> float:
    import numpy as np

    from waveinit.io.datasets import load_dataset
    from waveinit.training.batches import shard_batches

    ds = load_dataset(f"folder:{folder}", image_size=224, augment=True)
    n = len(ds.train_labels)
    order = np.random.default_rng(0).permutation(n)
    steps = -(-n // batch) if limit is None else min(limit, -(-n // batch))
    start, seen = time.perf_counter(), 0
    for x, *_ in shard_batches(ds.train_images, ds.train_labels, order, batch, 0, 1, 0, 0, 0, steps, workers, pin=False):
        seen += len(x)
    return seen / (time.perf_counter() - start)


def step_rate(folder: Path, workers: int, batch: int, steps: int) -> float:
    from waveinit.backends.torch import TemplatedViT, ViT
    from waveinit.configs import TrainConfig
    from waveinit.io.datasets import load_dataset
    from waveinit.spec import ViTSpec
    from waveinit.tasks import teacher_kd_loss
    from waveinit.training.engine import train

    ds = load_dataset(f"folder:{folder}", image_size=224, augment=True)
    spec = ViTSpec(depth=12, width=192, heads=3, patch_size=16, image_size=224, channels=3, num_classes=ds.num_classes)
    teacher = ViT(spec).eval()
    loss = teacher_kd_loss(teacher, ds.train_images, 1.0, 0.5, batch, teacher.cls_token.device)  # augmented: no cache
    model = TemplatedViT(spec, 64, 4)
    # one warm-up step, then the timed ones
    train(model, ds.train_images, ds.train_labels, TrainConfig(batch_size=batch, max_steps=1), loss_fn=loss, device="cpu", workers=workers)
    start = time.perf_counter()
    train(model, ds.train_images, ds.train_labels, TrainConfig(batch_size=batch, max_steps=steps), loss_fn=loss, device="cpu",
          workers=workers)
    return steps * batch / (time.perf_counter() - start)


def epoch_rss(folder: Path) -> None:
    """Child mode: one whole epoch of the pipeline with 2 workers; print peak RSS in MiB (this
    process, and the largest worker)."""
    pipeline_rate(folder, workers=2, batch=64, limit=None)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"main_mib": own, "worker_mib": child}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/bench_folders"))
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed distill steps per worker count")
    parser.add_argument("--pipeline-batches", type=int, default=20, help="batches timed through the pipeline alone")
    parser.add_argument("--rss-of", type=Path, default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.rss_of is not None:
        return epoch_rss(args.rss_of)

    folders = {n: make_folder(args.root, n) for n in args.images}
    small = folders[min(folders)]
    print(f"folder: {min(folders):,} JPEGs of 200-260 px, decoded to 224 x 224 RGB with random-resized crop and flip")
    print(f"{'workers':>7} {'pipeline img/s':>15} {'distill step img/s':>19} {'ratio':>6}")
    for w in args.workers:
        pipe = pipeline_rate(small, w, args.batch, args.pipeline_batches)
        step = step_rate(small, w, args.batch, args.steps)
        print(f"{w:>7} {pipe:>15.1f} {step:>19.1f} {pipe / step:>5.1f}x")
    print("peak RSS over one whole epoch of the pipeline (2 workers, batch 64), each in a fresh process:")
    for n, folder in sorted(folders.items()):
        out = subprocess.run([sys.executable, __file__, "--rss-of", str(folder)], capture_output=True, text=True, check=True)
        rss = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {n:>6,} images: main process {rss['main_mib']:.0f} MiB, largest worker {rss['worker_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
