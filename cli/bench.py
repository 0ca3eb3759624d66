"""`wave bench`: WAVE against other initialisations over a grid of model sizes.

torch and matplotlib are imported inside the command, so `wave --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from waveinit.bench.config import METHODS
from waveinit.errors import WaveError

from .common import DataDir, Device, echo, handles_errors

METHOD_NAMES = ", ".join(METHODS)


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


@handles_errors
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="The quick preset: digits and tiny sizes, a few minutes on 2 CPU cores.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Folder of the results; a rerun skips its finished cells (default: runs/bench, runs/bench-quick).")] = None,
    ancestry: Annotated[Optional[Path], typer.Option(help="Ancestry model to reuse (default: train one in --out).")] = None,
    learngene: Annotated[Optional[Path], typer.Option(help="Learngene to reuse (default: distil one from the ancestry in --out).")] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset (default: fashion-mnist; digits with --quick).")] = None,
    data_dir: DataDir = None,
    subset: Annotated[Optional[int], typer.Option(min=1, help="Training images for everything (default: 5000 of Fashion-MNIST; all with --quick).")] = None,
    depths: Annotated[Optional[str], typer.Option(help="Grid depths, comma-separated (default: 2,4,6; --quick: 1,2).")] = None,
    widths: Annotated[Optional[str], typer.Option(help="Grid widths, comma-separated (default: 64,128,192; --quick: 32,64).")] = None,
    extra_sizes: Annotated[Optional[str], typer.Option(
        help="Sizes beyond the ancestry, DEPTHxWIDTH comma-separated, or none (default: 8x256; --quick: 3x96).")] = None,
    methods: Annotated[Optional[str], typer.Option(help=f"Methods, comma-separated (default: all of {METHOD_NAMES}).")] = None,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Seeds per cell (default: 3).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs of every cell (default: 1).")] = None,
    scratch_factor: Annotated[Optional[int], typer.Option(min=1, help="scratch-long trains this many times the epochs (default: 5).")] = None,
    lrs: Annotated[Optional[str], typer.Option(
        help="Learning rates each method's sweep picks from, comma-separated; one rate: no sweep "
             "(default: 3e-4,1e-3,3e-3; --quick: 1e-3,3e-3,1e-2).")] = None,
    fit_steps: Annotated[Optional[int], typer.Option(min=1, help="Scaler-fit steps of wave and nearest-kron (default: 100; --quick: 40).")] = None,
    fit_samples: Annotated[Optional[int], typer.Option(min=1, help="Images the scaler fit may use (default: 1500; --quick: 600).")] = None,
    ancestry_epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs of the ancestry, when the bench trains it (default: 10; --quick: 20).")] = None,
    distill_epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs of the distillation, when the bench distils (default: 5; --quick: 10).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Batch size of all training (default: 64).")] = None,
    device: Device = "auto",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="PyTorch CPU threads (default: PyTorch's choice; --quick: 1, as its tiny models gain nothing from more "
                    "and extra threads thrash on a busy machine).")] = None,
) -> None:
    """Benchmark initialisations (random, weight selection, nearest-Kronecker templates, WAVE with
    and without the scaler fit, longer training from scratch) over a grid of model sizes: test
    accuracy per epoch, compute and storage, as CSV, JSON, Markdown and plots in --out."""
    import dataclasses

    from waveinit.bench.config import preset
    from waveinit.bench.runner import run_bench
    from waveinit.training.interrupts import Interrupted

    given = {
        "data": data, "data_dir": str(data_dir) if data_dir else None, "seeds": seeds, "epochs": epochs,
        "scratch_factor": scratch_factor, "fit_steps": fit_steps, "fit_samples": fit_samples,
        "ancestry_epochs": ancestry_epochs, "distill_epochs": distill_epochs, "batch_size": batch_size,
        "depths": parse_list(depths, int, "--depths") if depths is not None else None,
        "widths": parse_list(widths, int, "--widths") if widths is not None else None,
        "extra_sizes": parse_sizes(extra_sizes) if extra_sizes is not None else None,
        "methods": parse_list(methods, str, "--methods") if methods is not None else None,
        "lrs": parse_list(lrs, float, "--lrs") if lrs is not None else None,
    }
    config = dataclasses.replace(preset(quick), **{k: v for k, v in given.items() if v is not None})
    if subset is not None or (data is not None and data != preset(quick).data):
        config = dataclasses.replace(config, subset=subset)  # another dataset: all its images unless told
    out = out or Path("runs/bench-quick" if quick else "runs/bench")
    if threads or quick:
        import torch

        torch.set_num_threads(threads or 1)
    try:
        result = run_bench(config, out, ancestry=ancestry, learngene=learngene, device=device, log=echo)
    except Interrupted as e:  # a rerun of the same command skips the finished cells: say how many there are
        cells = out / "cells.jsonl"
        done = sum(1 for line in cells.read_text().splitlines() if line.strip()) if cells.is_file() else 0
        e.kept = " and ".join(filter(None, [e.kept, f"{done} finished cells in {cells}"]))
        raise
    echo(f"{result.ran} cells run, {result.skipped} skipped (finished before); results in {out}: " + ", ".join(p.name for p in result.files.values()))
