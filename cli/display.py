"""Progress for training loops, fed by the engine's `Progress` reports: a rich bar in a
terminal, plain lines (`io.progress.ProgressLines`) in a log, CI or a cluster job."""

from __future__ import annotations

import os

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from waveinit.io.progress import DEFAULT_EVERY_SECONDS, ProgressLines

from .common import console, is_main_process

# Seconds between two plain progress lines outside a terminal (epoch ends always print).
EVERY_SECONDS = float(os.environ.get("WAVE_PROGRESS_SECONDS", DEFAULT_EVERY_SECONDS))


class TrainingDisplay:
    """Progress over all steps of a run, with epoch (or step, for a fit sized in steps), loss,
    accuracy and images/s.

    Use as a context manager and pass `.update` as the engine's `on_progress` callback.
    """

    def __init__(self, title: str, count: str = "epochs"):
        self.title, self.count = title, count
        self.accuracy = "-"
        self.task = None
        self.lines = None if console().is_terminal else ProgressLines(title, EVERY_SECONDS, file=console().file, count=count)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[where]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console(),
            transient=False,
            disable=self.lines is not None,
        )

    def __enter__(self) -> TrainingDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    @staticmethod
    def callback_for_main_process(display: TrainingDisplay):
        """`display.update` on rank 0 (or without torchrun), None on the other ranks."""
        return display.update if is_main_process() else None

    def update(self, report) -> None:
        if self.lines is not None:
            self.lines(report)
            return
        if self.task is None:
            self.task = self.progress.add_task(self.title, total=report.total_steps, where="-", loss="-", acc="-", speed="-")
        if report.event == "resumed":
            console().print(f"resumed at epoch {report.epoch + 1}, step {report.global_step} of {report.total_steps}")
        if report.event == "epoch" and report.eval:
            self.accuracy = f"{100 * report.eval['accuracy']:.1f}%"
            console().print(
                f"epoch {report.epoch + 1}/{report.epochs}: train loss {report.train_loss:.4f}, "
                f"test accuracy {self.accuracy}, {report.images_per_second:,.0f} img/s"
            )
        steps = f"step {report.global_step}/{report.total_steps}"
        self.progress.update(
            self.task,
            completed=report.global_step,
            where=steps if self.count == "steps" else f"epoch {report.epoch + 1}/{report.epochs}",
            loss=f"{report.loss:.4f}" if report.loss is not None else "-",
            acc=self.accuracy,
            speed=f"{report.images_per_second:,.0f}" if report.images_per_second else "-",
        )
