"""Inference: logits and test scores of any classifier, in eval mode without gradients, split
over the ranks under torchrun (each rank scores its share, the results are gathered)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WaveError
from .batches import BatchSource, batch_source
from .distributed import distributed_context, resolve_device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def _shard_logits(model: nn.Module, source: BatchSource, batch_size: int, device: torch.device, rank: int, world: int,
                  workers: int = 0) -> Tensor:
    """float32 logits (len(range(rank, n, world)), classes) on `device` of this rank's images
    rank, rank + world, ... (the model is moved to `device`, as training does)."""
    model.to(device)
    with eval_mode(model):
        if rank >= len(source):  # more ranks than images: one forward to learn the class count
            return model(next(source.chunks(1)).to(device)).float()[:0]
        pieces = [model(x.to(device, non_blocking=True)).float() for x in source.chunks(batch_size, workers, rank, world)]
    return torch.cat(pieces)


def predict_logits(model: nn.Module, images, batch_size: int, device: str | torch.device, workers: int = 0) -> Tensor:
    """Logits (n, classes), float32 on the CPU, in eval mode without gradients (images: an array,
    a tensor, or image files decoded `workers` processes ahead).

    Under torch.distributed every rank computes images[rank::world] and the pieces are
    all-gathered, so each rank returns the whole (n, classes) in the original order.
    """
    device = resolve_device(device)
    rank, world = distributed_context()
    images = batch_source(images)
    n = len(images)
    if n == 0:
        raise WaveError("predict_logits got no images")
    local = _shard_logits(model, images, batch_size, device, rank, world, workers)
    if world == 1:
        return local.cpu()
    rows = -(-n // world)  # the largest shard; all_gather needs equal sizes
    padded = torch.zeros(rows, local.shape[1], device=device)
    padded[:len(local)] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    out = torch.empty(n, local.shape[1])
    for r, piece in enumerate(gathered):
        out[r::world] = piece[:len(range(r, n, world))].cpu()
    return out


def evaluate(model: nn.Module, images, labels: np.ndarray | Tensor, batch_size: int, device: str | torch.device,
             workers: int = 0) -> dict:
    """{"accuracy": fraction correct in [0, 1], "top5": fraction whose label is among the 5
    highest logits (all of them with 5 classes or fewer), "loss": mean cross-entropy, "samples": n}
    (images: an array, a tensor, or image files decoded `workers` processes ahead).

    Under torch.distributed each rank scores images[rank::world] and the sums are all-reduced,
    so every rank gets the same numbers.
    """
    device = resolve_device(device)
    rank, world = distributed_context()
    images = batch_source(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(images)
    if n == 0 or len(labels) != n:
        raise WaveError(f"evaluate needs as many labels as images, at least one: got {n} images and {len(labels)} labels")
    logits = _shard_logits(model, images, batch_size, device, rank, world, workers)  # (n_rank, classes)
    y = labels[rank::world].to(device)
    top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (n_rank, 5)
    stats = torch.stack([
        F.cross_entropy(logits, y, reduction="none").double().sum(),
        (logits.argmax(-1) == y).double().sum(),
        (top5 == y[:, None]).any(-1).double().sum(),
    ])
    if world > 1:
        dist.all_reduce(stats)
    loss_sum, correct, correct5 = stats.tolist()
    return {"accuracy": correct / n, "top5": correct5 / n, "loss": loss_sum / n, "samples": n}
