"""The family of a bench: the ancestry, its learngene and its nearest-Kronecker templates, made
(or given) once and shared by every size, with what each cost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.torch import ViT, dense_numpy
from ..configs import EVAL_BATCH_SIZE, AncestryConfig, DistillConfig, TrainConfig
from ..errors import WaveError
from ..io.datasets import Dataset
from ..io.files import load_learngene, load_model, save_learngene
from ..learngene import Learngene, learngene_from_weights
from ..spec import ViTSpec, check_width
from ..tasks import check_fits, distill, load_vit, spec_for, train_ancestry
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
    record: dict = field(default_factory=dict)  # how each was made, and what it cost


def make_family(config: BenchConfig, data: Dataset, out: Path, ancestry: Path | None, learngene: Path | None,
                device: str, log: Callable[[str], None]) -> Family:
    """Load the given ancestry and learngene, or make them in `out` (a rerun reuses them), and
    take the nearest-Kronecker templates of the ancestry."""
    model, ancestry, record = _ancestry(config, data, out, ancestry, device, log)
    gene, learngene, record["learngene"] = _learngene(config, data, out, learngene, model, ancestry, device, log)
    nearest = learngene_from_weights(dense_numpy(model.state_dict()), model.spec, gene.side, gene.counts)
    nearest.provenance.update(teacher=str(ancestry.resolve()), data=record["ancestry"]["data"] or data.name)
    nearest_path = out / "nearest_kron.safetensors"
    save_learngene(nearest_path, nearest)
    record["nearest_kron"] = {
        "path": str(nearest_path), "how": "nearest_kron of the ancestry's weights, all layers at once (no data, no training)",
        "relative_error": nearest.provenance["relative_error"], "compute": 0, "bytes": nearest_path.stat().st_size,
    }
    return Family(model, ancestry, gene, learngene, nearest, nearest_path, record)


def _ancestry(config, data, out, path, device, log) -> tuple[ViT, Path, dict]:
    if path is not None:
        model, provenance = load_vit(path)
        check_fits(model.spec, data, f"ancestry {path}")
        how = f"given: {path}"
    else:
        path = out / "ancestry.safetensors"
        if not path.exists():
            recipe = AncestryConfig(depth=config.ancestry_depth, width=config.ancestry_width, epochs=config.ancestry_epochs,
                                    lr=config.ancestry_lr)
            log(f"training the ancestry ({recipe.depth}x{recipe.width}, {recipe.epochs} epochs) -> {path}")
            train_ancestry(data, recipe, out=path, batch_size=config.batch_size, patch=config.patch, heads=recipe.width // config.side,
                           device=device, resume=True, provenance={"made_by": "wave bench"})
        model, provenance = load_vit(path)
        how = f"trained by wave bench (train_vit, {config.ancestry_epochs} epochs, lr {config.ancestry_lr:g})"
    model.to(resolve_device(device)).eval()
    record = {"ancestry": {
        "path": str(path), "how": how, "spec": model.spec.to_dict(), "params": model.spec.num_params(), "data": provenance.get("data"),
        "test_accuracy": evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, device)["accuracy"],
        "compute": training_compute(provenance), "train_images": provenance.get("train_size"), "seconds": provenance.get("seconds"),
        "bytes": path.stat().st_size if path.is_file() else None,
    }}
    return model, path, record


def _ancestry_spec(config: BenchConfig, data: Dataset) -> ViTSpec:
    """The ancestry the bench trains: heads as wide as the templates."""
    check_width(config.ancestry_width, config.side)
    return spec_for(data, config.ancestry_depth, config.ancestry_width, config.ancestry_width // config.side, config.patch)


def _learngene(config, data, out, path, ancestry: ViT, ancestry_path: Path, device, log) -> tuple[Learngene, Path, dict]:
    if path is not None:
        gene = load_learngene(path)
        check_fits(gene.spec, data, f"learngene {path}")
        how = f"given: {path}"
    else:
        path = out / "learngene.safetensors"
        if not path.exists():
            log(f"distilling the ancestry into {config.templates} templates of {config.side}x{config.side} per role "
                f"({config.distill_epochs} epochs) -> {path}")
            distill(ancestry, data, ancestry.spec.plain(), TrainConfig(epochs=config.distill_epochs, batch_size=config.batch_size, lr=config.distill_lr),
                    DistillConfig(side=config.side, templates=config.templates), out=path, device=device, resume=True,
                    provenance={"teacher": str(ancestry_path.resolve()), "made_by": "wave bench"})
        gene = load_learngene(path)
        how = f"distilled by wave bench ({config.distill_epochs} epochs, lr {config.distill_lr:g}, auxiliary model of the ancestry's size)"
    compute = training_compute(gene.provenance)
    return gene, path, {
        "path": str(path), "how": how, "spec": gene.spec.to_dict(), "side": gene.side, "templates": gene.counts,
        "template_params": gene.num_template_params(), "scaler_params": gene.num_scaler_params(),
        "test_accuracy": gene.provenance.get("test_accuracy"), "compute": compute,
        "teacher_forward": gene.provenance.get("train_size") if compute is not None else None,  # the teacher's logits, cached once
        "train_images": gene.provenance.get("train_size"), "seconds": gene.provenance.get("seconds"), "bytes": path.stat().st_size,
    }


def planned_family(config: BenchConfig, data: Dataset, out: Path, ancestry: Path | None, learngene: Path | None) -> tuple[ViTSpec, int]:
    """(ancestry spec, template side) of the family `make_family` will give, read without making
    it; WaveError now, not after an hour, for an ancestry the bench cannot use."""
    made = out / "ancestry.safetensors"
    spec = load_model(ancestry or made).spec if ancestry is not None or made.exists() else _ancestry_spec(config, data)
    if spec.dist_token:
        raise WaveError(f"the bench compares plain ViTs, and the ancestry {ancestry or made} has DeiT's distillation token: "
                        f"give a plain ViT as --ancestry")
    made = out / "learngene.safetensors"
    gene = load_learngene(learngene or made) if learngene is not None or made.exists() else None
    if gene is not None and gene.spec.layer_norm_eps != spec.layer_norm_eps:
        raise WaveError(f"the learngene {learngene or made} uses LayerNorm eps {gene.spec.layer_norm_eps:g}, the ancestry "
                        f"{spec.layer_norm_eps:g}: give a learngene distilled from this ancestry, or leave --learngene out")
    return spec, gene.side if gene is not None else config.side
