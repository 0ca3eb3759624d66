"""Progress as plain lines, for logs: what `wave` prints outside a terminal (a log file, CI, a
cluster job), and a ready `on_progress` callback for `waveinit.spawn` and the `tasks` functions.

A report is the engine's `training.engine.Progress` (any object with its fields will do); this
module reads its fields and never imports torch.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

DEFAULT_EVERY_SECONDS = 30.0  # between two step lines; epoch ends, resumes and the last step always print


class ProgressLines:
    """An `on_progress` callback that writes one line per `every` seconds, and one at each
    epoch end (counting epochs), resume and the last step:

        fit scalers: step 120/400 (30%), loss 0.5312, 1,840 img/s, 12s elapsed, about 28s left

    `count="steps"` counts optimizer steps (a fit sized in steps); `"epochs"` also names the epoch.
    """

    def __init__(self, title: str, every: float = DEFAULT_EVERY_SECONDS, file: TextIO | None = None, count: str = "epochs"):
        self.title, self.every, self.file, self.count = title, every, file, count
        self.last = -float("inf")

    def __call__(self, report) -> None:
        now = time.monotonic()
        due = now - self.last >= self.every or report.global_step >= report.total_steps
        if report.event == "epoch" and self.count == "epochs" or report.event == "resumed":
            due = True  # an epoch's end (with its test accuracy) and a resume always print
        if not due:
            return
        self.last = now
        print(self.line(report), file=self.file or sys.stderr, flush=True)

    def line(self, report) -> str:
        done, total = report.global_step, report.total_steps
        if report.event == "resumed":
            return f"{self.title}: resumed at epoch {report.epoch + 1}, step {done:,} of {total:,}"
        where = f"step {done:,}/{total:,} ({100 * done // max(total, 1)}%)"
        if self.count == "epochs":
            where = f"epoch {report.epoch + 1}/{report.epochs}, {where}"
        parts = [f"{self.title}: {where}"]
        if report.loss is not None and report.loss == report.loss:  # not NaN (nothing seen yet after a resume)
            parts.append(f"loss {report.loss:.4f}")
        if report.event == "epoch" and report.eval:
            parts.append(f"test accuracy {100 * report.eval['accuracy']:.2f}%")
        if report.images_per_second:
            parts.append(f"{report.images_per_second:,.0f} img/s")
        parts.append(f"{_duration(report.seconds_elapsed)} elapsed")
        if done < total and report.seconds_left == report.seconds_left:
            parts.append(f"about {_duration(report.seconds_left)} left")
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
