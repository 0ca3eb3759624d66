"""Where a run's images come from. A batch source holds images and labels, in memory or on disk,
and gives the engine this rank's shard of each global batch, the evaluation its chunks, the
checkpoint its fingerprint, and applies its own augmentation: `batch_source` is the one place
that tells the two kinds apart, so the engine and the evaluation never do.

Image files (`io.images.ImageFiles`) are decoded in DataLoader worker processes while the model
computes, each rank reading only its own shard; they are cropped (and with their `augment`,
randomly) as they are decoded. A worker that cannot decode an image returns the one-line error
instead of raising (DataLoader would wrap it in a multi-line traceback), and the main process
raises it as a WaveError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ..errors import WaveError
from ..io.images import ImageFiles
from .interrupts import ignore_in_worker

_DEVICE_DATA_BYTES = 1 << 30  # in-memory images up to this size are copied to the GPU once


class BatchSource:
    """Images (n, C, H, W) and labels (n,), read in batches. `shift_flip`: every training batch
    is shifted and flipped on the device (`shift_and_flip`), whatever holds the images."""

    def __init__(self, images, labels: np.ndarray | None, shift_flip: bool = False):
        self.images, self.labels, self.shift_flip = images, labels, shift_flip

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def changes_every_epoch(self) -> bool:
        """Whether a training image differs between epochs (a teacher's logits cannot be cached then)."""
        return self.shift_flip

    def augment(self, x: Tensor) -> Tensor:
        """This step's augmentation of a batch on the device; draws from torch's generator, which
        the engine seeds every step."""
        return shift_and_flip(x) if self.shift_flip else x

    def place(self, device: torch.device) -> None:
        """Get ready to train on `device` (in memory: the tensors moved there once)."""

    def shards(self, order: np.ndarray, batch_size: int, rank: int, world: int, epoch: int, seed: int, first: int, steps: int,
               workers: int, device: torch.device) -> Iterator:
        """(x, y, idx, size, empty) for steps first..steps-1 of one epoch's `order`: this rank's
        shard x (b, C, H, W), its labels y and dataset indices idx (b,), the global batch's size,
        and whether the shard is empty. An empty shard (last batch smaller than the process count)
        still gives one sample, whose loss the engine multiplies by 0: DDP needs every rank's
        gradients for the all-reduce, and the zero adds nothing. A generator: close() it."""
        raise NotImplementedError

    def chunks(self, size: int, workers: int = 0, rank: int = 0, world: int = 1) -> Iterator[Tensor]:
        """Images rank, rank + world, ... in order, `size` at a time, float32 and unaugmented."""
        raise NotImplementedError

    def digest(self) -> str:
        """A fingerprint of the images, so a resume on other data is refused."""
        raise NotImplementedError


class MemoryBatches(BatchSource):
    """Images in memory (an array or a tensor), sliced directly: on the GPU when they fit there."""

    def __init__(self, images, labels: np.ndarray | None, shift_flip: bool = False):
        array = images if isinstance(images, Tensor) else np.ascontiguousarray(images, dtype=np.float32)
        super().__init__(array, labels, shift_flip)
        self.x = images.float() if isinstance(images, Tensor) else torch.from_numpy(array)
        self.y = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))

    def place(self, device: torch.device) -> None:
        if device.type != "cpu" and self.x.nbytes <= _DEVICE_DATA_BYTES:  # else each batch is copied over from pinned memory
            self.x, self.y = self.x.to(device), self.y.to(device)

    def shards(self, order, batch_size, rank, world, epoch, seed, first, steps, workers, device):
        order = torch.from_numpy(order).to(self.x.device)
        for step in range(first, steps):
            batch = order[step * batch_size:(step + 1) * batch_size]  # (B,) dataset indices, the same on every rank
            shard = batch if world == 1 else batch[rank::world]
            empty = len(shard) == 0
            idx = batch[:1] if empty else shard
            yield self.x[idx], self.y[idx], idx, len(batch), empty  # (b, C, H, W), (b,), (b,): host-known sizes, no sync

    def chunks(self, size, workers=0, rank=0, world=1):
        x = self.x[rank::world]
        for start in range(0, len(x), size):
            yield x[start:start + size]

    def digest(self) -> str:
        rows = self.images[:: max(1, len(self.images) // 1024)]  # up to 1,024 image rows
        rows = rows.detach().cpu().numpy() if isinstance(rows, Tensor) else rows
        return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float32).tobytes()).hexdigest()[:16]  # as checkpoint._digest


class FileBatches(BatchSource):
    """Image files, decoded per batch in DataLoader workers (cropped, and randomly with their
    `augment`, as they are decoded)."""

    @property
    def changes_every_epoch(self) -> bool:
        return self.shift_flip or self.images.augment

    def shards(self, order, batch_size, rank, world, epoch, seed, first, steps, workers, device):
        return shard_batches(self.images, self.labels, order, batch_size, rank, world, epoch, seed, first, steps, workers,
                             pin=device.type == "cuda")

    def chunks(self, size, workers=0, rank=0, world=1):
        images = self.images[rank::world]
        loader = DataLoader(_Chunks(images, size), batch_size=None, num_workers=workers, worker_init_fn=ignore_in_worker if workers else None)
        for item in loader:
            if isinstance(item, str):
                raise WaveError(item)
            yield item

    def digest(self) -> str:
        return self.images.digest()


def batch_source(images, labels: np.ndarray | None = None, shift_flip: bool = False) -> BatchSource:
    """The source of `images` (an array, a tensor or `ImageFiles`) and their labels."""
    if isinstance(images, BatchSource):
        return images
    if isinstance(images, ImageFiles):
        return FileBatches(images, None if labels is None else np.asarray(labels), shift_flip)
    return MemoryBatches(images, None if labels is None else np.asarray(labels), shift_flip)


def shift_and_flip(x: Tensor) -> Tensor:
    """Images (b, C, H, W) each shifted by a random (dy, dx) of up to max(1, side // 10) pixels
    (the edge rows and columns repeated into the gap) and flipped left-right with probability
    1/2. Draws from torch's global generator: the engine seeds it every step."""
    b, _, h, w = x.shape
    m = max(1, min(h, w) // 10)
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    dy, dx = (torch.randint(0, 2 * m + 1, (b,), device=x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (b, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (b, 1, 1, W)
    out = padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
    flip = torch.rand(b, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


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
