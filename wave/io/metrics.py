"""The per-epoch metrics file that `wave train` and `wave distill` keep beside their output.

A CSV with timm's `summary.csv` column names where they apply (`epoch`, `train_loss`,
`eval_loss`, `eval_top1` and `eval_top5` in percent, `lr`) plus `images_per_second` and `seconds`, one row per
finished epoch. It is rewritten atomically after every epoch; a resumed run keeps the rows of
the epochs before it and never writes an epoch twice.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from .storage import atomic_write_bytes

COLUMNS = ("epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr", "images_per_second", "seconds")


def metrics_path(out: str | os.PathLike) -> Path:
    """`runs/model.safetensors` -> `runs/model.metrics.csv`."""
    return Path(out).with_suffix(".metrics.csv")


class MetricsLog:
    """The rows of one run's metrics file, keyed by epoch."""

    def __init__(self, path: str | os.PathLike, resume: bool):
        self.path = Path(path)
        self.rows: dict[int, dict] = {}
        if resume and self.path.is_file():  # a fresh run replaces the file at its first epoch
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("epoch", "").isdigit():
                        self.rows[int(row["epoch"])] = {k: row.get(k, "") for k in COLUMNS}

    def add(self, record: dict) -> None:
        """Record a finished epoch (an entry of the engine's history) and rewrite the file; rows
        of later epochs, left by an older run that went further, are dropped."""
        epoch = int(record["epoch"])
        evaluation = record.get("eval") or {}
        self.rows = {e: row for e, row in self.rows.items() if e < epoch}
        self.rows[epoch] = {
            "epoch": epoch,
            "train_loss": record["train_loss"],
            "eval_loss": evaluation.get("loss", ""),
            "eval_top1": 100 * evaluation["accuracy"] if "accuracy" in evaluation else "",
            "eval_top5": 100 * evaluation["top5"] if "top5" in evaluation else "",
            "lr": record["lr"],
            "images_per_second": record["images_per_second"],
            "seconds": record["seconds"],
        }
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows[e] for e in sorted(self.rows))
        atomic_write_bytes(self.path, text.getvalue().encode())
