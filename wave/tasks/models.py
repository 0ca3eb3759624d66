"""What every task shares: models made for data, loaded and saved; checkpoints and metrics
beside an output; the teacher's distillation loss."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from ..backends.torch import ViT, dense_numpy, load_state_dict
from ..errors import WaveError
from ..io.datasets import Dataset
from ..io.files import load_model, save_model
from ..io.metrics import MetricsLog, metrics_path
from ..spec import ViTSpec, resized
from ..training.batches import batch_source
from ..training.distributed import barrier, distributed_context
from ..training.engine import LossFn
from ..training.evaluation import predict_logits
from ..training.interrupts import Interrupted
from ..training.objectives import distillation_loss

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


