"""The settings of every task, and their defaults: the one place a default is written.

Each task has one frozen dataclass, checked when it is made (a bad value is a WaveError naming
it). The CLI's option defaults, the Python API's keyword defaults, the bench and the examples
all read them from here. Importing this module costs next to nothing (no NumPy, no torch),
so `wave --help` can show the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import WaveError
from .kron import KRON_ORDERS, check_order  # noqa: F401  (KRON_ORDERS: the choices of `order` below)

DEFAULT_TEMPLATE_SIDE = 64  # one attention head's width in ViT-S/B: templates align with heads

# Help panels: `wave distill --help` groups its options under these titles.
DATA, MODEL, TRAINING, RUN = "Data", "Model", "Training", "Output and runtime"
RECIPE, DISTILLATION, FIT = "DeiT recipe (timm's names; all off by default)", "Distillation", "Scaler fit"


def option(default, help: str, panel: str = RUN, *, flag: str | None = None, min: float | None = None, max: float | None = None):
    """A config field that is also a command-line option: the one place its default, help, help
    panel and flag (default: --field-name; a bool is an on-switch unless the flag says "--a/--b")
    are written. `cli/options.py` makes the commands' options from these."""
    return field(default=default, metadata={"option": {"help": help, "panel": panel, "flag": flag, "min": min, "max": max}})


def _check(rules: list[tuple[bool, str]]) -> None:
    for ok, message in rules:
        if not ok:
            raise WaveError(message)


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and x > 0 and math.isfinite(x)


@dataclass(frozen=True)
class TrainConfig:
    """One run of the training engine (AdamW, linear warm-up then cosine decay)."""

    epochs: int = option(10, "Passes over the training set (ignored when max_steps is set).", TRAINING, min=1)
    # GLOBAL batch size, split over processes; the last batch may be smaller
    batch_size: int = option(128, "Global batch size (split over processes).", TRAINING, min=1)
    # a group's peak is lr * its "lr_scale"
    lr: float = option(1e-3, "Peak learning rate (AdamW, warm-up then cosine).", TRAINING, min=0.0)
    # for groups that set none themselves
    weight_decay: float = option(0.05, "AdamW weight decay.", TRAINING, min=0.0)
    warmup_fraction: float = 0.1  # linear warm-up over this fraction of all steps, then cosine decay
    min_lr_ratio: float = 0.01  # the cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0  # max L2 norm of the whole gradient; None: no clipping
    # data order and per-step randomness (wave train: the model's initialisation too)
    seed: int = option(0, "Random seed: the same seed gives the same result on the same machine.", TRAINING, min=0)
    max_steps: int | None = None  # total optimizer steps (the schedule spans them); None: epochs decide
    checkpoint_every: int = option(0, "Also checkpoint every N steps (0: each epoch only).", RUN, min=0)
    amp: bool | None = None  # bf16 autocast for forward and loss; None: on for CUDA, off on CPU
    # Each training batch randomly shifted (up to side / 10 pixels, edges
    # repeated) and flipped left-right. Not for data where left and right differ (digits, text).
    augment: bool = False
    # torch.compile the model for the training steps (evaluation and checkpoints use the model
    # itself). Off by default: benchmarks/bench_engine.py measures what it buys (README).
    compile: bool = option(False, "torch.compile the model for training (tens of seconds to compile first; see README's benchmarks).")
    # The DeiT recipe's regularisers, timm's names and meanings (training/recipe.py); all off by default.
    smoothing: float = option(0.0, "Label smoothing of the cross-entropy (DeiT: 0.1).", RECIPE, min=0.0, max=0.99)
    mixup: float = option(0.0, "Mixup alpha, on when > 0 (DeiT: 0.8).", RECIPE, min=0.0)
    cutmix: float = option(0.0, "CutMix alpha, on when > 0 (DeiT: 1.0).", RECIPE, min=0.0)
    mixup_prob: float = option(1.0, "Probability that a batch is mixed.", RECIPE, min=0.0, max=1.0)
    mixup_switch_prob: float = option(0.5, "With both on: probability of CutMix over mixup.", RECIPE, min=0.0, max=1.0)
    reprob: float = option(0.0, "Random erasing probability per image, per-pixel noise (DeiT: 0.25).", RECIPE, min=0.0, max=1.0)
    # block l is skipped with probability drop_path * l / (depth - 1)
    drop_path: float = option(0.0, "Stochastic depth rate of the last block, linear from 0 (DeiT-S: 0.1).", RECIPE, min=0.0, max=0.99)
    model_ema: bool = option(False, "Keep a moving average of the weights: evaluated each epoch, saved beside the output as "
                             "<stem>.ema.safetensors.", RECIPE)
    model_ema_decay: float = option(0.9998, "Decay of --model-ema.", RECIPE, min=0.0, max=0.999999)

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
# The data-free spawn rule's choices (spawning.py says what each does). "choose" (depth only)
# picks, per target, the fixed depth rule whose data-free model has the lowest cross-entropy on
# the fit's first batches (forward passes only; it needs the fit's data).
DEPTH_RULES = ("relative", "first", "even", "interpolate")
WIDTH_RULES = ("pick", "mean", "project")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of an ancestry into a learngene (the auxiliary templated model)."""

    temperature: float = option(1.0, "Distillation temperature (softens both distributions in the KL term).", DISTILLATION, min=1e-6)
    kd_weight: float = option(0.5, "Weight of the KL term; the rest goes to cross-entropy on labels.", DISTILLATION, min=0.0, max=1.0)
    side: int = option(DEFAULT_TEMPLATE_SIDE, "Template side s: templates are s x s blocks.", MODEL, min=1)
    templates: int = option(4, "Templates per weight role.", MODEL, min=1)
    # valid only without random augmentation
    cache_teacher: bool = option(True, "Compute the teacher's logits once and reuse them every epoch.", DISTILLATION, flag="--cache/--no-cache")
    # The auxiliary's starting factors: "random", or "nearest-kron" (the teacher's own weights'
    # nearest Kronecker sums, `learngene_from_weights`; the auxiliary must then have the teacher's shape).
    init: str = "random"
    # "ts" is the default: it distils better and spawns better (docs/bench/ablations.md, "Kronecker
    # order at 12 epochs"). The one place the order's default is written.
    order: str = option("ts", "Each weight a sum of kron(T, S) (ts: scaler-shaped blocks) or of kron(S, T) (st: template-shaped "
                        "blocks, one per head). docs/bench/ablations.md compares them: ts distils and spawns better.", MODEL, flag="--kron-order")
    templated: str = option("all", "What is templated: all (every parameter a Kronecker sum) or matrices (qkv, proj, fc1 and fc2, as in the "
                            "paper; the other parameters stored densely in the learngene).", MODEL)

    def __post_init__(self):
        check_order(self.order)
        _check([
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
    depth_rule: str = option("interpolate", "Which learngene layers a target layer starts from: relative (same relative depth), first (the "
                             "first layers), even (evenly spaced, first and last included), interpolate (blends neighbouring layers), or "
                             "choose (the one of these with the lowest loss on the fit's first batches; needs the fit). "
                             "docs/bench/ablations.md compares them.", MODEL)
    width_rule: str = option("mean", "How a narrower model's scalers are made: pick (evenly spaced blocks), mean (averaged blocks), or "
                             "project (weight selection of the learngene's weights, projected onto its templates by least squares).", MODEL)
    choose_batches: int = 4  # "choose": fit batches each candidate's data-free model is scored on
    # "last": the fit's scalers after its last step; "best": after the epoch (of the fit's images)
    # with the lowest loss on the held-out fifth, scored at every epoch end (forward passes only).
    # "best" by the study's rule (stage 6), though by 0.0003 points: a tie within the seeds' spread.
    fit_keep: str = option("best", "last: the scalers after the fit's last step; best: after the epoch of fit images with the lowest loss "
                           "on the held-out fifth.", FIT)
    # Stop the fit once its held-out loss (scored at every epoch end of the fit's images) has not
    # fallen for this many epoch ends; 0: always run all fit_steps. Chosen by the patience study
    # (docs/bench/ablations.md, "The fit's patience"; tests/test_ablations.py recomputes it): the
    # smallest patience within the seeds' spread of no stopping, 1 (82.12% against 82.80%, spread
    # 0.78, after one epoch over 8 sizes and 2 seeds) at 29% of the fit's steps.
    fit_patience: int = option(1, "Stop the fit once the loss on its held-out fifth has not fallen for this many epoch ends of its images "
                               "(0: run all --fit-steps).", FIT, min=0)

    # Optimizer steps of the scaler fit, and its rate below: the spawn-rule study's winners (400
    # against 100 and 1000, 0.1 against 0.03 and 0.3; docs/bench/ablations.md, stages 3 and 4).
    fit_steps: int = option(400, "Optimizer steps of the scaler fit, at most (see --fit-patience).", FIT, min=1)
    # a fixed seeded choice
    fit_samples: int = option(1500, "Training images the fit draws; a fifth is held out, and the fit keeps the data-free start unless it "
                              "lowered the loss there.", FIT, min=1)
    batch_size: int = option(64, "Batch size of the scaler fit.", FIT, min=1)
    # scalers are O(1) numbers: a far larger rate than for weights
    lr: float = option(0.1, "Learning rate of the scaler fit.", FIT, min=0.0)
    # With a teacher (`wave spawn --teacher`), the fit's loss: the spawn-rule study's winner, KL to
    # the ancestry alone at temperature 1 (+0.8 to +1.0 points after one epoch at 2x128-6x128
    # and 4x192 against labels alone; docs/bench/ablations.md, stage 5). Without one: cross-entropy.
    temperature: float = 1.0
    kd_weight: float = 1.0  # KL to the ancestry, the rest cross-entropy on labels
    seed: int = option(0, "Random seed: the same seed gives the same result on the same machine.", TRAINING, min=0)
    compile: bool = option(False, "torch.compile the templated model for the fit (tens of seconds to compile first).")

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
