"""What the commands share: option types, error handling, printing (to stderr, rank 0 only)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from waveinit.errors import WaveError

DEFAULT_ANCESTRY = Path("runs/ancestry.safetensors")
DEFAULT_LEARNGENE = Path("runs/learngene.safetensors")

Data = Annotated[str, typer.Option(help="Dataset: digits, fashion-mnist, idx:DIR or folder:DIR.")]
DataDir = Annotated[Optional[Path], typer.Option(help="Folder holding the Fashion-MNIST IDX files.")]
Subset = Annotated[Optional[int], typer.Option(help="Train on only this many images (a fixed seeded choice).")]
Depth = Annotated[Optional[int], typer.Option(help="Transformer blocks.")]
Width = Annotated[Optional[int], typer.Option(help="Embedding width (a multiple of the template side).")]
Heads = Annotated[Optional[int], typer.Option(help="Attention heads (default: width / 64).")]
Patch = Annotated[Optional[int], typer.Option(help="Patch side in pixels (default: image side / 4).")]
Epochs = Annotated[int, typer.Option(min=1, help="Passes over the training set.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Global batch size (split over processes).")]
Lr = Annotated[float, typer.Option(min=0.0, help="Peak learning rate (AdamW, warm-up then cosine).")]
WeightDecay = Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")]
Seed = Annotated[int, typer.Option(min=0, help="Random seed: the same seed gives the same result on the same machine.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint next to --out.")]
CheckpointEvery = Annotated[int, typer.Option(min=0, help="Also checkpoint every N steps (0: each epoch only).")]
ImageSize = Annotated[Optional[int], typer.Option(min=1, help="folder:DIR: resize images to this side (default: the model's, else their own).")]
Augment = Annotated[bool, typer.Option("--augment", help=(
    "Augment training images: folder:DIR random-resized crops and flips (turns the teacher-logit cache off); "
    "in-memory data (wave train only) random shifts and left-right flips."))]
Workers = Annotated[int, typer.Option(min=0, help="folder:DIR: processes decoding image batches ahead (0: none).")]
SkipBadImages = Annotated[bool, typer.Option("--skip-bad-images", help="folder:DIR: leave out unreadable images (each is checked first) and say how many.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object summarising the result on stdout (and nothing else there).")]


def handles_errors(command):
    """Bad input ends in one line naming the problem and the fix, and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except WaveError as e:
            console().print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def is_main_process() -> bool:
    """Rank 0, or no torchrun at all (read from the environment: no torch import needed)."""
    return int(os.environ.get("RANK", "0")) == 0


def print_json(obj: dict) -> None:
    """One JSON object on stdout (rank 0 only): what scripts read; everything else goes to stderr."""
    if is_main_process():
        typer.echo(json.dumps(obj, default=str))


@functools.cache
def console():
    """The rich console of messages and progress: stderr, so that stdout stays for --json."""
    from rich.console import Console

    return Console(stderr=True)


def load_data(name: str, **options):
    """`load_dataset`, and one line saying how many unreadable images --skip-bad-images left out."""
    from waveinit.io.datasets import load_dataset

    dataset = load_dataset(name, **options)
    if dataset.skipped_images:
        echo(f"skipped {dataset.skipped_images:,} unreadable image(s) in {name} (--skip-bad-images)")
    return dataset


def echo(message: str) -> None:
    if is_main_process():
        console().print(message, highlight=False, soft_wrap=True)
