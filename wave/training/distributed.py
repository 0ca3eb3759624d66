"""Devices and processes: which device a run uses, and the torch.distributed group under torchrun.

Outside torchrun (WORLD_SIZE unset or 1) everything here is a no-op: rank 0 of 1 process.
"""

from __future__ import annotations

import gc
import os

import torch
import torch.distributed as dist

from ..errors import WaveError, reason


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N -> a torch.device; WaveError for a GPU that is not there.

    auto is cuda when PyTorch sees a GPU, else cpu. Under torchrun, auto and cuda mean
    cuda:LOCAL_RANK, so each process of a node gets its own GPU.
    """
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise WaveError(f"unknown device {str(name)!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise WaveError(f"device {text}: PyTorch sees no CUDA GPU (torch {torch.__version__}, {build}): use --device cpu or auto")
    count = torch.cuda.device_count()
    if text == "cuda":
        torchrun = env_world_size() > 1
        index = int(os.environ.get("LOCAL_RANK", "0")) if torchrun else torch.cuda.current_device()
        if index >= count:
            raise WaveError(f"LOCAL_RANK {index} but only {count} GPU(s) visible: start at most {count} processes per node (torchrun --nproc_per_node {count})")
    else:
        index = int(text[5:])
        if index >= count:
            raise WaveError(f"device {text}: only {count} GPU(s) visible: use cuda:0 to cuda:{count - 1}")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if env_world_size() > 1 and index != local_rank:
            raise WaveError(f"device {text} under torchrun would put several processes on one GPU: use --device cuda (each process takes cuda:LOCAL_RANK)")
    return torch.device("cuda", index)


def distributed_context() -> tuple[int, int]:
    """(rank, world_size) of this process; initialises torch.distributed when run by torchrun.

    Outside torchrun (WORLD_SIZE unset or 1) this is (0, 1) and nothing is initialised. The group
    gets gloo for CPU tensors and, where GPUs are visible, NCCL for CUDA tensors. It is left
    initialised for later calls; `close_distributed()` ends it.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = env_world_size()
    if world <= 1:
        return 0, 1
    if not dist.is_available():
        raise WaveError(f"WORLD_SIZE={world} but this PyTorch build has no torch.distributed: run one process or install a full PyTorch build")
    backend = "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)  # NCCL must know its GPU before the first collective
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend)
    except (ValueError, RuntimeError) as e:
        raise WaveError(f"cannot start torch.distributed with WORLD_SIZE={world} ({reason(e)}): launch with torchrun, or unset WORLD_SIZE") from None
    return dist.get_rank(), dist.get_world_size()


def close_distributed(wait: bool = True) -> None:
    """Wait for every rank, then destroy the process group, if one is running. A rank that tears
    its group down while a peer still has gloo work in flight can make that peer abort (SIGABRT,
    "terminate called without an active exception"); after the barrier no work is in flight.
    After a failure on this rank alone (`wait=False`), the others may be blocked in a collective
    and never reach the barrier: leave at once and let torchrun stop them."""
    if dist.is_available() and dist.is_initialized():
        # DistributedDataParallel wrappers live in reference cycles: collected here, while the
        # group is still up, not during interpreter shutdown, where freeing them after the group
        # is gone killed rank 0 about once in seven runs ("terminate called without an active exception").
        gc.collect()
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_floats(values: list[float], device: torch.device, world: int) -> list[float]:
    """Rank 0's `values` on every rank (timings differ per rank; results must not)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def barrier() -> None:
    """Wait for every rank, if a process group is running."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

