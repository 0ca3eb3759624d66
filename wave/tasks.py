"""The steps behind the commands, with PyTorch: train a plain ViT (an ancestry, or any model),
distil an ancestry into a learngene (WAVE's, or TLEG's for comparison), and fit a spawned
model's scalers.

Each step takes a Dataset, a model or learngene, and its config from `configs.py`; it trains
with the engine (`training/`) and writes its file through `io/`. The CLI, the bench, the
examples and `waveinit.spawn` all call these functions.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .backends.torch import TemplatedFamily, TemplatedViT, TLEGViT, ViT, dense_numpy, load_state_dict
from .configs import COMMAND_TRAIN, DEPTH_RULES, EVAL_BATCH_SIZE, AncestryConfig, DistillConfig, SpawnConfig, TrainConfig
from .errors import WaveError
from .io.datasets import Dataset
from .io.files import load_model, save_learngene, save_model, save_tleg
from .io.metrics import MetricsLog, metrics_path
from .learngene import Learngene, learngene_from_weights
from .spawning import layer_positions, spawn_dense, spawn_factors
from .spec import MATRIX_ROLES, ROLE_NAMES, ROLES_BY_NAME, ViTSpec, resized
from .tleg import TLEGGene
from .training.batches import batch_source
from .training.distributed import barrier, distributed_context, resolve_device
from .training.engine import LossFn, TrainResult, train
from .training.evaluation import evaluate, predict_logits
from .training.interrupts import Interrupted
from .training.objectives import cross_entropy_loss, distillation_loss, smoothed
from .training.recipe import with_state

# ----------------------------------------------------------------------------- models for data


def default_patch(image_size: int) -> int:
    """A 4x4 grid of patches: patch 2 for 8x8 digits, 7 for 28x28 Fashion-MNIST."""
    if image_size % 4:
        raise WaveError(f"no default patch size for {image_size}x{image_size} images: pass --patch with a divisor of {image_size}")
    return image_size // 4


_FRESH = ViTSpec(depth=1, width=64)  # what a new model is derived from: heads of width 64, as timm's ViTs have


def spec_for(data: Dataset, depth: int, width: int, heads: int | None = None, patch: int | None = None) -> ViTSpec:
    """The ViT of the given depth and width for `data`'s images and classes (`spec.resized`'s
    head rule: heads of width 64 unless given)."""
    patch = patch or default_patch(data.image_size)
    if data.image_size % patch:
        raise WaveError(f"patch size {patch} does not divide the {data.image_size}x{data.image_size} images of {data.name}: "
                        f"pass --patch with a divisor of {data.image_size}")
    return resized(_FRESH, depth, width, heads, patch_size=patch, image_size=data.image_size, channels=data.channels,
                   num_classes=data.num_classes)


def check_fits(spec: ViTSpec, data: Dataset, what: str) -> None:
    """The model must take the data's images and predict its classes."""
    if (spec.image_size, spec.channels, spec.num_classes) != (data.image_size, data.channels, data.num_classes):
        raise WaveError(
            f"the {what} takes {spec.channels}x{spec.image_size}x{spec.image_size} images and {spec.num_classes} classes, "
            f"{data.name} has {data.channels}x{data.image_size}x{data.image_size} and {data.num_classes}: use data that matches the {what}"
        )


def load_vit(path: str | Path, heads: int | None = None, revision: str | None = None) -> tuple[ViT, dict]:
    """A plain ViT (and its provenance) from a model file, a timm-keyed safetensors state dict, a
    Hugging Face or timm folder, or a Hub model name (`io.files.load_model`)."""
    model_file = load_model(path, heads=heads, revision=revision)
    return load_state_dict(ViT(model_file.spec), model_file.state_dict), model_file.provenance


def random_vit(spec: ViTSpec, seed: int) -> ViT:
    """A ViT with timm's random initialisation, drawn from `seed`."""
    torch.manual_seed(seed)
    return ViT(spec)


def save_vit(path: str | Path, model: ViT, provenance: dict) -> None:
    """Rank 0 writes the model file; the other ranks wait until it is there."""
    if distributed_context()[0] == 0:
        save_model(path, dense_numpy(model.state_dict()), model.spec, provenance)
    barrier()


def checkpoint_path(out: str | Path) -> Path:
    """The training checkpoint that belongs to the output file `out`: `<out>.ckpt`."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def _logging_metrics(out: str | Path, resume: bool, on_progress, log_dir: str | Path | None = None):
    """`on_progress` that also writes each finished epoch to the metrics file beside `out`, and
    to TensorBoard event files in `log_dir` if given (the engine calls it on rank 0 only, so only
    rank 0 writes)."""
    log = MetricsLog(metrics_path(out), resume)
    board = _tensorboard(log_dir) if log_dir is not None else None

    def report(progress):
        if progress.event == "epoch" and progress.record is not None:
            log.add(progress.record)
            if board is not None:
                board(progress.record)
        if on_progress is not None:
            on_progress(progress)

    return report


def _tensorboard(log_dir: str | Path):
    """A function writing one finished epoch (an entry of the engine's history) as TensorBoard
    scalars at step = epoch: train/loss, eval/loss, eval/top1 and eval/top5 (%), lr."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise WaveError("--log-dir writes TensorBoard event files, which needs tensorboard: pip install 'waveinit[tensorboard]'") from None
    writer = SummaryWriter(str(log_dir))

    def write(record: dict) -> None:
        epoch, evaluation = int(record["epoch"]), record.get("eval") or {}
        writer.add_scalar("train/loss", record["train_loss"], epoch)
        writer.add_scalar("lr", record["lr"], epoch)
        for key, name, scale in (("loss", "eval/loss", 1), ("accuracy", "eval/top1", 100), ("top5", "eval/top5", 100)):
            if key in evaluation:
                writer.add_scalar(name, scale * evaluation[key], epoch)
        writer.flush()

    return write


_CACHE_BYTES = 1 << 28  # the teacher's logits are cached only up to this size (256 MiB)


def teacher_kd_loss(teacher: torch.nn.Module, images, temperature: float, kd_weight: float, batch_size: int,
                    device: torch.device, cache: bool = True, workers: int = 0, smoothing: float = 0.0,
                    inputs_change: bool = False) -> LossFn:
    """The distillation loss against `teacher` for training on `images` (indexed by the engine's
    dataset indices): the teacher's logits computed once for all images (`cache`), or per batch.
    The cache turns itself off where it would be wrong (augmented images differ every epoch; the
    engine mixes or erases them: `inputs_change`) or would grow with the data past 256 MiB (a
    large image folder). `smoothing`: label smoothing of the cross-entropy part. The returned
    function's `teacher_cached` says which it is, for callers that count the teacher's passes."""
    loss = distillation_loss(temperature, kd_weight, smoothing)  # its settings checked once, here
    augmented = batch_source(images).changes_every_epoch or inputs_change
    if cache and not augmented and len(images) * teacher.spec.num_classes * 4 <= _CACHE_BYTES:
        cached = predict_logits(teacher, images, batch_size, device, workers).to(device)  # (n, classes)

        def loss_fn(logits, batch, labels, indices):
            return loss(logits, cached[indices.to(device)].to(logits.dtype), labels)

        loss_fn.teacher_cached = True
    else:
        last: dict = {}

        def loss_fn(logits, batch, labels, indices):
            if last.get("batch") is not batch:  # mixup scores one batch against two label sets: one teacher pass
                with torch.no_grad():
                    last.update(batch=batch, logits=teacher(batch))
            return loss(logits, last["logits"].to(logits.dtype), labels)

        loss_fn.teacher_cached = False
    return loss_fn


def _frozen(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- train


def train_vit(
    model: ViT,
    data: Dataset,
    config: TrainConfig,
    *,
    out: str | Path,
    device: str = "auto",
    resume: bool = False,
    on_progress=None,
    provenance: dict | None = None,
    workers: int = 0,
    log_dir: str | Path | None = None,
) -> TrainResult:
    """Train `model` on `data` with cross-entropy and save it as a model file at `out`
    (`workers`: processes decoding an image folder's batches ahead; `log_dir`: TensorBoard event
    files of every epoch there too).

    A checkpoint next to `out` (`<out>.ckpt`) is written each epoch; `resume` continues from it.
    Each finished epoch is also a row of the metrics file `<out stem>.metrics.csv`.
    """
    check_fits(model.spec, data, "model")
    start = time.perf_counter()
    result = train(
        model, data.train_images, data.train_labels, config, loss_fn=smoothed(config.smoothing),
        device=device, checkpoint=checkpoint_path(out), resume=resume,
        eval_data=(data.test_images, data.test_labels), on_progress=_logging_metrics(out, resume, on_progress, log_dir), workers=workers,
        meta={"task": "train", "data": data.name, "train_size": len(data.train_labels), "spec": model.spec.to_dict()},
    )
    final = result.history[-1] if result.history else {}
    common = {**(provenance or {}), "data": data.name, **_labels(data), "train_size": int(len(data.train_labels)), "config": asdict(config)}
    with _keeping(checkpoint_path(out)):
        save_vit(out, model, {**common, **_scores(final.get("eval")), "seconds": time.perf_counter() - start})
        if result.ema is not None:  # the moving average, beside the model: <out stem>.ema.safetensors
            ema = with_state(model, result.ema)
            save_vit(ema_path(out), ema, {**common, **_scores(final.get("ema_eval")), "ema_decay": config.model_ema_decay})
    _remove_checkpoint(out)
    return result


def ema_path(out: str | Path) -> Path:
    """Where the moving average of a run's weights goes (TrainConfig.model_ema): `<out stem>.ema.safetensors`."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".ema.safetensors")


def _scores(evaluation: dict | None) -> dict:
    return {"test_accuracy": evaluation["accuracy"] if evaluation else None, "test_loss": evaluation["loss"] if evaluation else None}



def _labels(data: Dataset) -> dict:
    """What each class index means (an export's id2label), when known, and the pixel scaling (its
    preprocessor), for the output's provenance."""
    return {**({"labels": list(data.class_names)} if data.class_names is not None else {}), "pixel_max": data.pixel_max}


def _remove_checkpoint(out: str | Path) -> None:
    """A finished run's output is written: its checkpoint (3x the model's size) is no longer needed."""
    if distributed_context()[0] == 0:
        checkpoint_path(out).unlink(missing_ok=True)
    barrier()


@contextmanager
def _keeping(checkpoint: Path):
    """Around the final write of a finished run: an interrupt there keeps the complete checkpoint,
    from which `--resume` writes the output at once."""
    try:
        yield
    except Interrupted as e:
        e.kept = e.kept or f"the complete checkpoint {checkpoint}"
        raise


def train_ancestry(data: Dataset, recipe: AncestryConfig, *, out: str | Path, batch_size: int = COMMAND_TRAIN.batch_size,
                   seed: int = 0, patch: int | None = None, heads: int | None = None, device: str = "auto",
                   resume: bool = False, on_progress=None, provenance: dict | None = None, workers: int = 0,
                   augment: bool = False) -> TrainResult:
    """Train the ancestry of `recipe` from a random init on `data` (what `wave distill` does when
    it is given none, and what the bench and the examples make) and save it at `out`
    (`augment`: random shifts and flips of in-memory images, TrainConfig.augment)."""
    model = random_vit(spec_for(data, recipe.depth, recipe.width, heads, patch), seed)
    config = TrainConfig(epochs=recipe.epochs, batch_size=batch_size, lr=recipe.lr, seed=seed, augment=augment)
    return train_vit(model, data, config, out=out, device=device, resume=resume, on_progress=on_progress,
                     provenance={"init": "random", **(provenance or {})}, workers=workers)


# ----------------------------------------------------------------------------- distill


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
        return TemplatedFamily([aux_spec, *sizes], d.side, d.templates, seed, d.order)

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
    if distill_config.order != "st":
        raise WaveError("init nearest-kron shares each template across layers through kron(S, T): it needs order st (--kron-order st); use init random")
    if aux_spec != teacher.spec.plain():
        raise WaveError(f"init nearest-kron starts the auxiliary from the teacher's own weights, so it needs the teacher's shape "
                        f"({teacher.spec.depth}x{teacher.spec.width}): got {aux_spec.depth}x{aux_spec.width}; use init random")
    gene = learngene_from_weights(dense_numpy(teacher.state_dict()), teacher.spec, side, n)
    return TemplatedViT.from_factors(aux_spec, side, _live_terms(gene.templates, seed), gene.scalers)


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


# ----------------------------------------------------------------------------- fit scalers


@dataclass
class SpawnResult:
    model: ViT  # the spawned plain ViT, dense weights
    factors: TemplatedViT  # the templates and fitted scalers it was built from
    fresh_roles: set  # roles initialised fresh because the target data differs from the learngene's
    fitted_params: int  # parameters the fit trained (scalers, and fresh templates)
    samples: int  # training images the fit trained on (held-out ones not counted)
    steps: int  # optimizer steps of the fit
    teacher: str | None  # the ancestry distilled from during the fit, if any
    eval: dict | None  # held-out accuracy and loss after the fit
    seconds: float
    kept: str | None = None  # "fitted", or "start" when the fit did not lower the loss on the held-out fit images
    holdout: dict | None = None  # the held-out fit images' count, how often they were scored, the start's and the fit's accuracy and loss there
    depth_rule: str = SpawnConfig.depth_rule  # the depth rule used (the chosen one under "choose")
    depth_losses: dict | None = None  # "choose": each candidate's cross-entropy on the fit's first batches
    best_step: int | None = None  # fit_keep "best": the step of the epoch end kept
    stopped: str | None = None  # why the fit ended: "fit_steps" (all of them) or "patience" (its held-out loss stopped falling)

    def judgement(self) -> str:
        """One line: which of start and fit was kept, and on what evidence."""
        if self.holdout is None:
            return "kept the fitted scalers (too few fit images to hold any out)"
        h = self.holdout
        scores = (f"loss {h['start_loss']:.4f} ({100 * h['start_accuracy']:.2f}%) at the start, {h['fitted_loss']:.4f} "
                  f"({100 * h['fitted_accuracy']:.2f}%) after {self.steps} steps{self._why()}, on {h['samples']:,} held-out fit images")
        if self.kept == "start":
            return f"kept the data-free start, not the fit: {scores}"
        return f"kept the fitted scalers: {scores}"

    def _why(self) -> str:
        return " (stopped early: the held-out loss had stopped falling)" if self.stopped == "patience" else ""


def fit_scalers(
    learngene: Learngene,
    target: ViTSpec,
    data: Dataset | None = None,
    config: SpawnConfig = SpawnConfig(),
    *,
    teacher: ViT | None = None,
    teacher_name: str | None = None,
    refresh=frozenset(),
    device: str = "auto",
    on_progress=None,
    workers: int = 0,
) -> SpawnResult:
    """Initialise a ViT of shape `target` from a learngene: scalers by the data-free rule
    (`spawning.spawn_factors`), then, with `data`, fitted for `config.fit_steps` steps with the
    templates frozen (KL to `teacher` plus cross-entropy when a teacher is given, else
    cross-entropy). Without data the data-free weights are returned as they are.

    The fit never ends worse than it started: of the `fit_samples` images it draws, a fifth is
    held out and scored before and after the fit, and the fit is kept only if it lowered the
    cross-entropy there (`SpawnResult.kept`). Loss, not accuracy: on a few hundred images
    accuracy moves in coarse, noisy steps (a fit that took the loss from 1.67 to 1.51 and test
    accuracy up 6 points lost 2.6 points of accuracy on 150 held-out images)."""
    start = time.perf_counter()
    depth_rule, losses = config.depth_rule, None
    if depth_rule == "choose":
        if data is None:
            raise WaveError("the depth rule 'choose' scores candidates on the fit's data: give data, or a fixed depth rule")
        depth_rule, losses = choose_depth_rule(learngene, target, data, config, refresh, device)
    model, fresh = spawned_factors(learngene, target, config.seed, refresh, depth_rule, config.width_rule)
    templates_p, _ = model.role_tensors()
    for name, t in {**templates_p, **model.dense_tensors()}.items():
        t.requires_grad_(name in fresh)  # learned templates and dense roles stay frozen; fresh ones must learn
    trainable = [p for p in model.parameters() if p.requires_grad]
    fit = _Fit()
    if data is not None:
        check_fits(target, data, "target model")
        fit = _fit_and_judge(model, trainable, data, config, teacher, resolve_device(device), on_progress, workers)
    dense = load_state_dict(ViT(target), {k: v.detach().cpu() for k, v in model.dense_state_dict().items()})
    return SpawnResult(model=dense, factors=model, fresh_roles=fresh, fitted_params=sum(p.numel() for p in trainable) if data is not None else 0,
                       samples=fit.samples, steps=fit.steps, teacher=teacher_name if (teacher is not None and data is not None) else None,
                       eval=fit.evaluation, seconds=time.perf_counter() - start, kept=fit.kept, holdout=fit.holdout,
                       depth_rule=depth_rule, depth_losses=losses, best_step=fit.best_step, stopped=fit.stopped)


def spawned_factors(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset(), depth_rule: str = SpawnConfig.depth_rule,
                    width_rule: str = SpawnConfig.width_rule) -> tuple[TemplatedViT, set[str]]:
    """The data-free spawn as a `TemplatedViT` (templates, scalers and dense roles of `target`),
    and the roles started afresh: what a scaler fit starts from."""
    templates, scalers, fresh = spawn_factors(learngene, target, seed, refresh, depth_rule, width_rule)
    dense = spawn_dense(learngene, target, seed, refresh, depth_rule, width_rule)
    return TemplatedViT.from_factors(target, learngene.side, templates, scalers, learngene.order, dense), fresh


def choose_depth_rule(learngene: Learngene, target: ViTSpec, data: Dataset, config: SpawnConfig, refresh=frozenset(),
                      device: str = "auto") -> tuple[str, dict]:
    """The "choose" depth rule: of `DEPTH_RULES`, the one whose data-free model has the lowest
    cross-entropy on the fit's first `choose_batches` batches (ties: the earlier rule), and every
    candidate's loss. Candidates giving the same layers are scored once."""
    dev = resolve_device(device)
    (images, labels), _ = fit_images(data, config)
    n = min(len(labels), config.choose_batches * config.batch_size)
    losses, seen = {}, {}
    for rule in DEPTH_RULES:
        positions = tuple(layer_positions(learngene.source_for(target).spec.depth, target.depth, rule))
        if positions not in seen:
            model, _ = spawned_factors(learngene, target, config.seed, refresh, rule, config.width_rule)
            seen[positions] = evaluate(model, images[:n], labels[:n], EVAL_BATCH_SIZE, dev)["loss"]
        losses[rule] = seen[positions]
    return min(DEPTH_RULES, key=lambda rule: losses[rule]), losses


@dataclass
class _Fit:
    samples: int = 0  # images trained on
    steps: int = 0
    kept: str | None = None  # "fitted" or "start"
    holdout: dict | None = None  # the held-out images' scores of start and fit
    evaluation: dict | None = None  # the kept model's test scores
    best_step: int | None = None  # fit_keep "best": the step whose epoch end had the lowest held-out loss
    stopped: str | None = None  # "fit_steps" or "patience"


def _fit_and_judge(model: TemplatedViT, trainable: list, data: Dataset, config: SpawnConfig, teacher: ViT | None, dev: torch.device,
                   on_progress, workers: int) -> _Fit:
    """Train `trainable` on the fit's images, then keep the fitted weights only if they lowered
    the cross-entropy on the held-out fifth (`fit_scalers`)."""
    (images, labels), held = fit_images(data, config)
    loss_fn = cross_entropy_loss
    if teacher is not None:
        check_fits(teacher.spec, data, "teacher")
        loss_fn = teacher_kd_loss(_frozen(teacher, dev), images, config.temperature, config.kd_weight, config.batch_size, dev, workers=workers)
    before = evaluate(model, *held, EVAL_BATCH_SIZE, dev, workers) if held is not None else None
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    watched = held is not None and (config.fit_keep == "best" or config.fit_patience > 0)
    best = _BestEpoch(model, on_progress, config.fit_keep == "best", config.fit_patience) if watched else None
    try:
        steps = train(model, images, labels, TrainConfig(batch_size=config.batch_size, lr=config.lr, weight_decay=0.0,
                                                          max_steps=config.fit_steps, seed=config.seed, compile=config.compile),
                      loss_fn=loss_fn, param_groups=[{"params": trainable, "weight_decay": 0.0}], device=dev,
                      on_progress=best.watch if best else on_progress, eval_data=held if best else None, workers=workers).steps
        stopped = "fit_steps"
    except _PatienceRanOut:
        steps, stopped = best.last_step, "patience"
    fit = _Fit(len(labels), steps, "fitted", stopped=stopped)
    if best is not None and best.state is not None:
        model.load_state_dict(best.state)
        fit.best_step = best.step
    if held is not None:
        after = evaluate(model, *held, EVAL_BATCH_SIZE, dev, workers)
        if after["loss"] >= before["loss"]:
            model.load_state_dict(start_state)
            fit.kept = "start"
        evaluations = 2 + (best.evaluations if best else 0)  # before, after, and each epoch end "best" watched: the fit's judging cost
        fit.holdout = {"samples": before["samples"], "evaluations": evaluations, "start_accuracy": before["accuracy"], "start_loss": before["loss"],
                       "fitted_accuracy": after["accuracy"], "fitted_loss": after["loss"]}
    fit.evaluation = evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, dev, workers)
    return fit


class _PatienceRanOut(Exception):
    """The fit's held-out loss has not fallen for `fit_patience` epoch ends: the fit stops here."""


class _BestEpoch:
    """The held-out loss at each epoch end of the fit: with `keep`, a copy of the model at the
    lowest (`fit_keep="best"`); with `patience`, `_PatienceRanOut` once it has not fallen for that
    many epoch ends (raised from the engine's progress callback, so the run ends at that step)."""

    def __init__(self, model, on_progress, keep: bool = True, patience: int = 0):
        self.model, self.on_progress, self.keep, self.patience = model, on_progress, keep, patience
        self.loss, self.state, self.step = math.inf, None, None
        self.evaluations = 0  # held-out evaluations seen (forward passes the fit spent judging itself)
        self.stale, self.last_step = 0, 0  # epoch ends since the loss last fell; the step of the latest

    def watch(self, progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)
        if progress.event != "epoch" or progress.eval is None:
            return
        self.evaluations += 1
        self.last_step = progress.global_step
        if progress.eval["loss"] < self.loss:
            self.loss, self.step, self.stale = progress.eval["loss"], progress.global_step, 0
            if self.keep:
                self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.stale += 1
        if self.patience and self.stale >= self.patience and progress.global_step < progress.total_steps:
            raise _PatienceRanOut


FIT_HOLDOUT = 5  # one in this many of the fit's images is held out to judge the fit


def fit_images(data: Dataset, config: SpawnConfig):
    """The fit's (images, labels), a fixed seeded draw of `fit_samples` training images, and the
    held-out fifth of that draw (None when the draw is too small to spare one)."""
    n = min(config.fit_samples, len(data.train_labels))
    pick = np.random.default_rng(config.seed).permutation(len(data.train_labels))[:n]
    m = n // FIT_HOLDOUT
    held = (data.train_images[pick[:m]], data.train_labels[pick[:m]]) if m else None
    return (data.train_images[pick[m:]], data.train_labels[pick[m:]]), held


def resolve_teacher(teacher, name: str | None, learngene: Learngene, data: Dataset) -> tuple[ViT | None, str | None, str]:
    """The ancestry a scaler fit distils from, its name, and why there is none. `teacher`: None
    (the default: none, whatever lies on the disk), a ViT in memory (named `name`), a model file,
    folder or hub name, or "recorded": the ancestry the learngene records (a file path, or
    `hf:ORG/NAME@COMMIT` in the Hugging Face cache), which must be there and fit the data."""
    if teacher is None:
        return None, None, "no teacher was given (the default); pass --teacher FILE, or --teacher recorded for the learngene's ancestry"
    if isinstance(teacher, ViT):
        check_fits(teacher.spec, data, "teacher")
        return teacher, name or "(in memory)", ""
    if str(teacher) == "recorded":
        teacher = _recorded_teacher(learngene, data)
    model, _ = load_vit(teacher)
    check_fits(model.spec, data, "teacher")
    return model, str(teacher), ""


def _recorded_teacher(learngene: Learngene, data: Dataset) -> str:
    """What `load_vit` reads for the learngene's recorded ancestry; WaveError if it cannot teach `data`."""
    recorded = learngene.provenance.get("teacher")
    if not recorded:
        raise WaveError("--teacher recorded: the learngene records no ancestry; pass --teacher FILE")
    if learngene.provenance.get("data") not in (None, data.name):  # an ancestry of other data cannot teach this one
        raise WaveError(f"--teacher recorded: the learngene's ancestry was trained on {learngene.provenance.get('data')}, not {data.name}; "
                        f"pass --teacher FILE or no teacher")
    if recorded.startswith("hf:"):
        return "hf-hub:" + recorded[3:]
    if not Path(recorded).exists():  # a file, or a Hugging Face folder
        raise WaveError(f"--teacher recorded: the learngene's ancestry {recorded} is not on this machine; pass --teacher with a copy")
    return recorded
