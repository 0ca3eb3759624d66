"""The DeiT recipe's regularisers, named as timm names them, each off by default and each
deterministic from (seed, step, rank) so that a resumed run stays bit-identical:

- `mix_batch`: mixup and cutmix of a whole batch with its reversed self (timm's `Mixup`, mode
  "batch"), drawn from a `numpy.random.RandomState` in the order timm draws from `np.random`;
- `random_erase`: random erasing of one box per image, filled with per-pixel normal noise (timm's
  `RandomErasing`, mode "pixel"), drawn from a `random.Random` in the order timm draws from
  `random`, the noise from torch's generator (which the engine seeds every step);
- `ModelEma`: an exponential moving average of the weights (timm's `ModelEmaV3` without warm-up);
- label smoothing lives in the losses (`objectives.py`), drop-path in the model (`backends/torch.py`).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch import Tensor, nn


def mix_batch(x: Tensor, rs: np.random.RandomState, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0,
              switch_prob: float = 0.5) -> tuple[Tensor, float]:
    """(mixed images, lam): with probability `prob`, the batch (B, C, H, W) mixed with x.flip(0)
    by mixup (x * lam + x.flip(0) * (1 - lam), lam ~ Beta(a, a)) or cutmix (a box of x.flip(0)
    pasted in, lam = the share of the image left). Targets mix the same way: the loss is
    lam * loss(labels) + (1 - lam) * loss(labels.flip(0)). lam = 1.0: the batch as it was."""
    lam, use_cutmix = 1.0, False
    if rs.rand() < prob:
        if mixup_alpha > 0 and cutmix_alpha > 0:
            use_cutmix = rs.rand() < switch_prob
            lam = rs.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rs.beta(mixup_alpha, mixup_alpha)
        elif mixup_alpha > 0:
            lam = rs.beta(mixup_alpha, mixup_alpha)
        else:
            use_cutmix, lam = True, rs.beta(cutmix_alpha, cutmix_alpha)
        lam = float(lam)
    if lam == 1.0:
        return x, 1.0
    if not use_cutmix:
        return x * lam + x.flip(0) * (1.0 - lam), lam
    h, w = x.shape[-2:]
    ratio = math.sqrt(1 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = rs.randint(0, h), rs.randint(0, w)
    top, bottom = int(np.clip(cy - cut_h // 2, 0, h)), int(np.clip(cy + (cut_h + 1) // 2, 0, h))
    left, right = int(np.clip(cx - cut_w // 2, 0, w)), int(np.clip(cx + (cut_w + 1) // 2, 0, w))
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / float(h * w)  # the share actually kept


def random_erase(x: Tensor, rnd: random.Random, probability: float, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3) -> Tensor:
    """Each image (B, C, H, W) of `x`, with probability `probability`, gets one box of area
    min_area..max_area and aspect min_aspect..1/min_aspect (log-uniform) replaced by N(0, 1)
    noise per pixel; up to 10 tries to fit the box. A new tensor; `x` is not changed."""
    out = x.clone()
    b, c, h, w = x.shape
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for i in range(b):
        if rnd.random() > probability:
            continue
        for _ in range(10):
            target = rnd.uniform(min_area, max_area) * h * w
            aspect = math.exp(rnd.uniform(*log_aspect))
            bh, bw = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if bw < w and bh < h:
                top, left = rnd.randint(0, h - bh), rnd.randint(0, w - bw)
                out[i, :, top:top + bh, left:left + bw] = torch.empty((c, bh, bw), dtype=x.dtype, device=x.device).normal_()
                break
    return out


class ModelEma:
    """ema = decay * ema + (1 - decay) * weights, after every optimizer step, for every entry of
    the model's state dict (parameters and buffers), in float32 on the model's device."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            self.state[key].lerp_(value.detach().float(), 1.0 - self.decay)

    def copy_of(self, model: nn.Module) -> nn.Module:
        """A copy of `model` holding the averaged weights (to evaluate or save)."""
        return with_state(model, self.state)


def with_state(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A copy of `model` holding `state` (e.g. the moving average of its weights), in its dtypes."""
    import copy

    twin = copy.deepcopy(model)
    twin.load_state_dict({k: v.to(twin.state_dict()[k].dtype) for k, v in state.items()})
    return twin
