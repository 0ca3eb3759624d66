"""The settings of `wave bench`: its methods, the default and quick presets, and what a rerun
must share with a bench to reuse its cells. Pure Python: the CLI's help and the report read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..errors import WaveError

METHODS = ("random", "weight-selection", "nearest-kron", "wave", "wave-nofit", "scratch-long")


@dataclass(frozen=True)
class BenchConfig:
    data: str = "fashion-mnist"
    data_dir: str | None = None
    # Sized to run in a session on 2 CPU cores (98 minutes, README: Results): 5,000 training images
    # (a fixed draw, seed 0; None: all), the full test set, one epoch per cell.
    subset: int | None = 5000
    depths: tuple[int, ...] = (2, 4, 6)
    widths: tuple[int, ...] = (64, 128, 192)
    extra_sizes: tuple[tuple[int, int], ...] = ((8, 256),)  # (depth, width) beyond the ancestry
    methods: tuple[str, ...] = METHODS
    seeds: int = 3
    epochs: int = 1  # training epochs of every cell (scratch-long: scratch_factor times as many)
    scratch_factor: int = 5
    batch_size: int = 64
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # learning-rate sweep candidates, one rate: no sweep
    sweep_epochs: int = 1
    validation_fraction: float = 0.1  # of the training set, held out for the sweep
    fit_steps: int = 100  # scaler fit of wave and nearest-kron
    fit_samples: int = 1500
    fit_lr: float = 0.1
    patch: int | None = None  # None: image side / 4
    # The ancestry and the learngene, when the bench makes them.
    ancestry_depth: int = 6
    ancestry_width: int = 192
    ancestry_epochs: int = 10
    ancestry_lr: float = 2e-3
    side: int = 64  # template side, also the head width of every model
    templates: int = 4  # per role
    distill_epochs: int = 5
    distill_lr: float = 2e-3

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise WaveError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
        if not self.methods:
            raise WaveError(f"no methods to run: choose from {', '.join(METHODS)}")
        positive = ("seeds", "epochs", "scratch_factor", "batch_size", "sweep_epochs", "fit_steps", "fit_samples",
                    "ancestry_depth", "ancestry_width", "ancestry_epochs", "side", "templates", "distill_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise WaveError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise WaveError(f"learning rates must be positive numbers, got {list(self.lrs)}")
        if not (self.depths and self.widths) and not self.extra_sizes:
            raise WaveError("no model sizes: give depths and widths, or extra sizes")

    def fingerprint(self) -> dict:
        """The settings a finished cell depends on: a rerun must share them to reuse cells.
        Sizes, methods and seeds are not among them (a rerun may add more)."""
        d = asdict(self)
        for key in ("depths", "widths", "extra_sizes", "methods", "seeds"):
            d.pop(key)
        return json.loads(json.dumps(d))


QUICK = BenchConfig(
    data="digits",
    subset=None,
    depths=(1, 2),
    widths=(32, 64),
    extra_sizes=((3, 96),),
    seeds=3,
    epochs=1,
    scratch_factor=5,
    lrs=(1e-3, 3e-3, 1e-2),
    fit_steps=40,
    fit_samples=600,
    ancestry_depth=2,
    ancestry_width=64,
    ancestry_epochs=20,
    ancestry_lr=3e-3,
    side=32,
    templates=2,
    distill_epochs=10,
    distill_lr=3e-3,
)


def preset(quick: bool) -> BenchConfig:
    """`--quick`: digits, tiny sizes, minutes on 2 CPU cores. Default: Fashion-MNIST."""
    return QUICK if quick else BenchConfig()
