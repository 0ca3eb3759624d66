"""Determinism: deterministic kernels, per-step seeds and cuBLAS's workspace, so that the same
seed gives bit-identical parameters on the same machine, resumed or not."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def set_deterministic_cublas() -> None:
    """cuBLAS is only deterministic with a fixed workspace; the variable must be set before the
    first cuBLAS call (a user's own value wins). Called when a CUDA run starts, never on import."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels inside (warn, don't fail, where an op has none); the caller's settings after."""
    import torch.utils.deterministic as det

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             det.fill_uninitialized_memory, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also NaN-fills every torch.empty: a cost for nothing, since no op here
    # reads memory it has not written.
    det.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing: not reproducible
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        det.fill_uninitialized_memory, torch.backends.cudnn.benchmark = saved[2], saved[3]


def mix(*values: int) -> int:
    """A 63-bit hash of non-negative ints (splitmix64 steps): distinct inputs, unrelated seeds."""
    h = 0
    for v in values:
        h = (h ^ v) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h >> 1


def seed_step(seed: int, global_step: int, rank: int, device: torch.device) -> None:
    """Reseed the generators a step may draw from (dropout, ...) from (seed, step, rank).

    Resuming at any step then needs no saved generator state. The generators are seeded
    directly: torch.manual_seed also walks every accelerator backend (~150 us a call).
    """
    s = mix(seed, global_step, rank)
    torch.default_generator.manual_seed(s)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index].manual_seed(s)
