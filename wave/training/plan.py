"""What one call of the engine's `train` works from and gives back: its progress reports and
result, its checked data and parameter groups, its fixed shape (`Plan`), and where it starts (a
fresh start, or a checkpoint resumed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..configs import TrainConfig
from ..errors import WaveError
from ..io.files import read_checkpoint_header
from .batches import BatchSource
from .checkpoint import Position, resume_checkpoint
from .distributed import distributed_context


@dataclass
class Progress:
    """What `on_progress` receives (rank 0 only)."""

    epoch: int  # 0-based index of the epoch being run (show epoch + 1 of epochs)
    epochs: int
    step: int  # steps done in this epoch (a count: 1..steps_per_epoch after a step)
    steps_per_epoch: int
    global_step: int  # optimizer steps done in total
    total_steps: int
    loss: float  # running mean per-sample training loss of this epoch (rank 0's shard in multi-process runs)
    lr: float  # scheduled learning rate of the last step (a group's is this times its lr_scale)
    images_per_second: float  # all processes together, since this call started
    seconds_elapsed: float  # since this call started
    seconds_left: float  # estimate from this call's pace
    train_loss: float | None = None  # at epoch end: the exact mean over the epoch and all processes
    eval: dict | None = None  # at epoch end, with eval_data: evaluate()'s dict
    record: dict | None = None  # at epoch end: the epoch's entry of TrainResult.history
    event: str = "step"  # "step" | "epoch" | "resumed" | "checkpoint"


@dataclass
class TrainResult:
    history: list[dict]  # per epoch: epoch (1-based count), train_loss, lr, seconds, images_per_second, eval
    steps: int  # optimizer steps done in total (this call and the ones it resumed)
    seconds: float  # wall time of this call
    resumed_from: int | None = None  # global step the call resumed from; None for a fresh start
    ema: dict | None = None  # TrainConfig.model_ema: the weights' moving average, key -> tensor


def check_data(source: BatchSource) -> int:
    images, labels = source.images, source.labels
    if images.ndim != 4:
        raise WaveError(f"training images must be (n, C, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise WaveError(f"need one label per training image: {len(images)} images, labels of shape {tuple(labels.shape)}")
    if len(images) == 0:
        raise WaveError("no training images")
    return len(images)


def check_groups(model: nn.Module, groups: list[dict]) -> list[dict]:
    """Groups whose tensors are the model's own parameters, each with an "lr_scale"."""
    own = {id(p) for p in model.parameters()}
    checked = []
    for i, g in enumerate(groups):
        if "lr" in g:
            raise WaveError(f"parameter group {i} sets 'lr': the schedule sets every group's lr; give it 'lr_scale' (a factor of --lr) instead")
        params = list(g["params"])
        if any(id(p) not in own for p in params):
            raise WaveError(f"parameter group {i} holds a tensor that is not a parameter of the model")
        checked.append({**g, "params": params, "lr_scale": float(g.get("lr_scale", 1.0))})
    if not any(p.requires_grad for g in checked for p in g["params"]):
        raise WaveError("nothing to train: no parameter group holds a parameter that requires grad")
    return checked


def start_position(path: Path | None, resume: bool, model, optimizer, run_fingerprint: dict, config: TrainConfig, world: int):
    """(position, global step resumed from or None): the checkpoint at `path` continued with
    `resume`, else a fresh start (refusing to replace a file that is not a checkpoint)."""
    position, resumed_from = Position(), None
    if path is not None and path.exists():
        if resume:
            position = resume_checkpoint(path, model, optimizer, run_fingerprint, model_ema=config.model_ema)
            resumed_from = position.global_step
        else:
            read_checkpoint_header(path)
    if world > 1:
        dist.barrier()  # every rank has read the checkpoint before rank 0 may replace it
    return position, resumed_from


@dataclass(frozen=True)
class Plan:
    """The shape of one call of train(), fixed before its first step."""

    samples: int  # training images
    steps_per_epoch: int
    total_steps: int
    epochs: int  # epochs to run, the last possibly partial (max_steps)
    amp: bool  # bf16 autocast
    rank: int
    world: int
    device: torch.device

    @classmethod
    def of(cls, source: BatchSource, config: TrainConfig, device: torch.device) -> Plan:
        n = check_data(source)
        steps_per_epoch = -(-n // config.batch_size)
        total_steps = config.max_steps or config.epochs * steps_per_epoch
        epochs = -(-total_steps // steps_per_epoch)  # with max_steps, the last epoch may be partial
        amp = device.type == "cuda" if config.amp is None else bool(config.amp)
        return cls(n, steps_per_epoch, total_steps, epochs, amp, *distributed_context(), device)
