"""The whole WAVE pipeline from Python, and what it buys at every size.

Train an ancestry, distil it into a learngene once, then for each (depth, width) spawn a model
(scaler fit on a little data), train it one epoch, and compare with a randomly initialised
model of the same size trained the same way.

    python examples/spawn_sizes.py --quick                     # digits, a minute or two
    python examples/spawn_sizes.py --data fashion-mnist        # the real thing (tens of minutes)
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import waveinit
from waveinit.backends.torch import ViT, load_state_dict
from waveinit.configs import AncestryConfig, DistillConfig, TrainConfig
from waveinit.io.datasets import load_dataset
from waveinit.tasks import distill, load_vit, train_ancestry
from waveinit.training.engine import train
from waveinit.training.evaluation import evaluate


def one_epoch(model, data, lr, seed):
    """Train all parameters for one epoch (AdamW, warm-up and cosine); test accuracy after it."""
    train(model, data.train_images, data.train_labels, TrainConfig(epochs=1, batch_size=64, lr=lr, seed=seed), device="cpu")
    return evaluate(model, data.test_images, data.test_labels, 256, torch.device("cpu"))["accuracy"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--workdir", type=Path, default=Path("runs/spawn_sizes"))
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 192])
    parser.add_argument("--ancestry-epochs", type=int, default=None)
    parser.add_argument("--distill-epochs", type=int, default=None)
    parser.add_argument("--train-subset", type=int, default=None, help="images for the ancestry, distillation and the epoch")
    parser.add_argument("--fit-steps", type=int, default=200)
    parser.add_argument("--fit-samples", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3, help="one-epoch learning rate of random init")
    parser.add_argument("--inherited-lr", type=float, default=5e-4, help="one-epoch learning rate of spawned models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fashion = args.data == "fashion-mnist"
    if args.quick:
        args.fit_steps, args.fit_samples = 20, 500
    ancestry_epochs = args.ancestry_epochs or (4 if args.quick else 4 if fashion else 20)
    distill_epochs = args.distill_epochs or (4 if args.quick else 3 if fashion else 20)
    subset = args.train_subset or (20000 if fashion else None)

    data = load_dataset(args.data, subset=subset, seed=args.seed)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{data.describe()}")

    # 1. The ancestry and the learngene, made once for every size.
    ancestry_path, learngene_path = args.workdir / "ancestry.safetensors", args.workdir / "learngene.safetensors"
    recipe = AncestryConfig(depth=2, width=64, epochs=ancestry_epochs) if args.quick else AncestryConfig(epochs=ancestry_epochs)
    start = time.perf_counter()
    history = train_ancestry(data, recipe, out=ancestry_path, seed=args.seed, device="cpu").history
    ancestry, _ = load_vit(ancestry_path)
    print(f"ancestry {ancestry.spec.depth}x{ancestry.spec.width}: {100 * history[-1]['eval']['accuracy']:.1f}% ({time.perf_counter() - start:.0f} s)")
    start = time.perf_counter()
    result = distill(ancestry, data, ancestry.spec, TrainConfig(epochs=distill_epochs, batch_size=64, lr=2e-3, seed=args.seed),
                     DistillConfig(templates=4), out=learngene_path, device="cpu", provenance={"teacher": str(ancestry_path)})
    learngene = result.learngene
    print(f"learngene: {learngene.num_template_params():,} template parameters, auxiliary model "
          f"{100 * learngene.provenance['test_accuracy']:.1f}% ({time.perf_counter() - start:.0f} s)")

    # 2. Every size: spawn (fit) -> +1 epoch, against random init -> +1 epoch.
    rows = []
    print(f"\n{'size':>8} {'params':>10} {'WAVE fit':>9} {'WAVE +1 ep':>11} {'random +1 ep':>13} {'fit s':>6}")
    for depth in args.depths:
        for width in args.widths:
            spawned = waveinit.spawn(learngene, depth, width, data=data, fit_steps=args.fit_steps, fit_samples=args.fit_samples,
                                     teacher=ancestry_path, seed=args.seed, device="cpu")
            model = load_state_dict(ViT(spawned.spec), spawned.state_dict)
            wave_epoch = one_epoch(model, data, args.inherited_lr, args.seed)
            torch.manual_seed(args.seed)
            random_epoch = one_epoch(ViT(spawned.spec), data, args.lr, args.seed)
            row = {"depth": depth, "width": width, "params": spawned.spec.num_params(), "wave_fit": spawned.provenance["test_accuracy"],
                   "wave_1_epoch": wave_epoch, "random_1_epoch": random_epoch, "fit_seconds": spawned.provenance["seconds"]}
            rows.append(row)
            print(f"{depth:>3} x {width:<3} {row['params']:>10,} {100 * row['wave_fit']:>8.1f}% {100 * wave_epoch:>10.1f}% "
                  f"{100 * random_epoch:>12.1f}% {row['fit_seconds']:>6.0f}")
    (args.workdir / "results.json").write_text(json.dumps({"data": data.name, "rows": rows}, indent=1))
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    print(f"\nmean over sizes: WAVE fit {100 * mean('wave_fit'):.1f}%, WAVE +1 epoch {100 * mean('wave_1_epoch'):.1f}%, "
          f"random +1 epoch {100 * mean('random_1_epoch'):.1f}%")


if __name__ == "__main__":
    main()
