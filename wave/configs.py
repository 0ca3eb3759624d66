"""The settings of every task, and their defaults: the one place a default is written.

Each task has one frozen dataclass, checked when it is made (a bad value is a WaveError naming
it). The CLI's option defaults, the Python API's keyword defaults, the bench and the examples
all read them from here. Pure Python: importing this module costs nothing (no NumPy, no torch),
so `wave --help` can show the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import WaveError

DEFAULT_TEMPLATE_SIDE = 64  # one attention head's width in ViT-S/B: templates align with heads


def _check(rules: list[tuple[bool, str]]) -> None:
    for ok, message in rules:
        if not ok:
            raise WaveError(message)


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and x > 0 and math.isfinite(x)


@dataclass(frozen=True)
class TrainConfig:
    """One run of the training engine (AdamW, linear warm-up then cosine decay)."""

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
    # Each training batch randomly shifted (up to side / 10 pixels, edges
    # repeated) and flipped left-right. Not for data where left and right differ (digits, text).
    augment: bool = False
    # torch.compile the model for the training steps (evaluation and checkpoints use the model
    # itself). Off by default: benchmarks/bench_engine.py measures what it buys (README).
    compile: bool = False
    # The DeiT recipe's regularisers, timm's names and meanings (training/recipe.py); all off by default.
    smoothing: float = 0.0  # label smoothing of the cross-entropy
    mixup: float = 0.0  # mixup alpha (on when > 0)
    cutmix: float = 0.0  # cutmix alpha (on when > 0)
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    mixup_switch_prob: float = 0.5  # with both on: probability of cutmix rather than mixup
    reprob: float = 0.0  # random erasing probability per image (a box of per-pixel noise)
    drop_path: float = 0.0  # stochastic depth: block l is skipped with probability drop_path * l / (depth - 1)
    model_ema: bool = False  # keep an exponential moving average of the weights, evaluated and saved beside the model
    model_ema_decay: float = 0.9998

    @property
    def changes_inputs(self) -> bool:
        """Whether the engine changes the images it is given (so a teacher's cached logits would be wrong)."""
        return bool(self.augment or self.mixup or self.cutmix or self.reprob)

    def __post_init__(self):
        _check([
            (self.epochs >= 1 or self.max_steps is not None, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (_positive(self.lr), f"learning rate must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.warmup_fraction < 1, f"warm-up fraction must be in [0, 1), got {self.warmup_fraction}"),
            (0 <= self.min_lr_ratio <= 1, f"min lr ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_clip is None or self.grad_clip > 0, f"gradient clip must be positive or None, got {self.grad_clip}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1, f"max steps must be at least 1, got {self.max_steps}"),
            (self.checkpoint_every >= 0, f"checkpoint every must be >= 0 steps, got {self.checkpoint_every}"),
            (0 <= self.smoothing < 1, f"label smoothing must be in [0, 1), got {self.smoothing}"),
            (self.mixup >= 0 and self.cutmix >= 0, f"mixup and cutmix alphas must be >= 0, got {self.mixup} and {self.cutmix}"),
            (0 <= self.mixup_prob <= 1 and 0 <= self.mixup_switch_prob <= 1, "mixup probabilities must be in [0, 1]"),
            (0 <= self.reprob <= 1, f"random erasing probability must be in [0, 1], got {self.reprob}"),
            (0 <= self.drop_path < 1, f"drop-path rate must be in [0, 1), got {self.drop_path}"),
            (0 < self.model_ema_decay < 1, f"EMA decay must be in (0, 1), got {self.model_ema_decay}"),
        ])


# What `wave train` and `wave distill` run with unless told otherwise: tuned on digits, where the
# default ancestry (6x192, 20 epochs) reaches about 91% and its learngene about 95%.
COMMAND_TRAIN = TrainConfig(epochs=20, batch_size=64, lr=2e-3)
# What `wave train --init` runs with: an inherited start wants a lower rate. 3e-4 is the rate the
# bench's sweep chose for every inherited start (wave, wave-nofit, tleg, weight selection; 2e-3
# undid a spawned 2x128's start: 42% -> 30% after one epoch); 5 epochs is a quarter of the
# from-scratch budget (the bench measured 1 epoch, not longer ones).
COMMAND_FINETUNE = TrainConfig(epochs=5, batch_size=64, lr=3e-4)


@dataclass(frozen=True)
class AncestryConfig:
    """The ancestry `wave distill` trains when it is given none: a plain ViT, cross-entropy."""

    depth: int = 6
    width: int = 192
    epochs: int = 20
    lr: float = 2e-3

    def __post_init__(self):
        _check([
            (self.depth >= 1, f"ancestry depth must be at least 1, got {self.depth}"),
            (self.width >= 1, f"ancestry width must be at least 1, got {self.width}"),
            (self.epochs >= 1, f"ancestry epochs must be at least 1, got {self.epochs}"),
            (_positive(self.lr), f"ancestry learning rate must be a positive number, got {self.lr}"),
        ])


DISTILL_INITS = ("random", "nearest-kron")
TEMPLATED_SETS = ("all", "matrices")
# The order of each Kronecker product: "st" is kron(S, T), an (a x b) grid of template-shaped
# blocks (a template is one attention head's block); "ts" is kron(T, S), a (p x q) grid of
# scaler-shaped blocks (the order one public summary of the paper writes). "ts" is the default:
# it distils better and spawns better (docs/bench/ablations.md, "Kronecker order at 12 epochs").
KRON_ORDERS = ("st", "ts")
# The data-free spawn rule's choices (spawning.py says what each does). "choose" (depth only)
# picks, per target, the fixed depth rule whose data-free model has the lowest cross-entropy on
# the fit's first batches (forward passes only; it needs the fit's data).
DEPTH_RULES = ("relative", "first", "even", "interpolate")
WIDTH_RULES = ("pick", "mean", "project")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of an ancestry into a learngene (the auxiliary templated model)."""

    temperature: float = 1.0  # softens both distributions in the KL term
    kd_weight: float = 0.5  # weight of the KL term; 1 - kd_weight goes to cross-entropy on labels
    side: int = DEFAULT_TEMPLATE_SIDE  # template side s
    templates: int = 4  # templates per role
    cache_teacher: bool = True  # compute the teacher's logits once (valid: no random augmentation)
    # The auxiliary's starting factors: "random", or "nearest-kron" (the teacher's own weights'
    # nearest Kronecker sums, `learngene_from_weights`; the auxiliary must then have the teacher's shape).
    init: str = "random"
    # Each weight a sum of kron(T, S), "ts" (scaler-shaped blocks: the study's winner), or of
    # kron(S, T), "st" (template-shaped blocks, a template per head) (KRON_ORDERS).
    order: str = "ts"
    # What is templated: "all" (every parameter a Kronecker sum of shared templates), or
    # "matrices" (the four block matrices, qkv, proj, fc1 and fc2, as in the paper; the other
    # parameters are the auxiliary's own, stored densely in the learngene).
    templated: str = "all"

    def __post_init__(self):
        _check([
            (self.order in KRON_ORDERS, f"Kronecker order must be one of {', '.join(KRON_ORDERS)}, got {self.order!r}"),
            (self.templated in TEMPLATED_SETS, f"templated must be one of {', '.join(TEMPLATED_SETS)}, got {self.templated!r}"),
            (self.init in DISTILL_INITS, f"distillation init must be one of {', '.join(DISTILL_INITS)}, got {self.init!r}"),
            (_positive(self.temperature), f"distillation temperature must be positive, got {self.temperature}"),
            (0 <= self.kd_weight <= 1, f"distillation weight (kd_weight) must be in [0, 1], got {self.kd_weight}"),
            (self.side >= 1, f"template side must be at least 1, got {self.side}"),
            (self.templates >= 1, f"templates per role must be at least 1, got {self.templates}"),
        ])


@dataclass(frozen=True)
class SpawnConfig:
    """A spawn's data-free rule and its scaler fit (`wave spawn`): templates frozen, scalers (and
    fresh templates) trained."""

    # The data-free rule: the winners of the spawn-rule study (docs/bench/ablations.md; issue #16),
    # chosen on a validation split no model of the family saw, two seeds: "interpolate" led the
    # depth rules by 0.1-0.6 points after one epoch (within the seeds' spread: depth barely
    # matters once fitted), "mean" the width rules by 1.1-3.3 points at every narrower size.
    depth_rule: str = "interpolate"  # DEPTH_RULES, or "choose"
    width_rule: str = "mean"  # WIDTH_RULES
    choose_batches: int = 4  # "choose": fit batches each candidate's data-free model is scored on
    # "last": the fit's scalers after its last step; "best": after the epoch (of the fit's images)
    # with the lowest loss on the held-out fifth, scored at every epoch end (forward passes only).
    # "best" by the study's rule (stage 6), though by 0.0003 points: a tie within the seeds' spread.
    fit_keep: str = "best"
    # Stop the fit once its held-out loss (scored at every epoch end of the fit's images) has not
    # fallen for this many epoch ends; 0: always run all fit_steps. Chosen by the patience study
    # (docs/bench/ablations.md, "The fit's patience"; tests/test_ablations.py recomputes it).
    fit_patience: int = 0

    # Optimizer steps of the scaler fit, and its rate below: the spawn-rule study's winners (400
    # against 100 and 1000, 0.1 against 0.03 and 0.3; docs/bench/ablations.md, stages 3 and 4).
    fit_steps: int = 400
    fit_samples: int = 1500  # training images the fit may see (a fixed seeded choice)
    batch_size: int = 64
    lr: float = 0.1  # scalers are O(1) numbers: a far larger rate than for weights
    # With a teacher (`wave spawn --teacher`), the fit's loss: the spawn-rule study's winner, KL to
    # the ancestry alone at temperature 1 (+0.8 to +1.0 points after one epoch at 2x128-6x128
    # and 4x192 against labels alone; docs/bench/ablations.md, stage 5). Without one: cross-entropy.
    temperature: float = 1.0
    kd_weight: float = 1.0  # KL to the ancestry, the rest cross-entropy on labels
    seed: int = 0
    compile: bool = False  # torch.compile the templated model for the fit (TrainConfig.compile)

    def __post_init__(self):
        _check([
            (self.depth_rule in (*DEPTH_RULES, "choose"), f"depth rule must be one of {', '.join(DEPTH_RULES)}, choose; got {self.depth_rule!r}"),
            (self.width_rule in WIDTH_RULES, f"width rule must be one of {', '.join(WIDTH_RULES)}; got {self.width_rule!r}"),
            (self.choose_batches >= 1, f"choose batches must be at least 1, got {self.choose_batches}"),
            (self.fit_keep in ("last", "best"), f"fit keep must be last or best, got {self.fit_keep!r}"),
            (self.fit_steps >= 1, f"fit steps must be at least 1, got {self.fit_steps}"),
            (self.fit_patience >= 0, f"fit patience must be >= 0 epoch ends (0: never stop early), got {self.fit_patience}"),
            (self.fit_samples >= 1, f"fit samples must be at least 1, got {self.fit_samples}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (_positive(self.lr), f"fit learning rate must be a positive number, got {self.lr}"),
            (_positive(self.temperature), f"distillation temperature must be positive, got {self.temperature}"),
            (0 <= self.kd_weight <= 1, f"distillation weight (kd_weight) must be in [0, 1], got {self.kd_weight}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ])


EVAL_BATCH_SIZE = 256  # evaluation holds no gradients: larger batches than training
