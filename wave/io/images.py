"""Images on disk, decoded only when a batch needs them (`folder:DIR` at any scale).

`ImageFiles` looks like the (n, C, S, S) float32 array it stands for: `len`, `.shape`,
slicing and index arrays give views (still on disk), `np.asarray` decodes everything (for small
folders). The training engine and the evaluation decode it per batch instead, in DataLoader
worker processes (`load`), so memory does not grow with the number of images.

Every image is converted to grey or RGB and brought to S x S pixels in [-1, 1]:
- evaluation, and training without augmentation: the central square of the shorter side,
  resized (bilinear) to S (an S x S image is taken as it is);
- training with `augment`: a random-resized crop (area 8-100% of the image, aspect ratio 3/4 to
  4/3) and a horizontal flip with probability 1/2, the usual ViT recipe, drawn from
  (seed, epoch, image index): the same seed gives the same pixels, in any process; with
  `auto_augment` (timm's policy strings: `rand-m9-mstd0.5-inc1` for RandAugment, `augmix-...`,
  `original` for AutoAugment) timm's own transform follows, its draws seeded from the same triple.
16-bit grey images keep their full range.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import WaveError, reason

_16BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # Pillow's convert() would clip these


@dataclass(frozen=True)
class ImageFiles:
    """Image files as an (n, channels, size, size) float32 array, decoded on demand."""

    paths: tuple[str, ...]
    channels: int  # 1 (grey) or 3 (RGB)
    size: int  # side S of the square images delivered
    augment: bool = False  # random-resized crop and flip (training); else centre crop
    auto_augment: str | None = None  # with augment: timm's RandAugment / AutoAugment policy (needs timm)

    # -- what makes it look like an array

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, self.size, self.size)

    ndim = 4
    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> ImageFiles | np.ndarray:
        """A view for a slice or an index array; the decoded image (C, S, S) for an int; for a
        tuple, what the first axis selects, decoded and indexed further (as an array would be)."""
        if isinstance(key, tuple):
            head = self[key[0]]
            rest = key[1:] if isinstance(key[0], (int, np.integer)) else (slice(None), *key[1:])
            return np.asarray(head)[rest]
        if isinstance(key, (int, np.integer)):
            return self.load([int(key)])[0]
        if isinstance(key, slice):
            return self.view(range(len(self))[key])
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise WaveError(f"a boolean mask of shape {key.shape} does not fit {len(self)} images")
            key = np.flatnonzero(key)
        if key.ndim != 1 or key.dtype.kind not in "iu":
            raise WaveError(f"image files take a slice, an integer, a boolean mask or a 1-D array of indices, got {key.dtype} of shape {key.shape}")
        return self.view(key)

    def view(self, indices) -> ImageFiles:
        return ImageFiles(tuple(self.paths[int(i)] for i in indices), self.channels, self.size, self.augment, self.auto_augment)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.load(range(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def min(self) -> np.float32:
        return np.asarray(self).min()  # decodes every image: for small folders

    def max(self) -> np.float32:
        return np.asarray(self).max()

    def digest(self) -> str:
        """What identifies these images for a resumed run: the files, their sizes and the transform."""
        policy = f"{self.auto_augment}:" if self.auto_augment else ""  # absent: digests of older runs stay valid
        h = hashlib.sha256(f"{self.channels}:{self.size}:{self.augment}:{policy}".encode())
        for path in self.paths:
            h.update(path.encode())
            h.update(str(os.path.getsize(path)).encode())
        return h.hexdigest()[:16]

    # -- decoding

    def load(self, indices, epoch: int = 0, seed: int = 0) -> np.ndarray:
        """Images `indices` decoded: (b, C, S, S) float32 in [-1, 1]. With `augment`, the crop
        and flip of image i are drawn from (seed, epoch, i)."""
        out = np.empty((len(indices), self.channels, self.size, self.size), np.float32)
        for row, i in enumerate(indices):
            rng = np.random.default_rng([seed, epoch, int(i)]) if self.augment else None
            out[row] = decode(self.paths[int(i)], self.channels, self.size, rng, self.auto_augment if self.augment else None)
        return out


def decode(path: str, channels: int, size: int, rng: np.random.Generator | None = None, auto_augment: str | None = None) -> np.ndarray:
    """One image as (channels, size, size) float32 in [-1, 1] (module docstring: the transforms)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _16BIT_MODES:  # full range, as floats (mode F resizes without clipping)
                img = Image.fromarray(np.asarray(img, np.float32) * np.float32(255 / 65535), mode="F")
            elif img.mode != "F":
                img = img.convert("L" if channels == 1 else "RGB")
            box = random_resized_crop(img.size, rng) if rng is not None else centre_crop(img.size)
            if box != (0, 0, size, size) or img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR, box=box)
            if rng is not None and rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            if rng is not None and auto_augment:
                img = apply_auto_augment(img, auto_augment, size, int(rng.integers(2**32)))
            x = np.asarray(img, np.float32)
    except unreadable() as e:
        raise unreadable_error(path, e) from None
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (C, S, S)
    if x.shape[0] != channels:  # a grey 16-bit image among RGB ones
        x = np.repeat(x[:1], channels, axis=0)
    return x / np.float32(127.5) - np.float32(1.0)


def apply_auto_augment(img, policy: str, size: int, seed: int):
    """timm's transform for the policy string, on a PIL image, drawing from Python's and NumPy's
    global generators seeded with `seed` (their states are put back after)."""
    import random

    transform = _auto_augment_transform(policy, size)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        return transform(img)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@functools.cache
def _auto_augment_transform(policy: str, size: int):
    """As timm's `create_transform` builds it for images in [0, 255] with mean 0.5 (our scaling)."""
    try:
        from timm.data import auto_augment as timm_aa
    except ImportError:
        raise WaveError(f"--aa {policy} is timm's transform, and timm is not installed: pip install 'waveinit[timm]'") from None
    hparams = {"translate_const": int(size * 0.45), "img_mean": (128, 128, 128)}
    try:
        if policy.startswith("rand"):
            return timm_aa.rand_augment_transform(policy, hparams)
        if policy.startswith("augmix"):
            return timm_aa.augment_and_mix_transform(policy, hparams)
        return timm_aa.auto_augment_transform(policy, hparams)
    except (AssertionError, KeyError, ValueError) as e:
        raise WaveError(f"--aa {policy!r} is not a policy timm knows ({e}): try rand-m9-mstd0.5-inc1") from None


def unreadable() -> tuple[type[Exception], ...]:
    """What Pillow raises for a file it cannot decode (unreadable and truncated files are OSErrors)."""
    from PIL import Image

    return (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def unreadable_error(path, e: Exception) -> WaveError:
    """The one-line error for an image that cannot be decoded."""
    return WaveError(f"cannot read image {path} ({reason(e)}): replace or remove it, or pass --skip-bad-images")


def centre_crop(width_height: tuple[int, int]) -> tuple[float, float, float, float]:
    """The central square of the shorter side, as a (left, top, right, bottom) box."""
    w, h = width_height
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return (left, top, left + side, top + side)


def random_resized_crop(width_height: tuple[int, int], rng: np.random.Generator,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box: 10 tries at a random area and aspect ratio, then the
    whole image's central crop at the nearest allowed ratio."""
    w, h = width_height
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return (left, top, left + cw, top + ch)
    aspect = w / h
    if aspect < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif aspect > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    left, top = (w - cw) // 2, (h - ch) // 2
    return (left, top, left + cw, top + ch)
