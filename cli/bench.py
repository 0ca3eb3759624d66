"""`wave bench`: WAVE against other initialisations over a grid of model sizes.

torch and matplotlib are imported inside the command, so `wave --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from waveinit.bench.config import DEFAULT_METHODS, METHODS, PRESETS
from waveinit.configs import option
from waveinit.errors import WaveError

from .common import echo
from .jobs import DATA_DIR

DEFAULT_NAMES = ", ".join(DEFAULT_METHODS)
DIAGNOSTIC_NAMES = ", ".join(m for m in METHODS if m not in DEFAULT_METHODS)


def _shown(value, unset: str) -> str:
    """A preset's value as the option takes it: (2, 4) -> "2,4"; ((4, 192),) -> "4x192"."""
    if value is None or value == ():
        return unset
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return ",".join("x".join(map(str, v)) if isinstance(v, tuple) else _shown(v, unset) for v in value)
    return str(value)


def defaults(field: str, unset: str = "none") -> str:
    """'default: X; --quick: Y' for a field of the presets, read from them (Y only where it differs)."""
    cpu, quick = (getattr(PRESETS[name], field) for name in ("cpu", "quick"))
    return f"default: {_shown(cpu, unset)}" + (f"; --quick: {_shown(quick, unset)}" if quick != cpu else "")


def parse_list(text: str, kind, what: str) -> tuple:
    """`"2,4,6"` -> (2, 4, 6); WaveError naming the bad item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        bad = next(t for t in items if not _parses(kind, t))
        raise WaveError(f"{what}: {bad!r} is not a {kind.__name__}: give a comma-separated list such as {'2,4,6' if kind is int else '1e-3,3e-3'}") from None


def _parses(kind, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """`"8x256,6x256"` -> ((8, 256), (6, 256)); `"none"` -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    sizes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        depth, sep, width = item.lower().partition("x")
        if not sep or not depth.isdigit() or not width.isdigit():
            raise WaveError(f"--extra-sizes: {item!r} is not DEPTHxWIDTH: give e.g. 8x256 (comma-separated, or none)")
        sizes.append((int(depth), int(width)))
    return tuple(sizes)


def parse_capacity(text: str) -> tuple[tuple[int, int, int], ...]:
    """`"4x64x3,8x64x3"` -> ((4, 64, 3), (8, 64, 3)): templates per role x side x distillation epochs."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise WaveError(f"--capacity: {item!r} is not TEMPLATESxSIDExEPOCHS: give e.g. 8x64x3 (comma-separated)")
        out.append(tuple(int(p) for p in parts))
    return tuple(out)


def parse_names(text: str) -> tuple[str, ...]:
    """`"digits,folder:/data/x"` -> ("digits", "folder:/data/x"); `"none"` -> ()."""
    return () if text.strip().lower() in ("", "none") else tuple(t.strip() for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class BenchOptions:
    """`wave bench`'s options: a preset, and any of its settings overridden (unset: the preset's)."""

    preset: str = option("cpu", "cpu: protocol v3 (docs/bench/protocol-v3.md) on 2 CPU cores, several hours (give it the committed --ancestry "
                         "and --learngene, or it makes its own); gpu: the same protocol at full scale on one GPU; quick: digits and tiny "
                         "sizes, minutes; v2 and v2-gpu: the earlier protocol (docs/bench/protocol.md). v3 and v3-gpu name cpu and gpu; "
                         "v4-plain and v4-ancestry: protocol v4's arms.")
    quick: bool = option(False, "The quick preset (--preset quick): digits and tiny sizes, minutes on 2 CPU cores.")
    out: Optional[Path] = option(None, "Folder of the results; a rerun skips what is finished (default: runs/bench, or runs/bench-PRESET).")
    ancestry: Optional[Path] = option(None, "Ancestry model to reuse (default: train one in --out).")
    learngene: Optional[Path] = option(None, "Learngene to reuse (default: the capacity study distils candidates in --out and picks one).")
    data: Optional[str] = option(None, f"Dataset ({defaults('data')}).")
    data_dir: Optional[Path] = option(None, DATA_DIR)
    subset: Optional[int] = option(None, f"Training images of the descendants ({defaults('subset', 'all')}; gpu: all).", min=1)
    depths: Optional[str] = option(None, f"Grid depths, comma-separated ({defaults('depths')}).")
    widths: Optional[str] = option(None, f"Grid widths, comma-separated ({defaults('widths')}).")
    extra_sizes: Optional[str] = option(None, f"Sizes beyond the grid, DEPTHxWIDTH comma-separated, or none ({defaults('extra_sizes')}).")
    methods: Optional[str] = option(None, f"Methods, comma-separated (default: {DEFAULT_NAMES}; protocol v4's diagnostics, by name: "
                                    f"{DIAGNOSTIC_NAMES}). Once the family is made (ancestry, learngene, TLEG), processes given other "
                                    "methods may share one --out, one per core, with the same other options; a last run with all of "
                                    "them then writes the report of everything.")
    seeds: Optional[int] = option(None, f"Seeds per cell ({defaults('seeds')}).", min=1)
    epochs: Optional[int] = option(None, "Training epochs of every cell after its initialisation, the tables' headline budget "
                                   f"({defaults('epochs')}).", min=1)
    scratch_epochs: Optional[int] = option(None, f"Epochs of scratch, its longest budget ({defaults('scratch_epochs')}).", min=1)
    lrs: Optional[str] = option(None, f"Learning rates each method's sweep picks from, comma-separated; one rate: no sweep ({defaults('lrs')}).")
    fit_steps: Optional[int] = option(None, f"Scaler-fit steps of wave and nearest-kron ({defaults('fit_steps')}).", min=1)
    fit_samples: Optional[int] = option(None, f"Images the scaler fit may use ({defaults('fit_samples')}).", min=1)
    fit_study: Optional[str] = option(None, f"Fit-step counts of the scaler-fit study, comma-separated ({defaults('fit_study_steps')}).")
    ancestry_epochs: Optional[int] = option(None, f"Epochs of the ancestry, when the bench trains it ({defaults('ancestry_epochs')}).", min=1)
    capacity: Optional[str] = option(None, "Learngene candidates of the capacity study, TEMPLATESxSIDExEPOCHS comma-separated "
                                     f"({defaults('capacity')}).")
    downstream: Optional[str] = option(None, f"Downstream datasets (any --data spec), comma-separated, or none ({defaults('downstream')}).")
    downstream_subset: Optional[int] = option(None, f"Training images of each downstream dataset ({defaults('downstream_subset', 'all')}).",
                                              min=1)
    batch_size: Optional[int] = option(None, f"Batch size of the descendants' training ({defaults('batch_size')}).", min=1)
    budgets: Optional[str] = option(None, "Epoch budgets of every method, each its own run annealed to its end, comma-separated; must "
                                    f"include --epochs (none: one run of --epochs, scored after each epoch; {defaults('budgets')}).")
    scratch_budgets: Optional[str] = option(None, "Scratch's budgets, each its own annealed run, comma-separated, the largest being "
                                            f"--scratch-epochs (none: one run scored after each epoch; {defaults('scratch_budgets')}).")
    sweep_every_size: Optional[bool] = option(None, "Sweep the learning rates at every size, each method then training at its own size's "
                                              "rate, or at one representative size whose rates all sizes take "
                                              f"({defaults('sweep_every_size')}).", flag="--sweep-every-size/--sweep-one-size")
    recipe: Optional[str] = option(None, "How every method trains after its initialisation on the family's data: plain (AdamW alone) or "
                                   "ancestry (shifts and flips where the data allow them, random erasing 0.25, label smoothing 0.1, "
                                   f"drop-path 0.1: scratch at full strength). Downstream cells train plain ({defaults('recipe')}).")
    family_validation: Optional[float] = option(None, "Hold this fraction of the training set out of the family and the descendants "
                                                "(split_validation, seed 0; 0.0833 = protocol v3's 5,000 of Fashion-MNIST's 60,000) and "
                                                "make every choice on it; the ancestry and learngene given must have been trained "
                                                f"without it ({defaults('family_validation', 'off')}).", min=0.0, max=1.0)
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    threads: Optional[int] = option(None, "PyTorch CPU threads (default: PyTorch's choice; --quick: 1, as its tiny models gain nothing "
                                    "from more and extra threads thrash on a busy machine).", min=1)


# The options that are lists, and how each becomes the preset's field.
_LISTS = {"budgets": ("budgets", lambda t: parse_list(t, int, "--budgets")),
          "scratch_budgets": ("scratch_budgets", lambda t: parse_list(t, int, "--scratch-budgets")),
          "depths": ("depths", lambda t: parse_list(t, int, "--depths")), "widths": ("widths", lambda t: parse_list(t, int, "--widths")),
          "extra_sizes": ("extra_sizes", parse_sizes), "methods": ("methods", lambda t: parse_list(t, str, "--methods")),
          "lrs": ("lrs", lambda t: parse_list(t, float, "--lrs")), "fit_study": ("fit_study_steps", lambda t: parse_list(t, int, "--fit-study")),
          "capacity": ("capacity", parse_capacity), "downstream": ("downstream", parse_names)}
_SCALARS = ("data", "seeds", "epochs", "scratch_epochs", "fit_steps", "fit_samples", "ancestry_epochs", "batch_size", "downstream_subset",
            "family_validation", "sweep_every_size", "recipe")


def bench_config(o: BenchOptions):
    """The preset the options name, with the options they set."""
    from waveinit.bench.config import preset

    base = preset("quick" if o.quick else o.preset)
    given = {k: getattr(o, k) for k in _SCALARS} | {"data_dir": str(o.data_dir) if o.data_dir else None}
    given |= {field: parse(getattr(o, name)) for name, (field, parse) in _LISTS.items() if getattr(o, name) is not None}
    config = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    if o.subset is not None or (o.data is not None and o.data != base.data):
        config = dataclasses.replace(config, subset=o.subset)  # another dataset: all its images unless told
    if config.data == "digits":
        config = dataclasses.replace(config, ancestry_augment=False)  # a flipped digit is another symbol
    return config


def bench(job) -> None:
    """Benchmark initialisations (random, weight selection, mimetic, nearest-Kronecker templates,
    TLEG, distillation per size, WAVE with and without the scaler fit, scratch training) over a
    grid of model sizes and on downstream data, with the learngene's capacity and the scaler
    fit studied on their own: accuracy per epoch, compute and storage, as CSV, JSON, Markdown
    and plots in --out."""
    from waveinit.bench.runner import run_bench
    from waveinit.training.interrupts import Interrupted

    o = job.bench
    config, name = bench_config(o), "quick" if o.quick else o.preset
    out = o.out or Path("runs/bench" if name == "cpu" else f"runs/bench-{name}")
    if o.threads or name == "quick":
        import torch

        torch.set_num_threads(o.threads or 1)
    try:
        result = run_bench(config, out, ancestry=o.ancestry, learngene=o.learngene, device=o.device, log=echo)
    except Interrupted as e:  # a rerun of the same command skips the finished cells: say how many there are
        done = sum(len(p.read_text().splitlines()) for p in (out / "cells.jsonl", out / "downstream.jsonl") if p.is_file())
        e.kept = " and ".join(filter(None, [e.kept, f"{done} finished cells in {out}"]))
        raise
    echo(f"{result.ran} cells run, {result.skipped} skipped (finished before); results in {out}: " + ", ".join(p.name for p in result.files.values()))
