"""Spawning for a new dataset: distil on Fashion-MNIST, then initialise models for other data.

The learngene's transformer templates carry over to any image size and class count; the roles
whose shapes depend on the data (patch embedding, position embedding, head) start fresh, and the
scaler fit on the new data (cross-entropy: the ancestry cannot see these images) adapts the rest.
Each spawned model then trains for a few epochs beside a randomly initialised one of its size.

    python examples/new_dataset.py --quick                              # a minute or two
    python examples/new_dataset.py                                      # Fashion-MNIST 20k -> digits
    python examples/new_dataset.py --target folder:~/my_images --learngene runs/learngene.safetensors
"""

import argparse
import json
import time
from pathlib import Path

import torch

import waveinit
from waveinit.backends.torch import ViT, load_state_dict
from waveinit.configs import AncestryConfig, DistillConfig, TrainConfig
from waveinit.io.datasets import load_dataset
from waveinit.tasks import default_patch, distill, load_vit, random_vit, train_ancestry
from waveinit.training.engine import train
from waveinit.training.evaluation import evaluate


def make_learngene(workdir: Path, quick: bool, seed: int) -> Path:
    """Train an ancestry on Fashion-MNIST and distil it: the learngene every target starts from."""
    source = load_dataset("fashion-mnist", subset=2000 if quick else 20000, seed=seed)
    recipe = AncestryConfig(depth=2, width=64, epochs=3) if quick else AncestryConfig(epochs=4)
    epochs = recipe.epochs
    ancestry_path, learngene_path = workdir / "ancestry.safetensors", workdir / "learngene.safetensors"
    start = time.perf_counter()
    history = train_ancestry(source, recipe, out=ancestry_path, seed=seed, device="cpu").history
    print(f"ancestry {recipe.depth}x{recipe.width} on {source.name} ({len(source.train_labels):,} images): "
          f"{100 * history[-1]['eval']['accuracy']:.1f}% ({time.perf_counter() - start:.0f} s)")
    ancestry = load_vit(ancestry_path)[0]
    result = distill(ancestry, source, ancestry.spec, TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, seed=seed), DistillConfig(),
                     out=learngene_path, device="cpu", provenance={"teacher": str(ancestry_path)})
    print(f"learngene: {result.learngene.num_template_params():,} template parameters, auxiliary model "
          f"{100 * result.learngene.provenance['test_accuracy']:.1f}%")
    return learngene_path


def train_epochs(model: ViT, data, epochs: int, lr: float, seed: int) -> list[float]:
    """Test accuracy before training and after each epoch."""
    accuracy = [evaluate(model, data.test_images, data.test_labels, 256, "cpu")["accuracy"]]
    result = train(model, data.train_images, data.train_labels, TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=seed),
                   device="cpu", eval_data=(data.test_images, data.test_labels))
    return accuracy + [h["eval"]["accuracy"] for h in result.history]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--learngene", type=Path, help="a learngene to start from (default: make one from Fashion-MNIST)")
    parser.add_argument("--target", default="digits", help="the new data: digits, idx:DIR or folder:DIR")
    parser.add_argument("--sizes", default=None, help="DEPTHxWIDTH,... to spawn (default 2x64,4x128; --quick 2x64)")
    parser.add_argument("--patch", type=int, default=None, help="patch side for the new images (default: a quarter of their side)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs on the new data")
    parser.add_argument("--workdir", type=Path, default=Path("runs/new_dataset"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [tuple(map(int, s.split("x"))) for s in (args.sizes or ("2x64" if args.quick else "2x64,4x128")).split(",")]
    epochs = args.epochs
    if args.quick:
        torch.set_num_threads(1)  # tiny models gain nothing from more threads
    args.workdir.mkdir(parents=True, exist_ok=True)
    learngene = waveinit.load_learngene(args.learngene or make_learngene(args.workdir, args.quick, args.seed))

    target = load_dataset(args.target, seed=args.seed)
    print(f"\nnew data: {target.describe()}")
    patch = args.patch or (learngene.spec.patch_size if target.image_size % learngene.spec.patch_size == 0 else default_patch(target.image_size))
    rows = []
    for depth, width in sizes:
        spawned = waveinit.spawn(learngene, depth, width, data=target, patch=patch, fit_steps=200, fit_samples=1500, seed=args.seed, device="cpu")
        fresh = spawned.provenance["fresh_roles"]
        wave = train_epochs(load_state_dict(ViT(spawned.spec), spawned.state_dict), target, epochs, 5e-4, args.seed)
        random = train_epochs(random_vit(spawned.spec, args.seed), target, epochs, 1e-3, args.seed)
        rows.append({"depth": depth, "width": width, "fresh_roles": fresh, "wave": wave, "random": random})
        print(f"{depth}x{width} (patch {spawned.spec.patch_size}, fresh: {', '.join(fresh)}): "
              f"WAVE {' -> '.join(f'{100 * a:.1f}' for a in wave)}% | random {' -> '.join(f'{100 * a:.1f}' for a in random)}% "
              f"(epochs 0..{epochs})")
    (args.workdir / "results.json").write_text(json.dumps({"learngene_data": learngene.provenance.get("data"),
                                                            "target": target.name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
