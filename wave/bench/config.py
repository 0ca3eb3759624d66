"""The settings of `wave bench`: its methods, its presets (default CPU, GPU, quick) and what a
rerun must share with a bench to reuse its cells. Pure Python: the CLI's help and the report
read it.

Every choice of the protocol is written here, before any run: the report quotes these values,
and nothing in them was tuned toward a result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass

from ..configs import SpawnConfig
from ..errors import WaveError

# The initialisations compared, in the order of every table. `scratch` is random init trained for
# `scratch_epochs` with a test score after each: the curve the others' compute is measured on.
METHODS = ("random", "weight-selection", "mimetic", "nearest-kron", "tleg", "kd-per-size", "wave", "wave-nofit", "scratch",
           "ws-auxiliary", "wave-first", "wave-relative", "wave-even")
# Protocol v4's "where the loss lies" (docs/bench/protocol-v4.md): weight selection from the
# learngene's own auxiliary (spawned data-free at its own size, then selected like the ancestry),
# and wave under each depth rule other than the default ("interpolate"): wave-RULE.
WAVE_DEPTH_RULES = {"wave-first": "first", "wave-relative": "relative", "wave-even": "even"}
# What a bench runs unless told (--methods): v3's nine; protocol v4's diagnostics only when named.
DEFAULT_METHODS = METHODS[:9]
# Downstream: the methods that can initialise a model for other data (kd-per-size needs the
# ancestry's logits on that data), and scratch, the yardstick of their compute there too.
DOWNSTREAM_METHODS = ("random", "weight-selection", "mimetic", "nearest-kron", "tleg", "wave", "wave-nofit", "scratch")


# How the descendants (and scratch) train on the family's data, as TrainConfig fields: "plain",
# AdamW alone; "ancestry", protocol v3's ancestry recipe (shifts and flips where the data allow
# them, random erasing 0.25, label smoothing 0.1, drop-path 0.1), so that scratch trains at full
# strength (issue #17, item 3) and every method trains the same way after its initialisation.
RECIPES = {"plain": {}, "ancestry": {"augment": True, "reprob": 0.25, "smoothing": 0.1, "drop_path": 0.1}}


@dataclass(frozen=True)
class BenchConfig:
    data: str = "fashion-mnist"
    data_dir: str | None = None
    # The ancestry, the learngenes and TLEG use the whole training set. The descendants train on
    # a fixed draw (seed 0) of `subset` images (None: all): 6 sizes x 9 methods x 3 seeds, scratch
    # 10 epochs each, and the studies fit a 3-hour session on 2 CPU cores only on a subset.
    subset: int | None = 5000
    depths: tuple[int, ...] = (2, 4)
    widths: tuple[int, ...] = (64, 128)
    extra_sizes: tuple[tuple[int, int], ...] = ((6, 128), (4, 192))  # (depth, width) beyond the ancestry
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    epochs: int = 1  # training epochs of every cell after its initialisation
    scratch_epochs: int = 10  # scratch: random init trained this long, scored after every epoch
    # Budgets, each its own run annealed to its end (issue #17, items 3-4), instead of one run
    # scored after every epoch: a point of scratch's curve is then what that much compute buys.
    # `budgets` must include `epochs` (the tables' headline budget), and the largest of
    # `scratch_budgets` must be `scratch_epochs`. None: one run, scored after every epoch.
    budgets: tuple[int, ...] | None = None
    scratch_budgets: tuple[int, ...] | None = None
    # Scratch's budgets on downstream data (None: `scratch_budgets`). A small downstream set needs
    # a longer curve: the scaler fit alone can be many of its epochs (400 steps of 64 images are
    # 18 epochs of digits), and a saving can only be read where scratch's curve gets that far.
    downstream_scratch_budgets: tuple[int, ...] | None = None
    batch_size: int = 64
    recipe: str = "plain"  # RECIPES; downstream cells always train plain
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # learning-rate sweep candidates, one rate: no sweep
    # Rates tried below the grid, highest first, one at a time while the lowest rate tried so far
    # wins: a sweep that picks its grid's edge with accuracy still rising is unfinished (protocol v4).
    lower_lrs: tuple[float, ...] = ()
    sweep_epochs: int = 1
    # Sweep the rates at every size (each method at each size takes its own rate, issue #17 item
    # 2), instead of at one representative size whose rates every size then uses.
    sweep_every_size: bool = False
    validation_fraction: float = 0.1  # of the (descendants') training set, held out for the sweeps
    # Leak-free (protocol v3, issue #17): this fraction of the training set (split_validation, seed
    # 0) is held out from everything: the family and the descendants train on the rest, and the
    # sweeps and the fit study score on it, so no choice is made on images the family has seen.
    # None: the older protocol, a split of the descendants' own training set (validation_fraction).
    family_validation: float | None = None
    fit_steps: int = 100  # scaler fit of wave and nearest-kron (the fit study reports other counts)
    fit_samples: int = 1500
    fit_lr: float = 0.1
    fit_batch_size: int | None = None  # the scaler fit's batch, and so the mirrored warm-ups' (None: `batch_size`)
    fit_study_steps: tuple[int, ...] = (25, 50, 100, 200, 400)  # the scaler-fit trade-off (0: no fit, wave-nofit)
    patch: int | None = None  # None: image side / 4
    # The ancestry, when the bench makes it: trained long on the whole training set, with random
    # shifts and flips (without them a 4x128 plateaus at 89.4% on Fashion-MNIST).
    ancestry_depth: int = 4
    ancestry_width: int = 128
    ancestry_epochs: int = 30
    ancestry_lr: float = 2e-3
    ancestry_batch_size: int = 128
    ancestry_augment: bool = True
    # The learngene: distilled from the ancestry on the whole training set, an auxiliary model of
    # the ancestry's shape. `capacity` lists the candidates (templates per role, template side,
    # distillation epochs) the capacity study distils; the bench's learngene is the candidate of
    # `side` whose auxiliary is within `capacity_tolerance` of the ancestry at the fewest bytes,
    # among those at most `capacity_bytes_fraction` of the family's dense bytes (none within
    # the tolerance: the most accurate of those). TLEG gets the chosen candidate's budget.
    side: int = 64  # template side, also the head width of every model
    capacity: tuple[tuple[int, int, int], ...] = ((4, 64, 3), (8, 64, 3), (16, 64, 3), (16, 32, 3), (8, 64, 6))
    capacity_tolerance: float = 0.01
    capacity_bytes_fraction: float = 1 / 20
    distill_lr: float = 2e-3
    distill_batch_size: int = 128
    # Downstream transfer: each dataset's own sizes are the bench's; the family initialises them
    # (fresh data-dependent roles) and every cell trains `epochs` epochs on it.
    downstream: tuple[str, ...] = ("digits",)
    downstream_subset: int | None = None  # training images of each downstream dataset (None: all)
    # Downstream, every method but wave and nearest-kron (whose scaler fits train them) and scratch (the yardstick)
    # first trains only the parameters started afresh (classifier; patch and position embeddings
    # where their shape changed), the rest frozen, for wave's fit steps at its rate on its images:
    # the same head warm-up for all, counted as compute (issue #17, item 6).
    head_warmup: bool = True

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise WaveError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
        if not self.methods:
            raise WaveError(f"no methods to run: choose from {', '.join(METHODS)}")
        positive = ("seeds", "epochs", "scratch_epochs", "batch_size", "sweep_epochs", "fit_steps", "fit_samples", "ancestry_depth",
                    "ancestry_width", "ancestry_epochs", "ancestry_batch_size", "side", "distill_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise WaveError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not self.lrs or any(not lr > 0 for lr in (*self.lrs, *self.lower_lrs)):
            raise WaveError(f"learning rates must be positive numbers, got {list(self.lrs)}")
        if not (self.depths and self.widths) and not self.extra_sizes:
            raise WaveError("no model sizes: give depths and widths, or extra sizes")
        if not any(side == self.side for _, side, _ in self.capacity):
            raise WaveError(f"the capacity study has no candidate of template side {self.side}: add one (templates, {self.side}, epochs)")
        bad = [c for c in self.capacity if min(c) < 1]
        if bad:
            raise WaveError(f"capacity candidate {bad[0]}: templates, side and epochs must be at least 1")
        if self.budgets is not None and (self.epochs not in self.budgets or min(self.budgets) < 1):
            raise WaveError(f"budgets {list(self.budgets)} must be positive and include epochs ({self.epochs}), the tables' headline budget")
        if self.scratch_budgets is not None and (max(self.scratch_budgets) != self.scratch_epochs or min(self.scratch_budgets) < 1):
            raise WaveError(f"scratch budgets {list(self.scratch_budgets)} must be positive, the largest being scratch epochs ({self.scratch_epochs})")
        if self.downstream_scratch_budgets is not None and (not self.scratch_budgets or min(self.downstream_scratch_budgets) < 1):
            raise WaveError(f"downstream scratch budgets {list(self.downstream_scratch_budgets)} must be positive, "
                            f"and come with scratch budgets")
        if self.fit_batch_size is not None and self.fit_batch_size < 1:
            raise WaveError(f"fit batch size must be at least 1, got {self.fit_batch_size}")
        if self.lower_lrs and (list(self.lower_lrs) != sorted(self.lower_lrs, reverse=True) or max(self.lower_lrs) >= min(self.lrs)):
            raise WaveError(f"lower rates {list(self.lower_lrs)} must fall, each below the grid's lowest {min(self.lrs):g}")
        if self.recipe not in RECIPES:
            raise WaveError(f"unknown training recipe {self.recipe!r}: choose from {', '.join(RECIPES)}")
        if self.family_validation is not None and not 0 < self.family_validation < 1:
            raise WaveError(f"family validation must be a fraction in (0, 1), got {self.family_validation}")
        if any(s < 1 for s in self.fit_study_steps):
            raise WaveError(f"fit study steps must be at least 1, got {list(self.fit_study_steps)}")

    @property
    def fit_batch(self) -> int:
        return self.fit_batch_size or self.batch_size

    def for_downstream(self) -> BenchConfig:
        """The settings of the downstream cells: scratch's curve is `downstream_scratch_budgets`."""
        if self.downstream_scratch_budgets is None:
            return self
        return dataclasses.replace(self, scratch_budgets=self.downstream_scratch_budgets,
                                   scratch_epochs=max(self.downstream_scratch_budgets), downstream_scratch_budgets=None)

    def fingerprint(self) -> dict:
        """The settings a finished cell depends on: a rerun must share them to reuse cells.
        Sizes, methods, seeds and downstream datasets are not among them (a rerun may add more),
        nor where the data lie. The learngene a capacity study chose stays chosen (family.py)."""
        d = asdict(self)
        for key in ("data_dir", "depths", "widths", "extra_sizes", "methods", "seeds", "downstream", "fit_study_steps"):
            d.pop(key)
        if not d["lower_lrs"]:  # written only where used, so benches made before it existed still resume
            d.pop("lower_lrs")
        return json.loads(json.dumps(d))


QUICK = BenchConfig(
    data="digits",
    subset=None,
    depths=(1,),
    widths=(32, 64),
    extra_sizes=((3, 96),),
    seeds=3,
    epochs=1,
    scratch_epochs=4,
    lrs=(1e-3, 3e-3, 1e-2),
    fit_steps=20,
    fit_samples=600,
    fit_study_steps=(10, 20),
    ancestry_depth=2,
    ancestry_width=64,
    ancestry_epochs=20,
    ancestry_lr=3e-3,
    ancestry_batch_size=64,
    ancestry_augment=False,  # digits: a flipped digit is another symbol
    side=32,
    capacity=((2, 32, 6), (4, 32, 6), (4, 16, 6)),
    distill_lr=3e-3,
    distill_batch_size=64,
    downstream=("fashion-mnist",),  # another dataset than the family's; 2,000 of its training images
    downstream_subset=2000,
)

# The earlier protocol (docs/bench/protocol.md) on one H100-class GPU: the whole training set for every cell, a larger ancestry, the full grid.
# Sized by estimate (about 2 s per epoch of 60,000 images for these small models at batch 256,
# launch-bound), not yet measured: no GPU was at hand when it was written.
V2_GPU = BenchConfig(
    subset=None,
    depths=(2, 4, 6),
    widths=(64, 128, 192),
    extra_sizes=((8, 256),),
    ancestry_depth=6,
    ancestry_width=192,
    ancestry_epochs=60,
    batch_size=256,
    ancestry_batch_size=256,
    distill_batch_size=256,
    capacity=((4, 64, 5), (8, 64, 5), (16, 64, 5), (16, 32, 5), (8, 64, 10)),
)

# Protocol v3 (docs/bench/protocol-v3.md, "wave bench v3"): the leak-free family of the paper's
# geometry (a 6x192 ancestry, most descendants smaller), given as files (--ancestry and
# --learngene: the committed ones), every choice on a validation split no model of the family
# saw, every method at its own rate per size, scratch at full strength with a point per budget,
# each budget a separately annealed run, and the spawn defaults the spawn-rule study chose.
_SPAWN = SpawnConfig()
V3 = BenchConfig(
    subset=11_000,  # a fifth of the 55,000-image train split: the whole split costs 5x the CPU time (the GPU preset uses it)
    family_validation=5000 / 60000,
    depths=(2, 4, 6),
    widths=(64, 128),
    extra_sizes=((4, 192), (4, 256)),  # the ancestry's width, and one beyond it
    seeds=2,
    epochs=1,
    budgets=(1, 2, 4),
    scratch_epochs=16,
    scratch_budgets=(1, 2, 4, 8, 16),
    downstream_scratch_budgets=(1, 2, 4, 8, 16, 32, 64),  # digits: the fit alone is 18 of its epochs
    recipe="ancestry",
    sweep_every_size=True,
    fit_steps=_SPAWN.fit_steps,
    fit_samples=_SPAWN.fit_samples,
    fit_lr=_SPAWN.lr,
    fit_batch_size=_SPAWN.batch_size,  # wave spawn's, whatever batch the descendants train with (v3-gpu: 256)
    fit_study_steps=(25, 100, 400),
    ancestry_depth=6,  # the committed ancestry's recipe, for a bench run without --ancestry
    ancestry_width=192,
    ancestry_epochs=30,
    ancestry_lr=1e-3,
    ancestry_batch_size=256,
    capacity=((4, 64, 12),),  # the committed learngene's recipe, for a run without --learngene
    distill_lr=2e-3,
    distill_batch_size=256,
)
# The same protocol on one GPU, at full scale: the whole train split, the full grid, three seeds.
V3_GPU = dataclasses.replace(
    V3, subset=None, widths=(64, 128, 192), extra_sizes=((4, 256), (8, 256)), seeds=3, batch_size=256,
    scratch_epochs=32, scratch_budgets=(1, 2, 4, 8, 16, 32))

# Protocol v4 (docs/bench/protocol-v4.md): v3's settings, the descendants' recipe an arm of its
# own (each arm a bench of its own folder, the recipe then chosen per method and size on
# validation by `waveinit.bench.arms`), rates below the grid where its lowest wins. Downstream
# runs apart (its rates swept on its own validation split), so the arms have none.
V4_PLAIN = dataclasses.replace(V3, recipe="plain", lower_lrs=(1e-4,), downstream=())
V4_ANCESTRY = dataclasses.replace(V4_PLAIN, recipe="ancestry")
V4_GPU_PLAIN = dataclasses.replace(V3_GPU, recipe="plain", lower_lrs=(1e-4,), downstream=())
V4_GPU_ANCESTRY = dataclasses.replace(V4_GPU_PLAIN, recipe="ancestry")

# `cpu` and `gpu` are protocol v3 (`v3` and `v3-gpu` by name); `v2` and `v2-gpu` keep the earlier
# protocol (docs/bench/protocol.md, BenchConfig's own defaults), to rerun the report it made.
PRESETS = {"cpu": V3, "gpu": V3_GPU, "quick": QUICK, "v3": V3, "v3-gpu": V3_GPU, "v2": BenchConfig(), "v2-gpu": V2_GPU,
           "v4-plain": V4_PLAIN, "v4-ancestry": V4_ANCESTRY, "v4-gpu-plain": V4_GPU_PLAIN, "v4-gpu-ancestry": V4_GPU_ANCESTRY}


def preset(name: str | bool) -> BenchConfig:
    """`cpu` (default) and `gpu`: protocol v3 on 2 CPU cores and on one GPU; `quick`: digits,
    tiny sizes, minutes on 2 CPU cores; `v2` and `v2-gpu`: the earlier protocol. (A bool is the
    old `quick` flag.)"""
    if isinstance(name, bool):
        name = "quick" if name else "cpu"
    if name not in PRESETS:
        raise WaveError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return PRESETS[name]
