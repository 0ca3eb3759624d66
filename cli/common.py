"""What the commands share: option types, error handling, printing (to stderr, rank 0 only)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import typer

from waveinit.errors import WaveError

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
    from rich.markup import escape  # a message's [brackets] are text, not markup

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except WaveError as e:
            console().print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as e:
            message = missing_dependency(e)
            if message is None:
                raise
            console().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
