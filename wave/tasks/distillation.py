"""Distil an ancestry into a learngene: WAVE's templated auxiliary (one size, or several
sharing one bank of templates), or TLEG's for comparison."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..backends.torch import TemplatedFamily, TemplatedViT, TLEGViT, ViT, dense_numpy
from ..configs import DistillConfig, TrainConfig
from ..errors import WaveError
from ..io.datasets import Dataset
from ..io.files import save_learngene, save_tleg
from ..learngene import Learngene, learngene_from_weights
from ..spec import MATRIX_ROLES, ROLE_NAMES, ROLES_BY_NAME, ViTSpec
from ..tleg import TLEGGene
from ..training.distributed import barrier, distributed_context, resolve_device
from ..training.engine import LossFn, TrainResult, train
from ..training.evaluation import evaluate
from ..training.recipe import with_state
from .models import _frozen, _keeping, _labels, _logging_metrics, _remove_checkpoint, _scores, check_fits, checkpoint_path, ema_path, teacher_kd_loss


@dataclass
class DistillResult:
    learngene: Learngene | TLEGGene  # what was saved at `out`
    model: TemplatedViT | TLEGViT  # the auxiliary model it was read from
    train: TrainResult
    teacher_eval: dict
    seconds: float


TLEGResult = DistillResult  # distill_tleg's result: the same fields


@dataclass(frozen=True)
class _Learngene:
    """What one kind of learngene changes in `_condense`: the auxiliary model, its optimizer
    groups, the settings it records, and how it becomes the file saved."""

    task: str  # the checkpoint's "task": a resume with the other kind is refused
    auxiliary: Callable  # (teacher, aux_spec, DistillConfig, seed) -> model
    groups: Callable  # (model, TrainConfig) -> AdamW parameter groups, or None for the engine's default
    settings: Callable  # DistillConfig -> the settings recorded (and fingerprinted)
    to_learngene: Callable  # (model, provenance) -> the learngene
    save: Callable  # (path, learngene) -> None
    loss: Callable = lambda loss_fn: loss_fn  # the distillation loss -> the model's (a family's: the mean over its members)


def _wave_groups(model: TemplatedViT, config: TrainConfig) -> list[dict]:
    # Weight decay on the templates only: decaying the scalers would just push the scale
    # (S * T is invariant under S/c, T*c) into the templates. Dense roles (templated
    # "matrices"): decay on the patch embedding and the classifier, as the engine's default
    # groups do for a plain ViT's matrices; none on vectors, tokens and position embeddings.
    templates, scalers = model.role_tensors()
    dense = model.dense_tensors()
    decayed = [p for name, p in dense.items() if len(ROLES_BY_NAME[name].axes) == 2 and ROLES_BY_NAME[name].stored != "token"]
    groups = [{"params": list(templates.values()), "weight_decay": config.weight_decay},
              {"params": list(scalers.values()), "weight_decay": 0.0},
              {"params": decayed, "weight_decay": config.weight_decay},
              {"params": [p for p in dense.values() if all(p is not q for q in decayed)], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


# (_auxiliary is defined below: looked up when a distillation runs)
_WAVE = _Learngene("distill", lambda *args: _auxiliary(*args), _wave_groups, asdict, lambda model, provenance: model.to_learngene(provenance),
                   save_learngene)
# TLEG: of DistillConfig, the temperature, KD weight and teacher cache apply (side and count are
# WAVE's); AdamW decays A's, B's and the shared weight matrices, not vectors, position embedding or
# class token: the engine's default groups.
_TLEG = _Learngene("distill-tleg", lambda teacher, spec, settings, seed: TLEGViT(spec, seed=seed), lambda model, config: None,
                   lambda d: {"temperature": d.temperature, "kd_weight": d.kd_weight, "cache_teacher": d.cache_teacher},
                   lambda model, provenance: model.to_gene({"method": "tleg", **provenance}), save_tleg)


def per_member(loss_fn: LossFn) -> LossFn:
    """A loss over a `TemplatedFamily`'s stacked logits (members, B, classes): the mean of
    `loss_fn` over its members, each against the same targets (the teacher's logits computed once)."""
    return lambda logits, batch, labels, indices: torch.stack([loss_fn(m, batch, labels, indices) for m in logits]).mean(0)


def _family_kind(sizes: tuple[ViTSpec, ...]) -> _Learngene:
    """The learngene of templates distilled through several auxiliary sizes at once (`TemplatedFamily`)."""
    def auxiliary(teacher: ViT, aux_spec: ViTSpec, d: DistillConfig, seed: int) -> TemplatedFamily:
        if d.templated != "all" or d.init != "random":
            raise WaveError("distilling through several sizes needs every role templated and random factors: use templated all, init random")
        return TemplatedFamily([aux_spec, *sizes], d.side, d.templates, seed, order=d.order)

    def groups(model: TemplatedFamily, config: TrainConfig) -> list[dict]:  # as _wave_groups: decay on the templates only
        scalers = [p for member in model.members for p in member.role_tensors()[1].values()]
        return [{"params": list(model.members[0].role_tensors()[0].values()), "weight_decay": config.weight_decay},
                {"params": scalers, "weight_decay": 0.0}]

    names = [f"{s.depth}x{s.width}" for s in sizes]
    return _Learngene("distill", auxiliary, groups, lambda d: {**asdict(d), "sizes": names}, lambda model, provenance: model.to_learngene(provenance),
                      save_learngene, per_member)


def distill(teacher: ViT, data: Dataset, aux_spec: ViTSpec, config: TrainConfig, distill_config: DistillConfig = DistillConfig(), *,
            out: str | Path, device: str = "auto", resume: bool = False, on_progress=None, provenance: dict | None = None,
            workers: int = 0, log_dir: str | Path | None = None, sizes: tuple[ViTSpec, ...] = ()) -> DistillResult:
    """Distil `teacher` into a learngene: train an auxiliary `TemplatedViT` of shape `aux_spec`
    by knowledge distillation on `data`, and save its templates and scalers at `out` (with a
    checkpoint `<out>.ckpt` each epoch, a row of `<out stem>.metrics.csv` and, with `log_dir`,
    TensorBoard event files). With `sizes`, the templates are trained through those auxiliaries
    too, every batch through every size (`TemplatedFamily`), each keeping its own scalers
    (`Learngene.auxiliaries`); the learngene's main size is the largest."""
    for spec in sizes:
        check_fits(spec, data, "auxiliary model")
    kind = _family_kind(tuple(sizes)) if sizes else _WAVE
    return _condense(kind, teacher, data, aux_spec, config, distill_config, out=out, device=device, resume=resume,
                     on_progress=on_progress, provenance=provenance, workers=workers, log_dir=log_dir)


def distill_tleg(teacher: ViT, data: Dataset, config: TrainConfig, distill_config: DistillConfig = DistillConfig(), *,
                 out: str | Path, device: str = "auto", resume: bool = False, on_progress=None, provenance: dict | None = None,
                 workers: int = 0, log_dir: str | Path | None = None) -> DistillResult:
    """Distil `teacher` into a TLEG learngene (Xia et al., AAAI 2024; `tleg.py`): train an
    auxiliary `TLEGViT` of the teacher's own depth and width (its plain spec) by knowledge
    distillation on `data`, with WAVE's loss and engine, and save A, B and the shared parameters
    at `out` (the same files beside it as `distill`). Of `distill_config`, the temperature, KD
    weight and teacher cache apply."""
    return _condense(_TLEG, teacher, data, teacher.spec.plain(), config, distill_config, out=out, device=device, resume=resume,
                     on_progress=on_progress, provenance=provenance, workers=workers, log_dir=log_dir)


def _condense(kind: _Learngene, teacher: ViT, data: Dataset, aux_spec: ViTSpec, config: TrainConfig, distill_config: DistillConfig, *,
              out, device, resume, on_progress, provenance, workers, log_dir) -> DistillResult:
    """`distill` and `distill_tleg`: the auxiliary model of `kind` trained by knowledge
    distillation from `teacher`, saved as a learngene at `out` (and its EMA beside it, if any)."""
    check_fits(teacher.spec, data, "teacher")
    check_fits(aux_spec, data, "auxiliary model")
    start = time.perf_counter()
    teacher, teacher_eval, loss_fn = _teaching(teacher, data, config, distill_config, device, workers)
    loss_fn = kind.loss(loss_fn)
    model = kind.auxiliary(teacher, aux_spec, distill_config, config.seed)
    settings = kind.settings(distill_config)
    result = train(
        model, data.train_images, data.train_labels, config,
        loss_fn=loss_fn, param_groups=kind.groups(model, config), device=device, checkpoint=checkpoint_path(out), resume=resume,
        eval_data=(data.test_images, data.test_labels), on_progress=_logging_metrics(out, resume, on_progress, log_dir), workers=workers,
        meta={"task": kind.task, "data": data.name, "train_size": len(data.train_labels), "spec": aux_spec.to_dict(),
              "teacher": teacher.spec.to_dict(), "teacher_checksum": _checksum(teacher), "distill": settings},
    )
    learngene = kind.to_learngene(model, _distilled(provenance, teacher, teacher_eval, data, config, settings, result, start))
    beside = ()
    if result.ema is not None:  # the moving average of the auxiliary's weights: <out stem>.ema.safetensors
        ema_eval = result.history[-1].get("ema_eval") if result.history else None
        averaged = kind.to_learngene(with_state(model, result.ema), {**learngene.provenance, **_scores(ema_eval),
                                                                     "ema_decay": config.model_ema_decay})
        beside = ((ema_path(out), averaged),)
    _save_on_rank0(out, kind.save, learngene, beside)
    return DistillResult(learngene, model, result, teacher_eval, time.perf_counter() - start)


def _auxiliary(teacher: ViT, aux_spec: ViTSpec, distill_config: DistillConfig, seed: int) -> TemplatedViT:
    """The auxiliary model a distillation starts from: random factors, or the nearest Kronecker
    sums of the teacher's weights (`DistillConfig.init`)."""
    side, n = distill_config.side, distill_config.templates
    dense_roles = [r for r in ROLE_NAMES if r not in MATRIX_ROLES] if distill_config.templated == "matrices" else []
    if distill_config.init == "random":
        return TemplatedViT(aux_spec, side, n, seed=seed, order=distill_config.order, dense_roles=dense_roles)
    if dense_roles:
        raise WaveError("init nearest-kron starts every role from the teacher's Kronecker sums: it needs templated all; use init random")
    if aux_spec != teacher.spec.plain():
        raise WaveError(f"init nearest-kron starts the auxiliary from the teacher's own weights, so it needs the teacher's shape "
                        f"({teacher.spec.depth}x{teacher.spec.width}): got {aux_spec.depth}x{aux_spec.width}; use init random")
    gene = learngene_from_weights(dense_numpy(teacher.state_dict()), teacher.spec, side, n, distill_config.order)
    return TemplatedViT.from_factors(aux_spec, side, _live_terms(gene.templates, seed), gene.scalers, gene.order)


def _live_terms(templates: dict, seed: int) -> dict:
    """`templates` with each all-zero term (beyond its role's rank, where the scalers are zero
    too) given small random entries: with zero scalers the weights stay as they are, and the
    term can learn (a zero template times zero scalers gets no gradient)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in templates.items():
        t = np.array(t, dtype=np.float32)
        dead = ~t.reshape(len(t), -1).any(axis=1)  # (N,) terms that are all zero
        t[dead] = 0.02 * rng.standard_normal((int(dead.sum()), *t.shape[1:]))
        out[name] = t
    return out


def _teaching(teacher: ViT, data: Dataset, config: TrainConfig, distill_config: DistillConfig, device: str,
              workers: int) -> tuple[ViT, dict, LossFn]:
    """What distilling from `teacher` needs, the same for every learngene: the teacher frozen on
    the device, its test scores, and the distillation loss against it."""
    dev = resolve_device(device)
    teacher = _frozen(teacher, dev)
    teacher_eval = evaluate(teacher, data.test_images, data.test_labels, config.batch_size, dev, workers)
    loss_fn = teacher_kd_loss(teacher, data.train_images, distill_config.temperature, distill_config.kd_weight,
                              config.batch_size, dev, cache=distill_config.cache_teacher, workers=workers, smoothing=config.smoothing,
                              inputs_change=config.changes_inputs)
    return teacher, teacher_eval, loss_fn


def _distilled(provenance: dict | None, teacher: ViT, teacher_eval: dict, data: Dataset, config: TrainConfig, settings: dict,
               result: TrainResult, start: float) -> dict:
    """The provenance of a distilled learngene (`config` and `train_size` are what the bench's
    `training_compute` counts), over the caller's `provenance`."""
    final = result.history[-1]["eval"] if result.history else {}
    return {
        **(provenance or {}),
        "teacher_spec": teacher.spec.to_dict(),
        "teacher_test_accuracy": teacher_eval["accuracy"],
        "data": data.name,
        **_labels(data),
        "train_size": int(len(data.train_labels)),
        "epochs": config.epochs,
        "steps": result.steps,
        "processes": distributed_context()[1],
        "config": asdict(config),
        "distill": settings,
        "test_accuracy": final.get("accuracy"),
        "test_loss": final.get("loss"),
        "seconds": time.perf_counter() - start,
    }


def _save_on_rank0(out: str | Path, save, gene, beside: tuple = ()) -> None:
    """Rank 0 writes the learngene file (and the (path, learngene) pairs `beside` it), the other
    ranks wait; an interrupt meanwhile keeps the complete checkpoint."""
    with _keeping(checkpoint_path(out)):
        if distributed_context()[0] == 0:
            for path, other in beside:
                save(path, other)
            save(out, gene)
        barrier()
    _remove_checkpoint(out)


def _checksum(model: torch.nn.Module) -> str:
    """A fingerprint of a model's weights (device-independent), so a resume with another teacher is refused."""
    digest = hashlib.sha256()
    for name, p in model.state_dict().items():
        digest.update(name.encode())
        digest.update(p.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()


