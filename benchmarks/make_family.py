"""The leak-free family on Fashion-MNIST, made once on a GPU: the ancestry of the paper's geometry
(6x192, larger than most descendants) and the distillation variants of the spawn-rule study.

    python benchmarks/make_family.py --out DIR [--budget SECONDS] [--data-dir D]   # a GPU: minutes
    python benchmarks/make_family.py --tiny --out DIR                              # any CPU: the steps, tiny
    python benchmarks/make_family.py --report DIR/family.json ...                  # the variants, as a table
    python benchmarks/make_family.py --device cpu --ancestry benchmarks/assets/fashion-mnist-6x192.safetensors \
        --only base --seeds 1 --budget 1e9 --out DIR                               # one variant on the committed ancestry

Protocol (docs/bench/protocol-v3.md): the 60,000 training images are split once,
`split_validation(fraction=1/12, seed=0)`: 5,000 (500 per class) form the validation split that
no model of the family sees, and the family trains on the other 55,000. Every model here scores
on the validation split after each epoch, and once on the test set at the end (reported, never
used to choose).

1. The ancestry: 6x192 (3 heads of 64), patch 7, random init, AdamW lr 1e-3, batch 256, weight
   decay 0.05, warm-up and cosine, shifts and flips, random erasing 0.25, label smoothing 0.1,
   drop-path 0.1. Its epoch count is set by the time budget (a few timed steps first), at
   most 300: a budget, not a choice made on any score.
2. The distillation variants (auxiliary 6x192, 4 templates of side 64 per role, batch 256, lr
   2e-3, KL at temperature 1 plus cross-entropy), in this order while the budget lasts, seed 0
   then seed 1: `base` (KD weight 0.5, teacher logits cached, random factors, 12 epochs), `dense`
   (a plain 6x192 student, the same recipe: what the Kronecker constraint costs), `nearest-kron`
   (factors from the ancestry's nearest Kronecker sums), `kd1` (KD weight 1.0), `online` (shifts
   and flips, the teacher run on every augmented batch), `e3`, `e6`, `e24` (lengths), `ts` (each
   weight a sum of kron(T, S)), `matrices` (only the four block matrices templated); and the
   3-epoch screen: `dense-e3`, `nearest-kron-e3`, `kd1-e3`, `online-e3`, `ts-e3`, `matrices-e3`,
   each judged against `e3`.

Everything lands in `--out`: the files and `family.json` (each model's recipe, seconds, validation
and test accuracy, and what the budget left out); `--publish DIR` copies them after each step
(the ancestry, family.json, one tar per seed), so an interrupted run still returns what finished.
The dense control students are scored, not kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

import torch

from waveinit.configs import EVAL_BATCH_SIZE, DistillConfig, TrainConfig
from waveinit.io.datasets import Dataset, load_dataset, split_validation
from waveinit.io.files import load_learngene, save_learngene
from waveinit.io.storage import atomic_write_bytes
from waveinit.spec import resized
from waveinit.tasks import checkpoint_path, distill, load_vit, random_vit, save_vit, spec_for, train_vit
from waveinit.tasks.distillation import _teaching
from waveinit.training.engine import train
from waveinit.training.evaluation import evaluate
from waveinit.training.objectives import cross_entropy_loss

VALIDATION = 5000 / 60000  # of the training images, 500 per class
ANCESTRY = dict(depth=6, width=192, heads=3, patch=7)
ANCESTRY_RECIPE = dict(batch_size=256, lr=1e-3, weight_decay=0.05, augment=True, reprob=0.25, smoothing=0.1, drop_path=0.1)
DISTILL_RECIPE = dict(batch_size=256, lr=2e-3)
# The `base` recipe's settings that later became other defaults: kron(S, T) (the variants were
# run under it; `ts` is the one that changes it, and won: DistillConfig's default is "ts" now).
BASE_DISTILL = dict(order="st")
BASE_SETTINGS = {**dataclasses.asdict(DistillConfig()), **BASE_DISTILL}  # what a variant's "changes" are read against
VARIANTS = {  # name: (epochs, DistillConfig changes, dense student)
    "base": (12, {}, False),
    "dense": (12, {}, True),
    "nearest-kron": (12, {"init": "nearest-kron"}, False),
    "kd1": (12, {"kd_weight": 1.0}, False),
    "online": (12, {"cache_teacher": False}, False),
    "e3": (3, {}, False),
    "e6": (6, {}, False),
    "e24": (24, {}, False),
    "ts": (12, {"order": "ts"}, False),  # issue #16, item 5: kron(T, S)
    "matrices": (12, {"templated": "matrices"}, False),  # item 4: only qkv, proj, fc1, fc2 templated
}
# Protocol v4, item 3: the `ts` recipe through three auxiliary sizes at once (the teacher's plus
# these, `wave distill --sizes 2x64,4x128,6x192`), 9 epochs: the FLOPs of `ts`'s 12 (+0.4%).
VARIANTS["sizes"] = (9, {"order": "ts"}, False)
EXTRA_SIZES = {"sizes": ((2, 64), (4, 128))}  # variant -> (depth, width) of its auxiliaries beyond the teacher's shape
# The 3-epoch screen (protocol v3, 2026-12-04 amendment): each variant at `e3`'s budget, judged
# against `e3`, so that one CPU session compares them all; a winner then runs at 12 epochs.
VARIANTS.update({f"{name}-e3": (3, changes, dense) for name, (_, changes, dense) in list(VARIANTS.items())
                 if name in ("dense", "nearest-kron", "kd1", "online", "ts", "matrices")})


def splits(data: Dataset) -> tuple[Dataset, Dataset]:
    """(train part with the real test set, train part with the validation split as its test set)."""
    train_part, val_part = split_validation(data, VALIDATION, seed=0)
    return (dataclasses.replace(train_part, name=data.name), dataclasses.replace(val_part, name=data.name))


class Maker:
    def __init__(self, data: Dataset, out: Path, budget: float, device: str, tiny: bool):
        self.test_data, self.val_data = splits(data)
        self.out, self.device, self.tiny = out, device, tiny
        self.deadline = time.perf_counter() + budget
        self.record = {"validation": {"fraction": VALIDATION, "seed": 0, "images": len(self.val_data.test_labels)},
                       "train_images": len(self.val_data.train_labels), "device": device, "torch": torch.__version__,
                       "models": {}, "skipped": []}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def scores(self, model) -> dict:
        val = evaluate(model, self.val_data.test_images, self.val_data.test_labels, EVAL_BATCH_SIZE, self.device)
        test = evaluate(model, self.test_data.test_images, self.test_data.test_labels, EVAL_BATCH_SIZE, self.device)
        return {"validation_accuracy": val["accuracy"], "validation_loss": val["loss"], "test_accuracy": test["accuracy"]}

    def images_per_second(self, model, config: TrainConfig, loss_fn=cross_entropy_loss) -> float:
        """Training speed over a few steps after a warm-up (the model is a throwaway copy)."""
        data = self.val_data
        steps = 3 if self.tiny else 30
        train(model, data.train_images, data.train_labels, dataclasses.replace(config, max_steps=5), device=self.device, loss_fn=loss_fn)
        start = time.perf_counter()
        train(model, data.train_images, data.train_labels, dataclasses.replace(config, max_steps=steps), device=self.device, loss_fn=loss_fn)
        return steps * config.batch_size / (time.perf_counter() - start)

    def ancestry(self, share: float, epochs: int | None = None) -> None:
        """Train the ancestry for `epochs`, or for `share` of the time left (a rerun resumes its checkpoint)."""
        s = ANCESTRY if not self.tiny else dict(depth=2, width=64, heads=1, patch=7)
        spec = spec_for(self.val_data, s["depth"], s["width"], s["heads"], s["patch"])
        config = TrainConfig(epochs=1, seed=0, **ANCESTRY_RECIPE)
        rate = self.images_per_second(random_vit(spec, seed=1), config)
        per_epoch = len(self.val_data.train_labels) / rate * 1.15  # + the epoch's evaluation and checkpoint
        if epochs is None:
            epochs = 2 if self.tiny else max(1, min(300, int(share * self.left() / per_epoch)))
        print(f"ancestry {spec.depth}x{spec.width}: {rate:,.0f} images/s, {epochs} epochs", flush=True)
        path = self.out / "ancestry.safetensors"
        start = time.perf_counter()
        model = random_vit(spec, seed=0)
        result = train_vit(model, self.val_data, dataclasses.replace(config, epochs=epochs), out=path, device=self.device,
                           resume=checkpoint_path(path).exists(), on_progress=_epoch_lines,
                           provenance={"made_by": "benchmarks/make_family.py", "split": self.record["validation"]})
        scores = self.scores(model)
        _, provenance = load_vit(path)
        provenance.update(scores, data=self.test_data.name, validation=self.record["validation"])
        provenance.pop("test_loss", None)
        save_vit(path, model, provenance)
        self.teacher = model
        self.record["models"]["ancestry"] = {"path": path.name, "spec": spec.to_dict(), "epochs": epochs, "images_per_second": rate,
                                             "seconds": time.perf_counter() - start, "recipe": ANCESTRY_RECIPE, **scores,
                                             "history": [h["eval"]["accuracy"] for h in result.history]}

    def committed_ancestry(self, path: Path) -> None:
        """Reuse a committed ancestry (made by this script) instead of training one."""
        model, provenance = load_vit(path)
        if provenance.get("validation") != self.record["validation"]:
            raise SystemExit(f"{path} was not trained on this protocol's train split (its record: {provenance.get('validation')})")
        self.teacher = model.float()
        self.record["models"]["ancestry"] = {"path": str(path), "spec": model.spec.to_dict(), "epochs": provenance["config"]["epochs"],
                                             "reused": True, **self.scores(self.teacher)}

    def variant(self, name: str, seed: int) -> None:
        epochs, changes, dense = VARIANTS[name]
        epochs = min(epochs, 2) if self.tiny else epochs
        config = TrainConfig(epochs=epochs, seed=seed, **DISTILL_RECIPE, augment=changes.get("cache_teacher") is False)  # online: augmented
        settings = DistillConfig(templates=4, side=64, **{**BASE_DISTILL, **changes})
        key = f"{name}-s{seed}"
        estimate = self.distill_seconds(settings, config, dense)
        if estimate > self.left():
            self.record["skipped"].append(f"{key}: about {estimate:.0f} s, {self.left():.0f} s left")
            print(f"skipped {key}", flush=True)
            return
        start = time.perf_counter()
        path = self.out / f"{key}.safetensors"
        if dense:
            model = self.dense_student(config, settings, path)
        else:
            own = self.teacher.spec.plain()
            sizes = tuple(resized(own, d, w) for d, w in EXTRA_SIZES.get(name, ()) if (d, w) != (own.depth, own.width))  # --tiny: a 2x64 teacher
            result = distill(self.teacher, self.val_data, self.teacher.spec.plain(), config, settings, out=path, device=self.device,
                             resume=checkpoint_path(path).exists(), on_progress=_epoch_lines, sizes=sizes)
            model = result.model
            gene = load_learngene(path)
            gene.provenance.update(self.scores(model), data=self.test_data.name, validation=self.record["validation"],
                                   teacher_test_accuracy=self.record["models"]["ancestry"]["test_accuracy"])
            gene.provenance.pop("test_loss", None)
            save_learngene(path, gene)
        kept = path.with_suffix(".dense") if dense else path
        self.record["models"][key] = {"path": path.name, "epochs": epochs, "distill": dataclasses.asdict(settings), "dense": dense,
                                      "bytes": kept.stat().st_size if kept.exists() else None,
                                      "seconds": time.perf_counter() - start, "estimate_seconds": estimate, **self.scores(model)}
        print(f"{key}: validation {self.record['models'][key]['validation_accuracy']:.4f} "
              f"({self.record['models'][key]['seconds']:.0f} s)", flush=True)

    def distill_seconds(self, settings: DistillConfig, config: TrainConfig, dense: bool) -> float:
        if not hasattr(self, "distill_rate"):
            from waveinit.backends.torch import TemplatedViT

            _, _, loss_fn = _teaching(self.teacher, self.val_data, config, settings, self.device, 0)
            self.distill_rate = self.images_per_second(TemplatedViT(self.teacher.spec.plain(), 64, 4), config, loss_fn)
        slower = 1.0 if settings.cache_teacher else 1.5  # the teacher's forward on every batch
        return config.epochs * len(self.val_data.train_labels) / self.distill_rate * slower * 1.2 + 10

    def dense_student(self, config: TrainConfig, settings: DistillConfig, path: Path):
        _, _, loss_fn = _teaching(self.teacher, self.val_data, config, settings, self.device, 0)
        model = random_vit(self.teacher.spec.plain(), seed=config.seed)
        train(model, self.val_data.train_images, self.val_data.train_labels, config, loss_fn=loss_fn, device=self.device)
        save_vit(path.with_suffix(".dense"), model, {"made_by": "benchmarks/make_family.py", "task": "dense control", "data": self.test_data.name,
                               "validation": self.record["validation"], "config": dataclasses.asdict(config),
                               "distill": dataclasses.asdict(settings), **self.scores(model)})
        return model

    def save(self, publish: Path | None) -> None:
        """family.json, and with `publish`: a copy of the ancestry, family.json, and the other files
        in one tar per seed (each under 16 MiB)."""
        atomic_write_bytes(self.out / "family.json", (json.dumps(self.record, indent=2) + "\n").encode())
        if publish is None:
            return
        publish.mkdir(parents=True, exist_ok=True)
        for name in ("ancestry.safetensors", "family.json"):
            if (self.out / name).exists():
                shutil.copyfile(self.out / name, publish / f"{name}.tmp")
                (publish / f"{name}.tmp").replace(publish / name)
        for seed in (0, 1):
            files = sorted(self.out.glob(f"*-s{seed}.safetensors")) + sorted(self.out.glob(f"*-s{seed}.metrics.csv"))
            files += sorted(self.out.glob("ancestry.metrics.csv")) if seed == 0 else []
            with tarfile.open(publish / f"family-s{seed}.tar.tmp", "w") as tar:
                for f in files:
                    tar.add(f, arcname=f.name)
            (publish / f"family-s{seed}.tar.tmp").replace(publish / f"family-s{seed}.tar")


def _epoch_lines(progress) -> None:
    if progress.event == "epoch":
        print(f"epoch {progress.epoch + 1}/{progress.epochs}: train loss {progress.train_loss:.4f}, validation "
              f"{progress.eval['accuracy']:.4f}, {progress.images_per_second:,.0f} images/s, {progress.seconds_elapsed:,.0f} s", flush=True)


def screen_table(records: list[dict], baseline: str = "e3-s0") -> str:
    """The variants of `family.json` records, as a markdown table: validation accuracy (the
    reading), its difference from `baseline`'s, test accuracy (reported, never read), bytes."""
    models = {k: v for r in records for k, v in r["models"].items() if k != "ancestry"}
    base = models.get(baseline, {}).get("validation_accuracy")
    lines = ["| variant | epochs | changes | validation | vs " + baseline + " | test | bytes | seconds |", "|---" * 8 + "|"]
    for key, m in models.items():
        changes = [f"{k} {v}" for k, v in m["distill"].items() if BASE_SETTINGS[k] != v and k not in ("templates", "side")]
        changes = ", ".join(changes + (["dense student"] if m["dense"] else []))
        diff = f"{100 * (m['validation_accuracy'] - base):+.2f}" if base is not None else "-"
        nbytes = f"{m['bytes']:,}" if m.get("bytes") else "-"
        lines.append(f"| {key} | {m['epochs']} | {changes or '-'} | {100 * m['validation_accuracy']:.2f} | {diff} | "
                     f"{100 * m['test_accuracy']:.2f} | {nbytes} | {m['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["--report"]:  # make_family.py --report DIR/family.json ...: the variants' table
        print(screen_table([json.loads(Path(f).read_text()) for f in sys.argv[2:]]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=400.0, help="seconds for the whole run")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST's four .gz files (default: the system's)")
    parser.add_argument("--publish", type=Path, default=None, help="copy the results here after each step (the ancestry, "
                        "family.json and one tar per seed)")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--ancestry-epochs", type=int, default=None, help="fix the ancestry's epochs instead of a time budget")
    parser.add_argument("--ancestry-only", action="store_true", help="stop after the ancestry")
    parser.add_argument("--ancestry", type=Path, default=None, help="reuse this ancestry (e.g. the committed "
                        "benchmarks/assets/fashion-mnist-6x192.safetensors) instead of training one")
    parser.add_argument("--only", default=",".join(VARIANTS), help="the variants to run, comma-separated (default: all, in order)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated (default: 0,1)")
    parser.add_argument("--tiny", action="store_true", help="a 2x64 ancestry, 2 epochs each, on the CPU (the steps, not the numbers)")
    args = parser.parse_args()
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU visible: run with --tiny on a CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("fashion-mnist", data_dir=args.data_dir, subset=3000 if args.tiny else None)
    maker = Maker(data, args.out, args.budget, device, args.tiny)
    if args.ancestry is not None:
        maker.committed_ancestry(args.ancestry)
    else:
        maker.ancestry(share=0.6, epochs=args.ancestry_epochs)
    maker.save(args.publish)
    if args.ancestry_only:
        return 0
    names = args.only.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        print(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names:
            maker.variant(name, seed)
            maker.save(args.publish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
