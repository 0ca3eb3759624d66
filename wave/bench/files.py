"""The files of `wave bench`'s report, each written through a temporary file and a rename:
`results.csv` and `results.json` (report.py's tables), `results.md` (markdown.py) and the plots."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path

from ..io.storage import atomic_write_bytes
from .config import METHODS, BenchConfig
from .markdown import render_markdown
from .plots import plot_accuracy_vs_compute, plot_accuracy_vs_epoch, plot_accuracy_vs_size, plot_capacity, plot_savings_vs_params, plot_storage
from .report import CSV_COLUMNS, compute_table, downstream_table, flat_rows, storage_table, summarise, time_table


def write_reports(out: Path, config: BenchConfig, family: dict, records: list[dict], rates: dict[str, float],
                  sweep_size: str, sweeps: list[dict], fits: list[dict] | None = None, downstream: list[dict] | None = None,
                  size_rates: dict[str, dict[str, float]] | None = None) -> dict[str, Path]:
    """Write every report into `out`, each through a temporary file and a rename; name -> path.
    `size_rates` (size -> method -> rate): the rates of a sweep at every size, when there was one."""
    fits, downstream = fits or [], downstream or []
    sizes = list(dict.fromkeys(r["size"] for r in records))
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    summary = summarise(records)
    compute = compute_table(summary, sizes, methods, family, config.epochs)
    per_budget = {b: compute_table(summary, sizes, methods, family, b) for b in sorted(config.budgets or (config.epochs,))}
    storage = storage_table(records, family)
    seconds = time_table(config, family, records, fits, downstream)
    far = downstream_table(downstream, [m for m in METHODS if any(r["method"] == m for r in downstream)], config.epochs,
                           tuple(config.budgets or ()))
    rows = flat_rows(records) + flat_rows(downstream)

    names = ["results.csv", "results.json", "results.md", "accuracy_vs_size.png", "accuracy_vs_epoch.png", "accuracy_vs_compute.png",
             "savings_vs_params.png", "storage.png"] + (["capacity.png"] if family.get("capacity") else [])
    files = {name: out / name for name in names}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(files["results.csv"], text.getvalue().encode())

    report = {
        "settings": asdict(config), "family": family, "learning_rates": rates, "learning_rates_per_size": size_rates,
        "sweep": {"size": sweep_size, "epochs": config.sweep_epochs, "validation_fraction": config.validation_fraction,
                  "runs": sorted(sweeps, key=lambda r: (r["method"], r["lr"]))},
        "fit_study": fits,
        "rows": rows,
        "summary": [{"size": size, "method": m, **summary[(size, m)]} for size in sizes for m in methods if (size, m) in summary],
        "compute": compute, "compute_per_budget": per_budget, "storage": storage, "seconds": seconds,
        "downstream": {name: {"gains": d["gains"], "shared_sizes": d["shared_sizes"], "compute": d["compute"],
                              "per_budget": d["per_budget"], "summary": [{"size": k[0], "method": k[1], **v} for k, v in d["summary"].items()]}
                       for name, d in far.items()},
    }
    atomic_write_bytes(files["results.json"], (json.dumps(report, indent=1) + "\n").encode())
    markdown = render_markdown(config, family, summary, sizes, methods, rates, sweep_size, sweeps, compute, storage, fits, far, size_rates,
                               per_budget, seconds)
    atomic_write_bytes(files["results.md"], markdown.encode())
    plot_accuracy_vs_size(files["accuracy_vs_size.png"], summary, sizes, methods, config)
    plot_accuracy_vs_epoch(files["accuracy_vs_epoch.png"], summary, sizes, methods)
    plot_accuracy_vs_compute(files["accuracy_vs_compute.png"], summary, sizes, methods)
    plot_savings_vs_params(files["savings_vs_params.png"], compute, summary, sizes, methods, config.epochs)
    plot_storage(files["storage.png"], storage)
    if family.get("capacity"):
        on = family["capacity"][0]["chosen_on"]
        plot_capacity(files["capacity.png"], family["capacity"], family["ancestry"][on], config.capacity_tolerance,
                      "validation" if on == "val_accuracy" else "test")
    return files
