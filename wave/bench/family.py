"""The family of a bench: what every size is initialised from, made (or given) once on the whole
training set, with what each cost.

- the ancestry: a strong plain ViT, trained long by its own stage (or given with --ancestry);
  its cost is reported apart (in the paper it is a model the user already has);
- the capacity study: learngenes of several sizes (templates per role, template side,
  distillation length) distilled from it, each scored by its auxiliary model; the bench's
  learngene is the one the rule of `BenchConfig` picks (or the one given with --learngene);
- TLEG's learngene, distilled with the same loss and budget as the chosen learngene;
- the nearest-Kronecker templates of the ancestry (no data), as many as the learngene's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.torch import TemplatedViT, ViT, dense_numpy
from ..configs import EVAL_BATCH_SIZE, AncestryConfig, DistillConfig, TrainConfig
from ..errors import WaveError
from ..flops import forward_flops, train_flops
from ..io.datasets import Dataset
from ..io.files import load_learngene, load_model, load_tleg, save_learngene
from ..io.storage import atomic_write_bytes
from ..learngene import Learngene, learngene_from_weights
from ..spec import ViTSpec, check_width, resized
from ..tasks import check_fits, distill, distill_tleg, load_vit, spec_for, train_ancestry
from ..tleg import TLEGGene
from ..training.distributed import resolve_device
from ..training.evaluation import evaluate
from .config import BenchConfig
from .records import training_compute


@dataclass
class Family:
    """What every size is initialised from, made (or given) once."""

    ancestry: ViT
    ancestry_path: Path
    learngene: Learngene
    learngene_path: Path
    nearest_kron: Learngene  # templates by nearest_kron of the ancestry, shaped like the learngene's
    nearest_kron_path: Path
    tleg: TLEGGene | None  # None: not asked for (tleg not among the methods)
    tleg_path: Path | None
    record: dict = field(default_factory=dict)  # how each was made, and what it cost


def make_family(config: BenchConfig, data: Dataset, out: Path, ancestry: Path | None, learngene: Path | None,
                family_bytes: int, with_tleg: bool, device: str, log: Callable[[str], None], held_out: Dataset | None = None) -> Family:
    """Load the given ancestry and learngene, or make them in `out` (a rerun reuses them) on
    `data` (the whole training set); `family_bytes`: the dense float32 bytes of the bench's
    sizes, the yardstick of the learngene's size. `held_out`: the validation split no model of
    the family sees (its test images), on which the capacity study then chooses."""
    model, ancestry, record = _ancestry(config, data, out, ancestry, device, log, held_out)
    if learngene is None:
        record["capacity"] = capacity_study(config, data, out, model, ancestry, record["ancestry"], family_bytes, device, log, held_out)
        chosen = next(c for c in record["capacity"] if c["chosen"])
        learngene, epochs = Path(chosen["path"]), chosen["epochs"]
    else:
        record["capacity"] = []
        epochs = None
    gene, record["learngene"] = _learngene(learngene, data, epochs, model.spec)
    epochs = epochs or gene.provenance.get("epochs")
    nearest = learngene_from_weights(dense_numpy(model.state_dict()), model.spec, gene.side, gene.counts)
    nearest.provenance.update(teacher=str(ancestry.resolve()), data=record["ancestry"]["data"] or data.name)
    nearest_path = out / "nearest_kron.safetensors"
    save_learngene(nearest_path, nearest)
    record["nearest_kron"] = {
        "path": str(nearest_path), "how": "nearest_kron of the ancestry's weights, all layers at once (no data, no training)",
        "relative_error": nearest.provenance["relative_error"], "compute": 0, "bytes": nearest_path.stat().st_size,
    }
    tleg = tleg_path = None
    if with_tleg:
        if not epochs:
            raise WaveError(f"the learngene {learngene} does not record its distillation epochs, TLEG's budget: give one made by "
                            f"wave distill, or leave tleg out of --methods")
        tleg, tleg_path, record["tleg"] = _tleg(config, data, out, model, ancestry, epochs, device, log)
    return Family(model, ancestry, gene, learngene, nearest, nearest_path, tleg, tleg_path, record)


# ----------------------------------------------------------------------------- the ancestry

def ancestry_recipe(config: BenchConfig) -> AncestryConfig:
    return AncestryConfig(depth=config.ancestry_depth, width=config.ancestry_width, epochs=config.ancestry_epochs, lr=config.ancestry_lr)


def _ancestry(config, data, out, path, device, log, held_out: Dataset | None = None) -> tuple[ViT, Path, dict]:
    if path is not None:
        model, provenance = load_vit(path)
        check_fits(model.spec, data, f"ancestry {path}")
        how = f"given: {path}"
    else:
        path = out / "ancestry.safetensors"
        recipe = ancestry_recipe(config)
        if not path.exists():
            log(f"training the ancestry ({recipe.depth}x{recipe.width}, {recipe.epochs} epochs on {len(data.train_labels):,} images) -> {path}")
            train_ancestry(data, recipe, out=path, batch_size=config.ancestry_batch_size, patch=config.patch,
                           heads=recipe.width // config.side, device=device, resume=True, provenance={"made_by": "wave bench"},
                           augment=config.ancestry_augment)
        model, provenance = load_vit(path)
        shifts = ", random shifts and flips" if config.ancestry_augment else ""
        how = (f"trained by wave bench: random init, {recipe.epochs} epochs, batch {config.ancestry_batch_size}, "
               f"lr {recipe.lr:g}{shifts}")
    model.to(resolve_device(device)).eval()
    record = {"ancestry": {
        "path": str(path), "how": how, "spec": model.spec.to_dict(), "params": model.spec.num_params(), "data": provenance.get("data"),
        "test_accuracy": evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, device)["accuracy"],
        "val_accuracy": evaluate(model, held_out.test_images, held_out.test_labels, EVAL_BATCH_SIZE, device)["accuracy"] if held_out else None,
        "compute": training_compute(provenance), "flops": training_flops(training_compute(provenance), model.spec),
        "train_images": provenance.get("train_size"), "seconds": provenance.get("seconds"),
        "bytes": path.stat().st_size if path.is_file() else None,
    }}
    return model, path, record


def _ancestry_spec(config: BenchConfig, data: Dataset) -> ViTSpec:
    """The ancestry the bench trains: heads as wide as the templates, so they stay head-aligned."""
    check_width(config.ancestry_width, config.side)
    return spec_for(data, config.ancestry_depth, config.ancestry_width, config.ancestry_width // config.side, config.patch)


# ----------------------------------------------------------------------------- the learngene's capacity

def candidate_path(out: Path, templates: int, side: int, epochs: int) -> Path:
    return out / "learngenes" / f"t{templates}-s{side}-e{epochs}.safetensors"


def capacity_study(config: BenchConfig, data: Dataset, out: Path, ancestry: ViT, ancestry_path: Path, ancestry_record: dict,
                   family_bytes: int, device: str, log: Callable[[str], None], held_out: Dataset | None = None) -> list[dict]:
    """Distil every candidate of `config.capacity` (each kept as a file: a rerun reuses it) and
    pick the bench's learngene by the rule written in `BenchConfig`, reading each auxiliary's
    accuracy on `held_out` (the family's validation split) when given, else on the test set
    (the older protocol). One record per candidate; its "score" is the accuracy the rule read."""
    on = "val_accuracy" if held_out is not None else "test_accuracy"
    rows = []
    for templates, side, epochs in config.capacity:
        path = candidate_path(out, templates, side, epochs)
        if not path.exists():
            log(f"capacity study: distilling {templates} templates of {side}x{side} per role, {epochs} epochs -> {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            aux = resized(ancestry.spec.plain(), ancestry.spec.depth, ancestry.spec.width, side=side)
            distill(ancestry, data, aux, TrainConfig(epochs=epochs, batch_size=config.distill_batch_size, lr=config.distill_lr),
                    DistillConfig(side=side, templates=templates), out=path, device=device, resume=True,
                    provenance={"teacher": str(ancestry_path.resolve()), "made_by": "wave bench"})
        gene = load_learngene(path)
        scores = {"test_accuracy": gene.provenance.get("test_accuracy"),
                  "val_accuracy": auxiliary_accuracy(gene, held_out, device) if held_out is not None else None}
        rows.append({"templates": templates, "side": side, "epochs": epochs, "path": str(path), "bytes": path.stat().st_size,
                     "template_params": gene.num_template_params(), **scores, "chosen_on": on, "score": scores[on],
                     "gap": None if scores[on] is None else ancestry_record[on] - scores[on], "compute": training_compute(gene.provenance),
                     "seconds": gene.provenance.get("seconds"), "fraction_of_family": path.stat().st_size / family_bytes, "chosen": False})
    pick = _kept_choice(out, rows) or choose_learngene(rows, config)
    pick["chosen"] = True
    atomic_write_bytes(out / "learngene-choice.json", (json.dumps({k: pick[k] for k in ("templates", "side", "epochs")}) + "\n").encode())
    log(f"capacity study: the learngene is {pick['templates']} templates of {pick['side']}x{pick['side']} per role, {pick['epochs']} epochs "
        f"(auxiliary {100 * pick['score']:.2f}%, ancestry {100 * ancestry_record[on]:.2f}% on the {'validation' if held_out is not None else 'test'} images, "
        f"{pick['bytes']:,} bytes)")
    return rows


def auxiliary_accuracy(gene: Learngene, data: Dataset, device: str) -> float:
    """The accuracy on `data`'s test images of a learngene's auxiliary model."""
    model = TemplatedViT.from_learngene(gene).to(resolve_device(device))
    return evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, device)["accuracy"]


def _kept_choice(out: Path, rows: list[dict]) -> dict | None:
    """The candidate an earlier run of this bench chose: its cells were made from it, so a rerun
    with other sizes (other family bytes) keeps it."""
    path = out / "learngene-choice.json"
    if not path.exists():
        return None
    kept = json.loads(path.read_text())
    return next((r for r in rows if all(r[k] == kept[k] for k in ("templates", "side", "epochs"))), None)


def choose_learngene(rows: list[dict], config: BenchConfig) -> dict:
    """The candidate of the bench's template side, at most `capacity_bytes_fraction` of the
    family's bytes, whose auxiliary is within `capacity_tolerance` of the ancestry at the
    fewest bytes (ties: fewer distillation epochs); none within it: the most accurate of those
    small enough; none small enough: the smallest."""
    own = [r for r in rows if r["side"] == config.side and r["score"] is not None]
    small = [r for r in own if r["fraction_of_family"] <= config.capacity_bytes_fraction]
    close = [r for r in small if r["gap"] is not None and r["gap"] <= config.capacity_tolerance]
    if close:
        return min(close, key=lambda r: (r["bytes"], r["epochs"]))
    if small:
        return max(small, key=lambda r: (r["score"], -r["bytes"], -r["epochs"]))
    return min(own, key=lambda r: (r["bytes"], r["epochs"]))


def _learngene(path: Path, data: Dataset, epochs: int | None, teacher: ViTSpec) -> tuple[Learngene, dict]:
    gene = load_learngene(path)
    check_fits(gene.spec, data, f"learngene {path}")
    how = (f"distilled by wave bench ({epochs} epochs, auxiliary model of the ancestry's size), chosen by the capacity study"
           if epochs is not None else f"given: {path}")
    compute = training_compute(gene.provenance)
    return gene, {
        "path": str(path), "how": how, "spec": gene.spec.to_dict(), "side": gene.side, "templates": gene.counts,
        "template_params": gene.num_template_params(), "scaler_params": gene.num_scaler_params(),
        "test_accuracy": gene.provenance.get("test_accuracy"), "compute": compute,
        "teacher_forward": _teacher_passes(gene.provenance) if compute is not None else None,
        "flops": training_flops(compute, gene.spec, _teacher_passes(gene.provenance), teacher),
        "train_images": gene.provenance.get("train_size"), "seconds": gene.provenance.get("seconds"), "bytes": path.stat().st_size,
    }


def _teacher_passes(provenance: dict) -> int | None:
    """The teacher's forward passes in a distillation: its logits once per training image when
    cached (the default), else once per training pass."""
    size = provenance.get("train_size")
    if not size:
        return None
    return size if provenance.get("distill", {}).get("cache_teacher", True) else size * provenance.get("epochs", 1)


def training_flops(compute: int | None, student: ViTSpec, teacher_forward: int | None = None, teacher: ViTSpec | None = None) -> float | None:
    """A training run's FLOPs (`waveinit.flops`): its image passes at the student's training cost
    (a templated student counted as the dense model it computes: forming its weights from the
    templates once a step is not counted), plus a teacher's forward passes, if any."""
    if compute is None:
        return None
    return compute * train_flops(student) + (teacher_forward * forward_flops(teacher) if teacher_forward else 0)


# ----------------------------------------------------------------------------- TLEG

def _tleg(config, data, out, ancestry: ViT, ancestry_path: Path, epochs: int, device, log) -> tuple[TLEGGene, Path, dict]:
    path = out / f"tleg-e{epochs}.safetensors"
    if not path.exists():
        log(f"distilling TLEG's learngene (A + l/(L-1) B per layer parameter, {epochs} epochs, as the learngene) -> {path}")
        distill_tleg(ancestry, data, TrainConfig(epochs=epochs, batch_size=config.distill_batch_size, lr=config.distill_lr), DistillConfig(),
                     out=path, device=device, resume=True, provenance={"teacher": str(ancestry_path.resolve()), "made_by": "wave bench"})
    gene = load_tleg(path)
    compute = training_compute(gene.provenance)
    return gene, path, {
        "path": str(path), "how": f"distilled by wave bench ({epochs} epochs: the learngene's loss and budget)",
        "params": gene.num_params(), "test_accuracy": gene.provenance.get("test_accuracy"), "compute": compute,
        "teacher_forward": _teacher_passes(gene.provenance) if compute is not None else None,
        "flops": training_flops(compute, gene.spec, _teacher_passes(gene.provenance), ancestry.spec),
        "seconds": gene.provenance.get("seconds"), "bytes": path.stat().st_size,
    }


# ----------------------------------------------------------------------------- before any work

def planned_family(config: BenchConfig, data: Dataset, out: Path, ancestry: Path | None, learngene: Path | None) -> tuple[ViTSpec, int]:
    """(ancestry spec, template side) of the family `make_family` will give, read without making
    it; WaveError now, not after an hour, for an ancestry the bench cannot use."""
    made = out / "ancestry.safetensors"
    spec = load_model(ancestry or made).spec if ancestry is not None or made.exists() else _ancestry_spec(config, data)
    if spec.dist_token:
        raise WaveError(f"the bench compares plain ViTs, and the ancestry {ancestry or made} has DeiT's distillation token: "
                        f"give a plain ViT as --ancestry")
    gene = load_learngene(learngene) if learngene is not None else None
    if gene is not None and gene.spec.layer_norm_eps != spec.layer_norm_eps:
        raise WaveError(f"the learngene {learngene} uses LayerNorm eps {gene.spec.layer_norm_eps:g}, the ancestry "
                        f"{spec.layer_norm_eps:g}: give a learngene distilled from this ancestry, or leave --learngene out")
    return spec, gene.side if gene is not None else config.side
