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

# Help panels: `wave distill --help` groups its options under these titles.
DATA, MODEL, TRAINING, RUN = "Data", "Model", "Training", "Output and runtime"

Data = Annotated[str, typer.Option(help="Dataset: digits, fashion-mnist, idx:DIR or folder:DIR.", rich_help_panel=DATA)]
DataDir = Annotated[Optional[Path], typer.Option(help="Folder holding the Fashion-MNIST IDX files.", rich_help_panel=DATA)]
Subset = Annotated[Optional[int], typer.Option(help="Train on only this many images (a fixed seeded choice).", rich_help_panel=DATA)]
Depth = Annotated[Optional[int], typer.Option(help="Transformer blocks.", rich_help_panel=MODEL)]
Width = Annotated[Optional[int], typer.Option(help="Embedding width (a multiple of the template side).", rich_help_panel=MODEL)]
Heads = Annotated[Optional[int], typer.Option(help="Attention heads (default: width / 64).", rich_help_panel=MODEL)]
Patch = Annotated[Optional[int], typer.Option(help="Patch side in pixels (default: image side / 4).", rich_help_panel=MODEL)]
Epochs = Annotated[int, typer.Option(min=1, help="Passes over the training set.", rich_help_panel=TRAINING)]
BatchSize = Annotated[int, typer.Option(min=1, help="Global batch size (split over processes).", rich_help_panel=TRAINING)]
Lr = Annotated[float, typer.Option(min=0.0, help="Peak learning rate (AdamW, warm-up then cosine).", rich_help_panel=TRAINING)]
WeightDecay = Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.", rich_help_panel=TRAINING)]
Seed = Annotated[int, typer.Option(min=0, help="Random seed: the same seed gives the same result on the same machine.", rich_help_panel=TRAINING)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN)]
Revision = Annotated[Optional[str], typer.Option(help="Hub models: the branch, tag or commit to use (default: main).")]
Threads = Annotated[Optional[int], typer.Option(min=1, help=(
    "PyTorch CPU threads (default: PyTorch's choice, at most the cores this process may use); recorded in the output's "
    "provenance. On a shared machine, 1 is often fastest."), rich_help_panel=RUN)]
Compile = Annotated[bool, typer.Option("--compile", help=(
    "torch.compile the model for training (tens of seconds to compile first; see README's benchmarks)."), rich_help_panel=RUN)]
LogDir = Annotated[Optional[Path], typer.Option(help=(
    "Also write TensorBoard event files of every epoch here (train/loss, eval/top1, eval/top5, eval/loss, lr; "
    "needs pip install 'waveinit[tensorboard]')."), rich_help_panel=RUN)]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output (default: refuse).", rich_help_panel=RUN)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint next to --out.", rich_help_panel=RUN)]
CheckpointEvery = Annotated[int, typer.Option(min=0, help="Also checkpoint every N steps (0: each epoch only).", rich_help_panel=RUN)]
ImageSize = Annotated[Optional[int], typer.Option(min=1, help="folder:DIR: resize images to this side (default: the model's, else their own).",
                                                  rich_help_panel=DATA)]
Augment = Annotated[bool, typer.Option("--augment", help=(
    "Augment training images: folder:DIR random-resized crops and flips (turns the teacher-logit cache off); "
    "in-memory data (wave train only) random shifts and left-right flips."), rich_help_panel=DATA)]
Workers = Annotated[int, typer.Option(min=0, help="folder:DIR: processes decoding image batches ahead (0: none).", rich_help_panel=DATA)]
SkipBadImages = Annotated[bool, typer.Option("--skip-bad-images", help="folder:DIR: leave out unreadable images (each is checked first) and say how many.",
                                             rich_help_panel=DATA)]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object summarising the result on stdout (and nothing else there).",
                                    rich_help_panel=RUN)]

RECIPE = "DeiT recipe (timm's names; all off by default)"
Smoothing = Annotated[float, typer.Option(min=0.0, max=0.99, help="Label smoothing of the cross-entropy (DeiT: 0.1).", rich_help_panel=RECIPE)]
Mixup = Annotated[float, typer.Option(min=0.0, help="Mixup alpha, on when > 0 (DeiT: 0.8).", rich_help_panel=RECIPE)]
Cutmix = Annotated[float, typer.Option(min=0.0, help="CutMix alpha, on when > 0 (DeiT: 1.0).", rich_help_panel=RECIPE)]
MixupProb = Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability that a batch is mixed.", rich_help_panel=RECIPE)]
MixupSwitchProb = Annotated[float, typer.Option(min=0.0, max=1.0, help="With both on: probability of CutMix over mixup.",
                                                rich_help_panel=RECIPE)]
Reprob = Annotated[float, typer.Option(min=0.0, max=1.0, help="Random erasing probability per image, per-pixel noise (DeiT: 0.25).",
                                       rich_help_panel=RECIPE)]
AutoAugment = Annotated[Optional[str], typer.Option("--aa", help=(
    "folder:DIR with --augment: timm's RandAugment or AutoAugment policy, e.g. rand-m9-mstd0.5-inc1 (DeiT's); needs timm."),
    rich_help_panel=RECIPE)]
DropPath = Annotated[float, typer.Option(min=0.0, max=0.99, help="Stochastic depth rate of the last block, linear from 0 (DeiT-S: 0.1).",
                                         rich_help_panel=RECIPE)]
ModelEma = Annotated[bool, typer.Option("--model-ema", help=(
    "Keep a moving average of the weights: evaluated each epoch, saved beside the output as <stem>.ema.safetensors."),
    rich_help_panel=RECIPE)]
ModelEmaDecay = Annotated[float, typer.Option(min=0.0, max=0.999999, help="Decay of --model-ema.", rich_help_panel=RECIPE)]


def recipe(smoothing: float, mixup: float, cutmix: float, mixup_prob: float, mixup_switch_prob: float, reprob: float, drop_path: float,
           model_ema: bool, model_ema_decay: float) -> dict:
    """The DeiT recipe's options as TrainConfig fields."""
    return {"smoothing": smoothing, "mixup": mixup, "cutmix": cutmix, "mixup_prob": mixup_prob, "mixup_switch_prob": mixup_switch_prob,
            "reprob": reprob, "drop_path": drop_path, "model_ema": model_ema, "model_ema_decay": model_ema_decay}


# Optional dependencies whose absence is a one-line error naming the install that brings them.
_EXTRAS = {"torch": "waveinit[torch]", "typer": "waveinit[cli]", "rich": "waveinit[cli]", "sklearn": "waveinit[cli]",
           "PIL": "waveinit[cli]", "matplotlib": "waveinit[cli]", "transformers": "transformers"}


def missing_dependency(e: ModuleNotFoundError) -> str | None:
    """The one-line error for an optional dependency that is not installed, or None for any other module."""
    top = (e.name or "").split(".")[0]
    if top not in _EXTRAS:
        return None
    return f"this command needs {top}, which is not installed: pip install '{_EXTRAS[top]}'"


def handles_errors(command):
    """Bad input ends in one line naming the problem and the fix, and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except WaveError as e:
            console().print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as e:
            message = missing_dependency(e)
            if message is None:
                raise
            console().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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


def refuse_existing(path: Path, force: bool, option: str = "--out") -> None:
    """An existing output is never replaced silently: one line naming it, unless --force."""
    if not force and (path.exists() or path.is_symlink()):
        raise WaveError(f"{path} exists: pass --force to replace it, or choose another {option}")


def use_threads(threads: int | None) -> int:
    """Set PyTorch's CPU threads (`None`: its own choice, capped at the cores this process may
    use) and return the count in force, for the output's provenance."""
    import torch

    if threads is None:
        allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = min(torch.get_num_threads(), allowed)
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def check_data_name(name: str | None) -> None:
    """A misspelt --data is reported before any slow work (loading a teacher, training)."""
    if name is not None:
        from waveinit.io.datasets import check_name

        check_name(name)
