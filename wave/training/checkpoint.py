"""Training checkpoints: what a run must share with one to resume it (the fingerprint), and
the file itself (safetensors: model, AdamW state and position; written atomically).

The header format (name, version, reading without torch) belongs to `io/files.py`; this
module writes and restores the tensors.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as _safetensors_bytes
from torch import Tensor, nn

from ..configs import TrainConfig
from ..errors import WaveError, reason
from ..io.files import read_checkpoint_header
from ..io.storage import CHECKPOINT_FORMAT, canonical_safetensors, check_finite, header_metadata, open_safetensors, refuse_unexpected
from .batches import BatchSource


@dataclass
class Position:
    """Where a run stands: the next step to run and what the epoch so far has accumulated."""

    epoch: int = 0  # 0-based epoch of the next step
    step: int = 0  # 0-based step of that epoch
    global_step: int = 0  # optimizer steps done
    history: list[dict] = field(default_factory=list)
    complete: bool = False
    epoch_seconds: float = 0.0  # training time of the current epoch before this session
    loss_sum: float = 0.0  # float64 sum of per-sample losses of the current epoch so far (all ranks)
    ema: dict | None = None  # the weights' moving average (TrainConfig.model_ema), key -> tensor


def resume_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict,
                      model_ema: bool = False) -> Position:
    """Restore `model` and `optimizer` from the checkpoint at `path` and return its position;
    WaveError if the checkpoint was made with another fingerprint, or holds a tensor that a
    checkpoint of this run (`model_ema`: with the weights' moving average) does not."""
    header, tensors = read_checkpoint(path)
    diff = first_difference(header.get("fingerprint"), fingerprint)
    if diff:
        key, saved, now = diff
        raise WaveError(f"{path} was made with other settings ({key}: {_short(saved)} there, {_short(now)} now): "
                        f"drop --resume to start over, or resume with the same settings")
    what = "a checkpoint of this model and optimizer" + (" with a moving average of the weights" if model_ema else "")
    refuse_unexpected(path, tensors, expected_tensors(model, optimizer, model_ema), what, "drop --resume to start over")
    restore(path, tensors, model, optimizer)
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    return Position(epoch=header["epoch"], step=header["step"], global_step=header["global_step"],
                    history=header["history"], complete=header["complete"],
                    epoch_seconds=header["epoch_seconds"], loss_sum=float(tensors["train.loss_sum"]), ema=ema or None)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def jsonable(x):
    """`x` as it reads back from JSON (tuples become lists, odd values strings)."""
    return json.loads(json.dumps(x, sort_keys=True, default=str))


# The DeiT recipe's settings at their defaults (off) stay out of the fingerprint.
_RECIPE_DEFAULTS = {name: getattr(TrainConfig(), name) for name in
                    ("smoothing", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "reprob", "drop_path", "model_ema", "model_ema_decay")}


def fingerprint(config: TrainConfig, amp: bool, meta: dict | None, source: BatchSource, model: nn.Module, groups: list[dict]) -> dict:
    """Everything a resumed run must share with the checkpoint for the result to be the same.

    Not included: checkpoint_every, the device, the process count, torch.compile (they change no
    number beyond rounding), the DataLoader workers. The data are identified by their shape, all labels
    and up to 1,024 image rows (image files: by their paths, sizes and transform).
    """
    settings = asdict(config)
    settings.pop("checkpoint_every")
    settings.pop("compile")
    for name, default in _RECIPE_DEFAULTS.items():  # checkpoints written before the recipe's fields still resume
        if settings[name] == default:
            settings.pop(name)
    if not settings["augment"]:
        settings.pop("augment")  # checkpoints written before the field existed still resume
    settings["amp"] = amp
    layout = "".join(f"{k}:{tuple(v.shape)}:{v.dtype};" for k, v in model.state_dict().items())
    return jsonable({
        "config": settings,
        "meta": meta or {},
        "data": {
            "samples": len(source),
            "image_shape": list(source.image_shape),
            "labels": _digest(np.ascontiguousarray(source.labels, dtype=np.int64).tobytes()),
            "images": source.digest(),
        },
        "model": {"parameters": sum(p.numel() for p in model.parameters()), "layout": _digest(layout)},
        "param_groups": [
            {"parameters": len(g["params"]), "weight_decay": g.get("weight_decay", config.weight_decay), "lr_scale": g.get("lr_scale", 1.0)}
            for g in groups
        ],
    })


def first_difference(saved, now, path: str = ""):
    """(dotted path, saved value, current value) of the first leaf where two JSON values differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            diff = first_difference(saved.get(key), now.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        for i, (a, b) in enumerate(zip(saved, now)):
            diff = first_difference(a, b, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return None if saved == now else (path, saved, now)


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def read_checkpoint(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """(header, tensors) of a training checkpoint; WaveError if it is not one this code reads."""
    fix = "delete it or pass another checkpoint path"
    with open_safetensors(path, framework="pt", fix=fix) as f:
        header = read_checkpoint_header(path, f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    check_finite(path, {k: t.float().numpy() for k, t in tensors.items() if t.is_floating_point()}, "checkpoint",
                 fix="drop --resume to start over")
    return header, tensors


def _host_copy(t: Tensor) -> Tensor:
    """A contiguous CPU copy sharing no storage (safetensors refuses shared or strided tensors)."""
    return t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def checkpoint_tensors(model_state: dict, optimizer_state: dict, loss_sum: Tensor, ema: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """The tensors of a checkpoint by name, not yet copied: `model.{key}` (the model's state dict),
    `optim.{param index}.{key}` (`optimizer_state`, optimizer.state_dict()["state"]: AdamW's
    exp_avg, exp_avg_sq, step), `train.loss_sum` (float64 sum of the per-sample losses of the
    epoch so far), `ema.{key}` (the weights' moving average, if kept)."""
    tensors = {}
    for key, value in model_state.items():
        if not isinstance(value, Tensor):
            raise WaveError(f"model state {key!r} is a {type(value).__name__}, not a tensor: the training engine can only checkpoint tensors")
        tensors[f"model.{key}"] = value
    for index, state in optimizer_state.items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    tensors["train.loss_sum"] = loss_sum
    for key, value in (ema or {}).items():
        tensors[f"ema.{key}"] = value
    return tensors


def expected_tensors(model: nn.Module, optimizer: torch.optim.Optimizer, ema: bool) -> set[str]:
    """Every tensor name a checkpoint of `model` and `optimizer` may hold: `checkpoint_tensors`'
    names for the optimizer's state on every parameter and, with `ema`, a moving average of
    every entry of the model's state (`ModelEma` keeps one per entry)."""
    state = model.state_dict()
    indices = [i for group in optimizer.state_dict()["param_groups"] for i in group["params"]]
    placeholder = torch.zeros(())
    per_param = dict.fromkeys(_optimizer_state_names(optimizer), placeholder)
    return set(checkpoint_tensors(state, {i: per_param for i in indices}, placeholder, state if ema else None))


def _optimizer_state_names(optimizer: torch.optim.Optimizer) -> list[str]:
    """The state `optimizer` keeps per parameter (AdamW: step, exp_avg, exp_avg_sq), read off one
    step of its kind on a one-element parameter: a run about to resume has taken no step, so its
    own optimizer holds no state yet to read the names from."""
    accepted = inspect.signature(type(optimizer)).parameters  # AdamW's defaults hold a setting its constructor does not take
    settings = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    param = torch.zeros(1, requires_grad=True)
    param.grad = torch.zeros(1)
    probe = type(optimizer)([param], **settings)
    probe.step()
    return list(probe.state_dict()["state"][0])


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, loss_sum: Tensor, header: dict,
                     ema: dict[str, Tensor] | None = None) -> bytes:
    """The checkpoint file's bytes: the tensors of `checkpoint_tensors`, everything else JSON in
    the metadata; raises NonFinite rather than serialise a NaN or inf."""
    named = checkpoint_tensors(model.state_dict(), optimizer.state_dict()["state"], loss_sum, ema)
    tensors = {name: _host_copy(value) for name, value in named.items()}
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFinite(f"{bad[0]} holds NaN or inf")
    return canonical_safetensors(_safetensors_bytes(tensors, metadata=header_metadata(CHECKPOINT_FORMAT, header)))


def restore(path: Path, tensors: dict[str, Tensor], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the model and optimizer state saved by `_checkpoint_bytes`, in place."""
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        raise WaveError(f"{path} does not fit this model ({reason(e)}): drop --resume to start over") from None
    optim_state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    # The hyper-parameters stay the current ones: the fingerprint already proved them equal.
    optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})


class NonFinite(Exception):
    """Internal: a NaN or inf was found; train() turns it into a one-line WaveError."""
