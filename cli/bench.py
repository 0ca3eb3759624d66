"""`wave bench`: WAVE against other initialisations over a grid of model sizes.

torch and matplotlib are imported inside the command, so `wave --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from waveinit.bench.config import DEFAULT_METHODS, METHODS, PRESETS
from waveinit.errors import WaveError

from .common import DataDir, Device, echo, handles_errors

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


@handles_errors
def bench(
    preset_name: Annotated[str, typer.Option("--preset", help=(
        "cpu: protocol v3 (docs/bench/protocol-v3.md) on 2 CPU cores, several hours (give it the committed --ancestry "
        "and --learngene, or it makes its own); gpu: the same protocol at full scale on one GPU; quick: digits and tiny "
        "sizes, minutes; v2 and v2-gpu: the earlier protocol (docs/bench/protocol.md). v3 and v3-gpu name cpu and gpu."))] = "cpu",
    quick: Annotated[bool, typer.Option("--quick", help="The quick preset (--preset quick): digits and tiny sizes, minutes on 2 CPU cores.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder of the results; a rerun skips what is finished (default: runs/bench, or runs/bench-PRESET).")] = None,
    ancestry: Annotated[Optional[Path], typer.Option(help="Ancestry model to reuse (default: train one in --out).")] = None,
    learngene: Annotated[Optional[Path], typer.Option(
        help="Learngene to reuse (default: the capacity study distils candidates in --out and picks one).")] = None,
    data: Annotated[Optional[str], typer.Option(help=f"Dataset ({defaults('data')}).")] = None,
    data_dir: DataDir = None,
    subset: Annotated[Optional[int], typer.Option(
        min=1, help=f"Training images of the descendants ({defaults('subset', 'all')}; gpu: all).")] = None,
    depths: Annotated[Optional[str], typer.Option(help=f"Grid depths, comma-separated ({defaults('depths')}).")] = None,
    widths: Annotated[Optional[str], typer.Option(help=f"Grid widths, comma-separated ({defaults('widths')}).")] = None,
    extra_sizes: Annotated[Optional[str], typer.Option(
        help=f"Sizes beyond the grid, DEPTHxWIDTH comma-separated, or none ({defaults('extra_sizes')}).")] = None,
    methods: Annotated[Optional[str], typer.Option(help=(
        f"Methods, comma-separated (default: {DEFAULT_NAMES}; protocol v4's diagnostics, by name: {DIAGNOSTIC_NAMES}). "
        "Once the family is made (ancestry, learngene, TLEG), "
        "processes given other methods may share one --out, one per core, with the same other options; a last run with all "
        "of them then writes the report of everything."))] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help=f"Seeds per cell ({defaults('seeds')}).")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, help=f"Training epochs of every cell after its initialisation, the tables' headline budget ({defaults('epochs')}).")] = None,
    scratch_epochs: Annotated[Optional[int], typer.Option(min=1, help=f"Epochs of scratch, its longest budget ({defaults('scratch_epochs')}).")] = None,
    lrs: Annotated[Optional[str], typer.Option(
        help="Learning rates each method's sweep picks from, comma-separated; one rate: no sweep "
             f"({defaults('lrs')}).")] = None,
    fit_steps: Annotated[Optional[int], typer.Option(min=1, help=f"Scaler-fit steps of wave and nearest-kron ({defaults('fit_steps')}).")] = None,
    fit_samples: Annotated[Optional[int], typer.Option(min=1, help=f"Images the scaler fit may use ({defaults('fit_samples')}).")] = None,
    fit_study: Annotated[Optional[str], typer.Option(
        help=f"Fit-step counts of the scaler-fit study, comma-separated ({defaults('fit_study_steps')}).")] = None,
    ancestry_epochs: Annotated[Optional[int], typer.Option(
        min=1, help=f"Epochs of the ancestry, when the bench trains it ({defaults('ancestry_epochs')}).")] = None,
    capacity: Annotated[Optional[str], typer.Option(
        help="Learngene candidates of the capacity study, TEMPLATESxSIDExEPOCHS comma-separated "
             f"({defaults('capacity')}).")] = None,
    downstream: Annotated[Optional[str], typer.Option(
        help=f"Downstream datasets (any --data spec), comma-separated, or none ({defaults('downstream')}).")] = None,
    downstream_subset: Annotated[Optional[int], typer.Option(
        min=1, help=f"Training images of each downstream dataset ({defaults('downstream_subset', 'all')}).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help=f"Batch size of the descendants' training ({defaults('batch_size')}).")] = None,
    budgets: Annotated[Optional[str], typer.Option(help=(
        "Epoch budgets of every method, each its own run annealed to its end, comma-separated; must include --epochs "
        f"(none: one run of --epochs, scored after each epoch; {defaults('budgets')})."))] = None,
    scratch_budgets: Annotated[Optional[str], typer.Option(help=(
        "Scratch's budgets, each its own annealed run, comma-separated, the largest being --scratch-epochs "
        f"(none: one run scored after each epoch; {defaults('scratch_budgets')})."))] = None,
    sweep_every_size: Annotated[Optional[bool], typer.Option("--sweep-every-size/--sweep-one-size", help=(
        "Sweep the learning rates at every size, each method then training at its own size's rate, or at one "
        f"representative size whose rates all sizes take ({defaults('sweep_every_size')})."))] = None,
    recipe: Annotated[Optional[str], typer.Option(help=(
        "How every method trains after its initialisation on the family's data: plain (AdamW alone) or ancestry (shifts and "
        "flips where the data allow them, random erasing 0.25, label smoothing 0.1, drop-path 0.1: scratch at full strength). "
        f"Downstream cells train plain ({defaults('recipe')})."))] = None,
    family_validation: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help=(
        "Hold this fraction of the training set out of the family and the descendants (split_validation, seed 0; "
        "0.0833 = protocol v3's 5,000 of Fashion-MNIST's 60,000) and make every choice on it; the ancestry and learngene given "
        f"must have been trained without it ({defaults('family_validation', 'off')})."))] = None,
    device: Device = "auto",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="PyTorch CPU threads (default: PyTorch's choice; --quick: 1, as its tiny models gain nothing from more "
                    "and extra threads thrash on a busy machine).")] = None,
) -> None:
    """Benchmark initialisations (random, weight selection, mimetic, nearest-Kronecker templates,
    TLEG, distillation per size, WAVE with and without the scaler fit, scratch training) over a
    grid of model sizes and on downstream data, with the learngene's capacity and the scaler
    fit studied on their own: accuracy per epoch, compute and storage, as CSV, JSON, Markdown
    and plots in --out."""
    import dataclasses

    from waveinit.bench.config import preset
    from waveinit.bench.runner import run_bench
    from waveinit.training.interrupts import Interrupted

    name = "quick" if quick else preset_name
    base = preset(name)
    given = {
        "data": data, "data_dir": str(data_dir) if data_dir else None, "seeds": seeds, "epochs": epochs,
        "scratch_epochs": scratch_epochs, "fit_steps": fit_steps, "fit_samples": fit_samples,
        "ancestry_epochs": ancestry_epochs, "batch_size": batch_size, "downstream_subset": downstream_subset,
        "family_validation": family_validation, "sweep_every_size": sweep_every_size, "recipe": recipe,
        "budgets": tuple(parse_list(budgets, int, "--budgets")) if budgets is not None else None,
        "scratch_budgets": tuple(parse_list(scratch_budgets, int, "--scratch-budgets")) if scratch_budgets is not None else None,
        "depths": parse_list(depths, int, "--depths") if depths is not None else None,
        "widths": parse_list(widths, int, "--widths") if widths is not None else None,
        "extra_sizes": parse_sizes(extra_sizes) if extra_sizes is not None else None,
        "methods": parse_list(methods, str, "--methods") if methods is not None else None,
        "lrs": parse_list(lrs, float, "--lrs") if lrs is not None else None,
        "fit_study_steps": parse_list(fit_study, int, "--fit-study") if fit_study is not None else None,
        "capacity": parse_capacity(capacity) if capacity is not None else None,
        "downstream": parse_names(downstream) if downstream is not None else None,
    }
    config = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    if subset is not None or (data is not None and data != base.data):
        config = dataclasses.replace(config, subset=subset)  # another dataset: all its images unless told
    if config.data == "digits":
        config = dataclasses.replace(config, ancestry_augment=False)  # a flipped digit is another symbol
    out = out or Path("runs/bench" if name == "cpu" else f"runs/bench-{name}")
    if threads or name == "quick":
        import torch

        torch.set_num_threads(threads or 1)
    try:
        result = run_bench(config, out, ancestry=ancestry, learngene=learngene, device=device, log=echo)
    except Interrupted as e:  # a rerun of the same command skips the finished cells: say how many there are
        done = sum(len(p.read_text().splitlines()) for p in (out / "cells.jsonl", out / "downstream.jsonl") if p.is_file())
        e.kept = " and ".join(filter(None, [e.kept, f"{done} finished cells in {out}"]))
        raise
    echo(f"{result.ran} cells run, {result.skipped} skipped (finished before); results in {out}: " + ", ".join(p.name for p in result.files.values()))
