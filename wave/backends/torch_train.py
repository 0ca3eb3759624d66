"""The training engine: one deterministic, resumable, multi-process loop for any classifier.

`wave train`, `wave distill` and `wave spawn` all call `train`; what differs between them is the
model, the loss (`cross_entropy_loss`, `kd_loss`, or any per-sample loss) and the parameter
groups. The model is any `nn.Module` mapping images (B, C, H, W) float32 to logits (B, classes).

What the loop guarantees:

- Determinism. Epoch e visits the samples in the order `np.random.default_rng([seed, e])
  .permutation(n)`, whatever the process count or resumption; the global torch generators are
  reseeded before every step from (seed, global step, rank), so dropout-like randomness needs no
  saved state. Same seed, same machine and thread count: bit-identical parameters. On CUDA the
  deterministic kernels are asked for; an op that has none (flash attention's backward, say)
  warns rather than fails.
- Exact resumption. A checkpoint (safetensors, written atomically) holds the model, the AdamW
  state and the position (epoch, step); resuming replays nothing and skips the batches already
  done, so an interrupted run ends bit-identical to an uninterrupted one.
- Multi-process data parallelism under torchrun. Every rank draws the same global batch and
  takes `batch[rank::world]`; its loss is sum(per-sample losses) * world / len(batch), which
  DistributedDataParallel averages over ranks into exactly the one-process mean gradient.
- No NaN checkpoint. Non-finite losses or gradient norms are flagged on the device (no host
  sync) and checked every 20 steps, at the same steps on every rank, and before every checkpoint write;
  the run stops with a WaveError and the last good checkpoint stays on disk.

Progress and checkpoints come from rank 0 only; every rank returns the same `TrainResult`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save as _safetensors_bytes
from torch import Tensor, nn

from ..errors import WaveError
from ..files import atomic_write_bytes

# cuBLAS is only deterministic with a fixed workspace; the variable must be set before the
# first cuBLAS call, so it is set on import (a user's own value wins).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

CHECKPOINT_FORMAT = "waveinit.checkpoint"
CHECKPOINT_VERSION = 1  # bump on any change that an older reader would misread

_PROGRESS_SECONDS = 0.5  # report "step" progress at most this often (wall time, rank 0)
_HEALTH_EVERY = 20  # at most this many steps between non-finite checks: each costs a host sync (and an all_reduce)
_DEVICE_DATA_BYTES = 1 << 30  # training images up to this size are copied to the GPU once
_NO_BAD_STEP = _HEALTH_EVERY  # "no non-finite step" in a health window (indices are 0.._HEALTH_EVERY-1)

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(logits (B, classes), images (B, C, H, W), labels (B,), dataset indices (B,)) -> losses (B,)."""


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set (ignored when max_steps is set)
    batch_size: int = 128  # GLOBAL batch size, split over processes; the last batch may be smaller
    lr: float = 1e-3  # peak learning rate (AdamW); a group's peak is lr * its "lr_scale"
    weight_decay: float = 0.05  # AdamW's decoupled decay, for groups that set none themselves
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of all steps, then cosine decay
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0  # max L2 norm of the whole gradient; None: no clipping
    seed: int = 0  # data order and per-step randomness (not the model's initialisation)
    max_steps: int | None = None  # total optimizer steps (the schedule spans them); None: epochs decide
    checkpoint_every: int = 0  # also checkpoint every N global steps inside an epoch (0: epoch ends only)
    amp: bool | None = None  # bf16 autocast for forward and loss; None: on for CUDA, off on CPU

    def check(self) -> None:
        """WaveError naming the first invalid setting."""
        rules = [
            (self.epochs >= 1 or self.max_steps is not None, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_fraction < 1, f"warm-up fraction must be in [0, 1), got {self.warmup_fraction}"),
            (0 <= self.min_lr_ratio <= 1, f"min lr ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_clip is None or self.grad_clip > 0, f"gradient clip must be positive or None, got {self.grad_clip}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1, f"max steps must be at least 1, got {self.max_steps}"),
            (self.checkpoint_every >= 0, f"checkpoint every must be >= 0 steps, got {self.checkpoint_every}"),
        ]
        for ok, message in rules:
            if not ok:
                raise WaveError(message)


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
    event: str = "step"  # "step" | "epoch" | "resumed" | "checkpoint"


@dataclass
class TrainResult:
    history: list[dict]  # per epoch: epoch (1-based count), train_loss, lr, seconds, images_per_second, eval
    steps: int  # optimizer steps done in total (this call and the ones it resumed)
    seconds: float  # wall time of this call
    resumed_from: int | None = None  # global step the call resumed from; None for a fresh start


# ----------------------------------------------------------------------------- devices, processes

def _env_world_size() -> int:
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
        torchrun = _env_world_size() > 1
        index = int(os.environ.get("LOCAL_RANK", "0")) if torchrun else torch.cuda.current_device()
        if index >= count:
            raise WaveError(f"LOCAL_RANK {index} but only {count} GPU(s) visible: start at most {count} processes per node (torchrun --nproc_per_node {count})")
    else:
        index = int(text[5:])
        if index >= count:
            raise WaveError(f"device {text}: only {count} GPU(s) visible: use cuda:0 to cuda:{count - 1}")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if _env_world_size() > 1 and index != local_rank:
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
    world = _env_world_size()
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
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WaveError(f"cannot start torch.distributed with WORLD_SIZE={world} ({reason}): launch with torchrun, or unset WORLD_SIZE") from None
    return dist.get_rank(), dist.get_world_size()


def close_distributed() -> None:
    """Wait for every rank, then destroy the process group, if one is running. A rank that tears
    its group down while a peer still has gloo work in flight can make that peer abort (SIGABRT,
    "terminate called without an active exception"); after the barrier no work is in flight."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _broadcast_floats(values: list[float], device: torch.device, world: int) -> list[float]:
    """Rank 0's `values` on every rank (timings differ per rank; results must not)."""
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


# ----------------------------------------------------------------------------- schedule, groups, losses

def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) out of `total_steps`.

    Warm-up: the first W = int(warmup_fraction * total_steps) steps rise linearly,
    lr * (step + 1) / (W + 1), so step 0 already learns and step W is the first at the peak.
    Then a half cosine falls from lr at step W to lr * min_lr_ratio at the last step,
    total_steps - 1; steps past the end stay at the floor.
    """
    warmup = int(config.warmup_fraction * total_steps)
    peak, floor = config.lr, config.lr * config.min_lr_ratio
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))  # 0 at the peak, 1 at the end
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


_NO_DECAY_SUFFIXES = ("pos_embed", "cls_token")


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay for matrices, none for biases, norms (ndim <= 1),
    position embeddings and class tokens (timm's rule). Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(_NO_DECAY_SUFFIXES) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    return [g for g in groups if g["params"]]


def cross_entropy_loss(logits: Tensor, images: Tensor, labels: Tensor, indices: Tensor) -> Tensor:
    """Per-sample cross-entropy (B,), in float32 whatever the autocast dtype of the logits."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float) -> Tensor:
    """Per-sample distillation loss (B,), float32:

        alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

    The T^2 keeps the KL term's gradient on the scale of the CE term's (Hinton et al., 2015).
    """
    if not temperature > 0:
        raise WaveError(f"distillation temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise WaveError(f"distillation weight (alpha) must be in [0, 1], got {alpha}")
    student = student_logits.float()
    ce = F.cross_entropy(student, labels, reduction="none") if alpha < 1 else None
    if alpha == 0:
        return ce
    log_p_student = F.log_softmax(student / temperature, dim=-1)  # (B, classes)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # (B,)
    kd = (alpha * temperature * temperature) * kl
    return kd if ce is None else kd + (1 - alpha) * ce


# ----------------------------------------------------------------------------- inference

@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, each submodule's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _as_images(images: np.ndarray | Tensor) -> Tensor:
    """A float32 tensor of `images`, without a copy where none is needed."""
    if isinstance(images, Tensor):
        return images.float()
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


@torch.no_grad()
def _shard_logits(model: nn.Module, images: Tensor, batch_size: int, device: torch.device, rank: int, world: int) -> Tensor:
    """float32 logits (len(range(rank, n, world)), classes) on `device` of this rank's images[rank::world]."""
    shard = images[rank::world]
    if len(shard) == 0:  # more ranks than images: one forward to learn the class count
        with _eval_mode(model):
            return model(images[:1].to(device)).float()[:0]
    with _eval_mode(model):
        chunks = [model(shard[i:i + batch_size].to(device, non_blocking=True)).float() for i in range(0, len(shard), batch_size)]
    return torch.cat(chunks)


def predict_logits(model: nn.Module, images: np.ndarray | Tensor, batch_size: int, device: str | torch.device) -> Tensor:
    """Logits (n, classes), float32 on the CPU, in eval mode without gradients.

    Under torch.distributed every rank computes images[rank::world] and the pieces are
    all-gathered, so each rank returns the whole (n, classes) in the original order.
    """
    device = resolve_device(device)
    rank, world = distributed_context()
    images = _as_images(images)
    n = len(images)
    if n == 0:
        raise WaveError("predict_logits got no images")
    local = _shard_logits(model, images, batch_size, device, rank, world)
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


def evaluate(model: nn.Module, images: np.ndarray | Tensor, labels: np.ndarray | Tensor, batch_size: int, device: str | torch.device) -> dict:
    """{"accuracy": fraction correct in [0, 1], "loss": mean cross-entropy, "samples": n}.

    Under torch.distributed each rank scores images[rank::world] and the sums are all-reduced,
    so every rank gets the same numbers.
    """
    device = resolve_device(device)
    rank, world = distributed_context()
    images = _as_images(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(images)
    if n == 0 or len(labels) != n:
        raise WaveError(f"evaluate needs as many labels as images, at least one: got {n} images and {len(labels)} labels")
    logits = _shard_logits(model, images, batch_size, device, rank, world)  # (n_rank, classes)
    y = labels[rank::world].to(device)
    stats = torch.stack([
        F.cross_entropy(logits, y, reduction="none").double().sum(),
        (logits.argmax(-1) == y).double().sum(),
    ])
    if world > 1:
        dist.all_reduce(stats)
    loss_sum, correct = stats.tolist()
    return {"accuracy": correct / n, "loss": loss_sum / n, "samples": n}


# ----------------------------------------------------------------------------- checkpoints

def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def _jsonable(x):
    """`x` as it reads back from JSON (tuples become lists, odd values strings)."""
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _fingerprint(config: TrainConfig, amp: bool, meta: dict | None, images: np.ndarray, labels: np.ndarray,
                 model: nn.Module, groups: list[dict]) -> dict:
    """Everything a resumed run must share with the checkpoint for the result to be the same.

    Not included: checkpoint_every, the device, the process count (they change no number
    beyond rounding). The data are identified by their shape, all labels and up to 1,024 image rows.
    """
    settings = asdict(config)
    settings.pop("checkpoint_every")
    settings["amp"] = amp
    rows = images[:: max(1, len(images) // 1024)]
    layout = "".join(f"{k}:{tuple(v.shape)}:{v.dtype};" for k, v in model.state_dict().items())
    return _jsonable({
        "config": settings,
        "meta": meta or {},
        "data": {
            "samples": len(images),
            "image_shape": list(images.shape[1:]),
            "labels": _digest(np.ascontiguousarray(labels, dtype=np.int64).tobytes()),
            "images": _digest(np.ascontiguousarray(rows, dtype=np.float32).tobytes()),
        },
        "model": {"parameters": sum(p.numel() for p in model.parameters()), "layout": _digest(layout)},
        "param_groups": [
            {"parameters": len(g["params"]), "weight_decay": g.get("weight_decay", config.weight_decay), "lr_scale": g.get("lr_scale", 1.0)}
            for g in groups
        ],
    })


def _first_difference(saved, now, path: str = ""):
    """(dotted path, saved value, current value) of the first leaf where two JSON values differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            diff = _first_difference(saved.get(key), now.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        for i, (a, b) in enumerate(zip(saved, now)):
            diff = _first_difference(a, b, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return None if saved == now else (path, saved, now)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def read_checkpoint_header(path: str | Path) -> dict:
    """The JSON header of a training checkpoint (position, history, fingerprint, ...), tensors unread.

    WaveError if the file is not a readable waveinit training checkpoint of a known version.
    """
    header, _ = _read_checkpoint(Path(path), with_tensors=False)
    return header


def _read_checkpoint(path: Path, with_tensors: bool = True) -> tuple[dict, dict[str, Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WaveError(f"{path} is not a readable safetensors file ({reason}): delete it or pass another checkpoint path") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        what = f"a {metadata['format']} file" if "format" in metadata else "a safetensors file without a waveinit header"
        raise WaveError(f"{path} is {what}, not a training checkpoint: pass another checkpoint path")
    try:
        version = int(metadata.get("format_version", ""))
        header = json.loads(metadata["waveinit"])
    except (KeyError, ValueError):
        raise WaveError(f"{path}: damaged checkpoint header: delete it and start over") from None
    if version > CHECKPOINT_VERSION:
        raise WaveError(f"{path} is a checkpoint of format version {version}, this waveinit reads up to {CHECKPOINT_VERSION}: upgrade waveinit (pip install -U waveinit)")
    return header, tensors


def _host_copy(t: Tensor) -> Tensor:
    """A contiguous CPU copy sharing no storage (safetensors refuses shared or strided tensors)."""
    return t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def _checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, loss_sum: Tensor, header: dict) -> bytes:
    """The checkpoint file's bytes; raises _NonFinite rather than serialise a NaN or inf.

    Tensors: `model.{key}` (the state dict), `optim.{param index}.{key}` (AdamW's exp_avg,
    exp_avg_sq, step, indexed as in optimizer.state_dict()), `train.loss_sum` (float64 sum of the
    per-sample losses of the epoch so far). Everything else is JSON in the metadata.
    """
    tensors = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, Tensor):
            raise WaveError(f"model state {key!r} is a {type(value).__name__}, not a tensor: the training engine can only checkpoint tensors")
        tensors[f"model.{key}"] = _host_copy(value)
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = _host_copy(torch.as_tensor(value))
    tensors["train.loss_sum"] = _host_copy(loss_sum)
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise _NonFinite(f"{bad[0]} holds NaN or inf")
    metadata = {"format": CHECKPOINT_FORMAT, "format_version": str(CHECKPOINT_VERSION), "waveinit": json.dumps(header)}
    return _safetensors_bytes(tensors, metadata=metadata)


def _restore(path: Path, tensors: dict[str, Tensor], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the model and optimizer state saved by `_checkpoint_bytes`, in place."""
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        raise WaveError(f"{path} does not fit this model ({str(e).splitlines()[0]}): drop --resume to start over") from None
    optim_state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    # The hyper-parameters stay the current ones: the fingerprint already proved them equal.
    optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})


class _NonFinite(Exception):
    """Internal: a NaN or inf was found; train() turns it into a one-line WaveError."""


# ----------------------------------------------------------------------------- the loop

@dataclass
class _Position:
    """Where a run stands: the next step to run and what the epoch so far has accumulated."""

    epoch: int = 0  # 0-based epoch of the next step
    step: int = 0  # 0-based step of that epoch
    global_step: int = 0  # optimizer steps done
    history: list[dict] = field(default_factory=list)
    complete: bool = False
    epoch_seconds: float = 0.0  # training time of the current epoch before this session
    loss_sum: float = 0.0  # float64 sum of per-sample losses of the current epoch so far (all ranks)


@contextmanager
def _deterministic() -> Iterator[None]:
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


def _mix(*values: int) -> int:
    """A 63-bit hash of non-negative ints (splitmix64 steps): distinct inputs, unrelated seeds."""
    h = 0
    for v in values:
        h = (h ^ v) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h >> 1


def _seed_step(seed: int, global_step: int, rank: int, device: torch.device) -> None:
    """Reseed the generators a step may draw from (dropout, ...) from (seed, step, rank).

    Resuming at any step then needs no saved generator state. The generators are seeded
    directly: torch.manual_seed also walks every accelerator backend (~150 us a call).
    """
    s = _mix(seed, global_step, rank)
    torch.default_generator.manual_seed(s)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index].manual_seed(s)


def _check_data(images: np.ndarray, labels: np.ndarray) -> int:
    if images.ndim != 4:
        raise WaveError(f"training images must be (n, C, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise WaveError(f"need one label per training image: {len(images)} images, labels of shape {tuple(labels.shape)}")
    if len(images) == 0:
        raise WaveError("no training images")
    return len(images)


def _check_groups(model: nn.Module, groups: list[dict]) -> list[dict]:
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


def _place_data(images: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """Training data as float32 / int64 tensors: on the GPU if they fit (batches are then
    gathered there), else on the CPU (each batch is then copied over from pinned memory)."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    if device.type == "cpu":
        return x, y
    if x.nbytes <= _DEVICE_DATA_BYTES:
        return x.to(device), y.to(device)
    return x, y


def train(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    loss_fn: LossFn = cross_entropy_loss,
    param_groups: list[dict] | None = None,
    device: str | torch.device = "auto",
    checkpoint: str | Path | None = None,
    resume: bool = False,
    eval_data: tuple[np.ndarray, np.ndarray] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    meta: dict | None = None,
) -> TrainResult:
    """Train `model` in place with AdamW on images (n, C, H, W) float32 and labels (n,) int.

    loss_fn gives per-sample losses (B,); the step minimises their mean over the global batch.
    param_groups default to `default_param_groups`; a group's peak lr is config.lr * "lr_scale".
    checkpoint: a file written at every epoch end (and every config.checkpoint_every steps); with
    resume=True an existing one is continued exactly (refused if the fingerprint of the config,
    `meta`, the data or the model differs), and a complete one returns at once with its history.
    resume=False starts over and replaces it (but never a file that is not a checkpoint).
    eval_data (images, labels) is scored at each epoch end. meta (JSON-able) names what the caller
    wants a resumed run to share (dataset, model spec, teacher): it is part of the fingerprint.

    Under torchrun the process group is initialised if needed and the model wrapped in
    DistributedDataParallel. Every rank must see the checkpoint path (rank 0 writes it, all read
    it on resume). When the last batch has fewer samples than there are processes, the ranks
    without one run a forward and backward on one sample with its loss multiplied by 0, so the
    gradient all-reduce still has every rank and the gradient stays the one-process gradient.
    """
    config.check()
    rank, world = distributed_context()
    device = resolve_device(device)
    images, labels = np.asarray(images), np.asarray(labels)
    n = _check_data(images, labels)
    steps_per_epoch = -(-n // config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    epochs = -(-total_steps // steps_per_epoch)  # with max_steps, the last epoch may be partial
    amp = device.type == "cuda" if config.amp is None else bool(config.amp)

    model.to(device)
    groups = _check_groups(model, default_param_groups(model, config.weight_decay) if param_groups is None else param_groups)
    optimizer = torch.optim.AdamW([{**g, "lr": config.lr} for g in groups], lr=config.lr, weight_decay=config.weight_decay)
    params = [p for g in groups for p in g["params"] if p.requires_grad]
    fingerprint = _fingerprint(config, amp, meta, images, labels, model, groups)
    path = Path(checkpoint) if checkpoint is not None else None

    position, resumed_from = _Position(), None
    if path is not None and path.exists():
        if resume:
            position = _resume(path, model, optimizer, fingerprint)
            resumed_from = position.global_step
        else:
            read_checkpoint_header(path)  # refuse to replace a file that is not a checkpoint
    if world > 1:
        dist.barrier()  # every rank has read the checkpoint before rank 0 may replace it
    if position.complete:
        return TrainResult(position.history, position.global_step, 0.0, resumed_from)

    run = _Run(model, optimizer, params, config, loss_fn, device, rank, world, n, steps_per_epoch,
               total_steps, epochs, amp, path, fingerprint, eval_data, on_progress, position)
    was_training = model.training
    try:
        with _deterministic():
            model.train()
            return run.run(images, labels, resumed_from)
    finally:
        model.train(was_training)


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict) -> _Position:
    header, tensors = _read_checkpoint(path)
    diff = _first_difference(header.get("fingerprint"), fingerprint)
    if diff:
        key, saved, now = diff
        raise WaveError(f"{path} was made with other settings ({key}: {_short(saved)} there, {_short(now)} now): "
                        f"drop --resume to start over, or resume with the same settings")
    _restore(path, tensors, model, optimizer)
    return _Position(epoch=header["epoch"], step=header["step"], global_step=header["global_step"],
                     history=header["history"], complete=header["complete"],
                     epoch_seconds=header["epoch_seconds"], loss_sum=float(tensors["train.loss_sum"]))


class _Run:
    """One call of train(): the state of the loop and its small steps."""

    def __init__(self, model, optimizer, params, config, loss_fn, device, rank, world, n, steps_per_epoch,
                 total_steps, epochs, amp, path, fingerprint, eval_data, on_progress, position):
        self.model, self.optimizer, self.params = model, optimizer, params
        self.config, self.loss_fn, self.device, self.rank, self.world = config, loss_fn, device, rank, world
        self.n, self.steps_per_epoch, self.total_steps, self.epochs, self.amp = n, steps_per_epoch, total_steps, epochs, amp
        self.path, self.fingerprint, self.eval_data, self.position = path, fingerprint, eval_data, position
        self.on_progress = on_progress if rank == 0 else None
        self.net = model if world == 1 else nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        self.last_saved: int | None = None  # global step of the newest checkpoint on disk
        self.lr = lr_at(position.global_step, total_steps, config)
        self.start = time.perf_counter()
        self.session_steps = 0
        self.session_images = 0

    # -- the outer loop

    def run(self, images: np.ndarray, labels: np.ndarray, resumed_from: int | None) -> TrainResult:
        pos = self.position
        x_all, y_all = _place_data(images, labels, self.device)
        if self.eval_data is not None:  # converted once, not every epoch
            self.eval_data = _place_data(*self.eval_data, self.device)
        # On-device accumulators: reading them forces a host sync, so it happens only at reports.
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # this rank's share of the epoch's loss sum
        # Health window: per step since the last check, loss sum + gradient norm (non-finite iff
        # either is); the global step of entry 0, and how many entries are filled.
        self.health = torch.zeros(_HEALTH_EVERY, dtype=torch.float32, device=self.device)
        self.health_start, self.health_len = pos.global_step, 0

        if resumed_from is not None:
            self.last_saved = resumed_from
            self._report("resumed", pos.epoch, pos.step, self._mean(pos.loss_sum, pos.step))
        elif self.path is not None:
            self._save()  # step 0: the checkpoint on disk now belongs to this run

        for epoch in range(pos.epoch, self.epochs):
            self._run_epoch(epoch, x_all, y_all)

        seconds = _broadcast_floats([time.perf_counter() - self.start], self.device, self.world)[0]
        return TrainResult(pos.history, pos.global_step, seconds, resumed_from)

    def _run_epoch(self, epoch: int, x_all: Tensor, y_all: Tensor) -> None:
        config, pos, bs = self.config, self.position, self.config.batch_size
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        first = pos.step if epoch == pos.epoch else 0
        order = torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(self.n)).to(x_all.device)
        # Rank 0 carries what earlier sessions summed; the other ranks add only their own shards.
        self.loss_sum.fill_(pos.loss_sum if (first and self.rank == 0) else 0.0)
        self.local_seen = min(first * bs, self.n) if self.rank == 0 else 0  # samples behind loss_sum
        self.epoch_start = time.perf_counter() - (pos.epoch_seconds if first else 0.0)
        self.last_report = time.perf_counter()

        for step in range(first, steps):
            g = epoch * self.steps_per_epoch + step
            batch = order[step * bs:(step + 1) * bs]  # (B,) dataset indices, the same on every rank
            self._train_step(g, batch, x_all, y_all)
            done = step + 1
            pos.epoch, pos.step, pos.global_step = epoch, done, g + 1
            if self.path is not None and config.checkpoint_every and (g + 1) % config.checkpoint_every == 0 and done < steps:
                self._checkpoint(epoch, done)
            elif self.health_len == _HEALTH_EVERY:  # the same step on every rank
                self._check_finite()
            if self.on_progress is not None and time.perf_counter() - self.last_report >= _PROGRESS_SECONDS:
                self._report("step", epoch, done, self._mean(self.loss_sum.item(), None))

        self._end_epoch(epoch, steps)

    # -- one optimizer step

    def _train_step(self, g: int, batch: Tensor, x_all: Tensor, y_all: Tensor) -> None:
        """Forward, backward and AdamW step on this rank's shard of the global batch `batch`.

        Nothing here waits for the device: sizes are known on the host, and the loss sum and
        the health signal stay on the device until a report or a check reads them.
        """
        size = len(batch)  # host-known: slicing needs no sync
        shard = batch if self.world == 1 else batch[self.rank::self.world]
        empty = len(shard) == 0  # last batch smaller than the process count
        # An empty shard still runs forward and backward, on one sample with its loss times 0:
        # DDP needs every rank's gradients for the all-reduce, and the zero adds nothing.
        idx = batch[:1] if empty else shard
        x, y = x_all[idx], y_all[idx]  # (b, C, H, W), (b,)
        if x.device != self.device:  # data too large for the GPU: copy from pinned memory, asynchronously
            x, y, idx = (t.pin_memory().to(self.device, non_blocking=True) for t in (x, y, idx))

        self.lr = lr_at(g, self.total_steps, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_scale"]
        _seed_step(self.config.seed, g, self.rank, self.device)

        with self.autocast():
            logits = self.net(x)  # (b, classes)
            losses = self.loss_fn(logits, x, y, idx)
        if losses.shape != (len(idx),):
            raise WaveError(f"the loss function must return per-sample losses of shape ({len(idx)},), got {tuple(losses.shape)}")
        shard_sum = losses.float().sum()
        # sum * world / size: DDP divides by world, leaving the mean over the whole global batch.
        loss = shard_sum * (0.0 if empty else self.world / size)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        signal = shard_sum.detach() if not empty else torch.zeros((), device=self.device)
        if self.config.grad_clip is not None:
            signal = signal + nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)  # inf/NaN in either stays
        self.optimizer.step()

        self.health[self.health_len] = signal
        self.health_len += 1
        if not empty:
            self.loss_sum.add_(shard_sum.detach())
            self.local_seen += len(shard)
        self.session_steps += 1
        self.session_images += size

    def autocast(self):
        """bf16 autocast for forward and loss when amp is on (no GradScaler: bf16 has float32's range)."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # -- checks, checkpoints, reports

    def _check_finite(self) -> None:
        """WaveError if a step since the last check had a non-finite loss or gradient norm, on any rank."""
        if self.health_len == 0:  # nothing ran since the last check (equally so on every rank)
            return
        bad = ~torch.isfinite(self.health[:self.health_len])
        first = torch.where(bad.any(), bad.int().argmax(), _NO_BAD_STEP)  # index of the first bad step
        if self.world > 1:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        index = int(first.item())
        if index != _NO_BAD_STEP:
            g = self.health_start + index
            self._fail(f"non-finite loss at epoch {g // self.steps_per_epoch + 1}, step {g % self.steps_per_epoch + 1} (global step {g + 1})")
        self.health_start, self.health_len = self.health_start + self.health_len, 0

    def _fail(self, what: str) -> None:
        if self.path is None:
            kept = "no checkpoint was asked for"
        elif self.last_saved is None:
            kept = "no checkpoint was written yet"
        else:
            kept = f"the last good checkpoint {self.path} (global step {self.last_saved}) is kept"
        raise WaveError(f"{what}: {kept}; lower --lr, or check the data for NaN/inf values")

    def _epoch_loss_sum(self) -> float:
        """The epoch's loss sum over all ranks so far (a collective: call it on every rank)."""
        total = self.loss_sum.clone()
        if self.world > 1:
            dist.all_reduce(total)
        return float(total.item())

    def _checkpoint(self, epoch: int, step: int) -> None:
        """A mid-epoch checkpoint: checked first, so a non-finite state never reaches the disk."""
        self._check_finite()
        pos = self.position
        pos.loss_sum = self._epoch_loss_sum()
        pos.epoch_seconds = time.perf_counter() - self.epoch_start
        self._save()
        self._report("checkpoint", epoch, step, self._mean(self.loss_sum.item(), None))

    def _save(self) -> None:
        """Rank 0 writes the checkpoint of the current position; all ranks learn whether it worked."""
        pos = self.position
        header = {
            "epoch": pos.epoch, "step": pos.step, "global_step": pos.global_step, "complete": pos.complete,
            "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "epoch_seconds": pos.epoch_seconds, "history": pos.history, "fingerprint": self.fingerprint,
            "param_groups": [
                {**_jsonable({k: v for k, v in g.items() if k != "params"}), "parameters": len(g["params"])}
                for g in self.optimizer.param_groups
            ],
            "world_size": self.world, "torch": torch.__version__,
        }
        status, error = 0, None
        if self.rank == 0:
            try:
                data = _checkpoint_bytes(self.model, self.optimizer, torch.tensor(pos.loss_sum, dtype=torch.float64), header)
                atomic_write_bytes(self.path, data)
            except _NonFinite as e:
                status, error = 1, e
            except OSError as e:
                status, error = 2, e
        if self.world > 1:  # doubles as the barrier after the write
            flag = torch.tensor(status, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            status = int(flag.item())
        if status == 1:
            self._fail(f"non-finite parameters before the checkpoint at global step {pos.global_step} ({error or 'on rank 0'})")
        if status == 2:
            raise WaveError(f"cannot write checkpoint {self.path} ({error or 'failed on rank 0'}): check the folder and free space")
        self.last_saved = pos.global_step

    def _end_epoch(self, epoch: int, steps: int) -> None:
        pos = self.position
        self._check_finite()
        samples = min(steps * self.config.batch_size, self.n)
        train_loss = self._epoch_loss_sum() / samples
        seconds = _broadcast_floats([time.perf_counter() - self.epoch_start], self.device, self.world)[0]
        result = None
        if self.eval_data is not None:
            result = evaluate(self.model, *self.eval_data, self.config.batch_size, self.device)
        pos.history.append({
            "epoch": epoch + 1, "train_loss": train_loss, "lr": self.lr, "seconds": seconds,
            "images_per_second": samples / seconds if seconds > 0 else float("inf"), "eval": result,
        })
        pos.epoch, pos.step, pos.loss_sum, pos.epoch_seconds = epoch + 1, 0, 0.0, 0.0
        pos.complete = epoch + 1 == self.epochs
        if self.path is not None:
            self._save()
        self._report("epoch", epoch, steps, train_loss, train_loss=train_loss, eval=result)

    def _mean(self, loss_sum: float, steps: int | None) -> float:
        """Running mean loss of the epoch: of rank 0's samples (exact with one process)."""
        seen = self.local_seen if steps is None else min(steps * self.config.batch_size, self.n)
        return loss_sum / seen if seen else float("nan")

    def _report(self, event: str, epoch: int, step: int, loss: float, **extra) -> None:
        if self.on_progress is None:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        pace = elapsed / self.session_steps if self.session_steps else float("nan")
        self.on_progress(Progress(
            epoch=epoch, epochs=self.epochs, step=step, steps_per_epoch=self.steps_per_epoch,
            global_step=self.position.global_step, total_steps=self.total_steps, loss=loss, lr=self.lr,
            images_per_second=self.session_images / elapsed if elapsed > 0 else 0.0,
            seconds_elapsed=elapsed, seconds_left=(self.total_steps - self.position.global_step) * pace,
            event=event, **extra,
        ))
        self.last_report = now
