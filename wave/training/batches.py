"""Batches of images on disk (`io.images.ImageFiles`), decoded in DataLoader worker processes
while the model computes: the engine's shards of each global batch, and the evaluation's chunks.

In-memory arrays never come here: the engine slices them directly. A worker that cannot decode
an image returns the one-line error instead of raising (DataLoader would wrap it in a
multi-line traceback), and the main process raises it as a WaveError.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ..errors import WaveError
from ..io.images import ImageFiles
from .interrupts import ignore_in_worker


def is_lazy(images) -> bool:
    """Whether `images` stay on disk until a batch needs them."""
    return isinstance(images, ImageFiles)


class _ShardSteps(TorchDataset):
    """Item `step`: this rank's shard of global batch `step` of one epoch's order, decoded:
    (images (b, C, S, S), labels (b,), dataset indices (b,), global batch size, empty shard)."""

    def __init__(self, images: ImageFiles, labels: np.ndarray, order: np.ndarray, batch_size: int, rank: int, world: int,
                 epoch: int, seed: int):
        self.images, self.labels, self.order, self.batch_size = images, labels, order, batch_size
        self.rank, self.world, self.epoch, self.seed = rank, world, epoch, seed

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, step: int):
        batch = self.order[step * self.batch_size:(step + 1) * self.batch_size]  # the same on every rank
        shard = batch[self.rank::self.world]
        empty = len(shard) == 0  # as in the engine: one sample whose loss counts 0
        idx = batch[:1] if empty else shard
        try:
            x = self.images.load(idx, self.epoch, self.seed)
        except WaveError as e:
            return str(e)
        return torch.from_numpy(x), torch.from_numpy(self.labels[idx]), torch.from_numpy(idx), len(batch), empty


def shard_batches(images: ImageFiles, labels: np.ndarray, order: np.ndarray, batch_size: int, rank: int, world: int,
                  epoch: int, seed: int, first: int, steps: int, workers: int, pin: bool) -> Iterator:
    """The items of `_ShardSteps` for steps first..steps-1, decoded `workers` processes ahead
    (0: in this process). Only this rank's images are ever read."""
    steps_data = _ShardSteps(images, labels, order, batch_size, rank, world, epoch, seed)
    loader = DataLoader(steps_data, batch_size=None, sampler=range(first, steps), num_workers=workers, pin_memory=pin,
                        worker_init_fn=ignore_in_worker if workers else None)
    for item in loader:
        if isinstance(item, str):
            raise WaveError(item)
        yield item


class _Chunks(TorchDataset):
    """Item k: images[k * size:(k + 1) * size] decoded (no augmentation)."""

    def __init__(self, images: ImageFiles, size: int):
        self.images, self.size = images, size

    def __len__(self) -> int:
        return -(-len(self.images) // self.size)

    def __getitem__(self, k: int):
        try:
            return torch.from_numpy(self.images.load(range(k * self.size, min((k + 1) * self.size, len(self.images)))))
        except WaveError as e:
            return str(e)


def chunks(images, size: int, workers: int = 0) -> Iterator[torch.Tensor]:
    """`images` in order, `size` at a time, as float32 tensors: slices of an in-memory tensor,
    or decoded from disk `workers` processes ahead."""
    if not is_lazy(images):
        for start in range(0, len(images), size):
            yield images[start:start + size]
        return
    for item in DataLoader(_Chunks(images, size), batch_size=None, num_workers=workers, worker_init_fn=ignore_in_worker if workers else None):
        if isinstance(item, str):
            raise WaveError(item)
        yield item
