"""What a training step minimises and at which rate: the learning-rate schedule, AdamW's
parameter groups, and the per-sample losses (cross-entropy, knowledge distillation)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..configs import TrainConfig
from ..errors import WaveError

LossFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""(logits (B, classes), images (B, C, H, W), labels (B,), dataset indices (B,)) -> losses (B,)."""


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


def cross_entropy_loss(logits: Tensor, images: Tensor, labels: Tensor, indices: Tensor, smoothing: float = 0.0) -> Tensor:
    """Per-sample cross-entropy (B,), in float32 whatever the autocast dtype of the logits;
    `smoothing`: against (1 - smoothing) * one-hot + smoothing / classes (timm's --smoothing)."""
    return F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=smoothing)


def smoothed(smoothing: float) -> LossFn:
    """`cross_entropy_loss` with label smoothing (itself when `smoothing` is 0)."""
    if not smoothing:
        return cross_entropy_loss
    return lambda logits, images, labels, indices: cross_entropy_loss(logits, images, labels, indices, smoothing)


def distillation_loss(temperature: float, alpha: float, smoothing: float = 0.0) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """`kd_loss` with these settings, checked once, here, rather than in every training step:
    (student logits (B, classes), teacher logits (B, classes), labels (B,)) -> losses (B,)."""
    if not temperature > 0:
        raise WaveError(f"distillation temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise WaveError(f"distillation weight (alpha) must be in [0, 1], got {alpha}")

    def loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return kd_loss(student_logits, teacher_logits, labels, temperature, alpha, smoothing)

    return loss


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float,
            smoothing: float = 0.0) -> Tensor:
    """Per-sample distillation loss (B,), float32:

        alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

    The T^2 keeps the KL term's gradient on the scale of the CE term's (Hinton et al., 2015);
    the CE term takes label `smoothing` as `cross_entropy_loss` does. The settings are not
    checked here, in the training step: `distillation_loss` (and DistillConfig) check them once.
    """
    student = student_logits.float()
    ce = F.cross_entropy(student, labels, reduction="none", label_smoothing=smoothing) if alpha < 1 else None
    if alpha == 0:
        return ce
    log_p_student = F.log_softmax(student / temperature, dim=-1)  # (B, classes)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # (B,)
    kd = (alpha * temperature * temperature) * kl
    return kd if ce is None else kd + (1 - alpha) * ce
