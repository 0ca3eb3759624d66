"""Protocol v4's recipe arms (docs/bench/protocol-v4.md, item 1): each arm is a bench of its own
folder (`OUT/plain`, `OUT/ancestry`), and each method's recipe at each size is chosen on
validation like its rate: the arm whose best sweep run has the higher validation accuracy (ties:
the lower validation loss, then the arm listed first). Scratch takes random's recipe, as it takes
random's rate. Made from the records alone; the test set is read only into the tables.

    python -m waveinit.bench.arms docs/bench/v4     # writes results.csv, results.json and results.md there
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from ..io.storage import atomic_write_bytes
from .config import METHODS
from .records import RecordFile
from .report import CSV_COLUMNS, flat_rows, summarise

ARMS = ("plain", "ancestry")  # the order breaks ties


def best_runs(sweeps: list[dict]) -> dict[tuple[str, str], dict]:
    """(method, size) -> its best sweep record, the runner's rule: the highest validation
    accuracy, then the lowest loss, over every rate it tried (the grid, and lower rates only
    where the grid's lowest won: `runner.sweep_learning_rates`)."""
    best: dict[tuple[str, str], dict] = {}
    for r in sweeps:
        key = (r["method"], r["size"])
        if key not in best or (r["val_accuracy"], -r["val_loss"]) > (best[key]["val_accuracy"], -best[key]["val_loss"]):
            best[key] = r
    return best


def choose_recipes(runs: dict[str, dict[tuple[str, str], dict]]) -> dict[tuple[str, str], str]:
    """(method, size) -> the chosen arm, for the (method, size) pairs every arm has swept."""
    shared = set.intersection(*(set(r) for r in runs.values()))
    return {key: max(ARMS, key=lambda arm: (runs[arm][key]["val_accuracy"], -runs[arm][key]["val_loss"], -ARMS.index(arm)))
            for key in shared}


def arm_cells(folder: Path, best: dict[tuple[str, str], dict]) -> list[dict]:
    """The finished cells of one arm trained at its chosen rates (scratch at random's)."""
    cells = RecordFile(folder / "cells.jsonl").records.values()
    rate = lambda c: best.get(("random" if c["method"] == "scratch" else c["method"], c["size"]), {}).get("lr")  # noqa: E731
    return [c for c in cells if c["status"] == "n/a" or (c.get("lr") is not None and c["lr"] == rate(c))]


def merge(out: Path) -> dict:
    """Read both arms under `out`, choose the recipes, and write `results.csv` (v3's columns plus
    `arm`: "main" for the chosen recipe's rows, else the arm's name), `results.json` and `results.md`."""
    runs = {arm: best_runs(list(RecordFile(out / arm / "sweep.jsonl").records.values())) for arm in ARMS}
    chosen = choose_recipes(runs)
    chosen.update({("scratch", size): arm for (m, size), arm in list(chosen.items()) if m == "random"})
    swept = lambda c: (c["method"], c["size"]) in chosen  # noqa: E731  (the ancestry arm also holds v3's other cells)
    cells = {arm: [c for c in arm_cells(out / arm, runs[arm]) if swept(c)] for arm in ARMS}
    rows = []
    for arm in ARMS:
        for row in flat_rows(cells[arm]):
            pick = chosen.get((row["method"], row["size"]))
            rows.append({**row, "arm": "main" if pick == arm else arm})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=(*CSV_COLUMNS, "arm"), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=_order))
    atomic_write_bytes(out / "results.csv", text.getvalue().encode())
    summary = {arm: summarise(cells[arm]) for arm in ARMS}
    report = {"chosen": {f"{m}/{s}": arm for (m, s), arm in sorted(chosen.items())},
              "sweeps": {arm: {f"{m}/{s}": {k: r[k] for k in ("lr", "val_accuracy", "val_loss")} for (m, s), r in sorted(runs[arm].items())}
                         for arm in ARMS},
              "summary": {arm: {f"{m}/{s}": v for (s, m), v in sorted(summary[arm].items())} for arm in ARMS}}
    atomic_write_bytes(out / "results.json", (json.dumps(report, indent=1, sort_keys=True) + "\n").encode())
    atomic_write_bytes(out / "results.md", render(chosen, runs, summary).encode())
    return report


def _order(row: dict) -> tuple:
    return (row["depth"], row["width"], METHODS.index(row["method"]) if row["method"] in METHODS else 99, row["arm"] != "main",
            row["seed"], row.get("epoch") or 0)


def render(chosen: dict, runs: dict, summary: dict) -> str:
    """The recipe choices, the main arm's test accuracy after each budget, and both arms side by side."""
    sizes = sorted({s for (_, s) in chosen}, key=lambda s: tuple(map(int, s.split("x"))))
    methods = [m for m in METHODS if any((m, s) in chosen for s in sizes)]
    lines = ["# Protocol v4: the recipe as a choice (both arms)", "",
             "Written by `python -m waveinit.bench.arms docs/bench/v4` from the records of `plain/` and `ancestry/`; the protocol is "
             "`docs/bench/protocol-v4.md`. Cells not finished yet are shown as -.", "",
             "## The recipe chosen per method and size (validation accuracy % of each arm's best rate, one epoch, seed 0)", "",
             "| size | method | plain (rate) | ancestry (rate) | chosen |", "| --- | --- | --- | --- | --- |"]
    for s in sizes:
        for m in methods:
            if (m, s) in chosen and m != "scratch":
                cell = lambda arm: f"{100 * runs[arm][(m, s)]['val_accuracy']:.1f} ({runs[arm][(m, s)]['lr']:g})"  # noqa: E731,B023
                lines.append(f"| {s} | {m} | {cell('plain')} | {cell('ancestry')} | {chosen[(m, s)]} |")
    for title, pick in (("main arm (the chosen recipe)", lambda m, s: chosen[(m, s)]), ("plain arm", lambda m, s: "plain"),
                        ("ancestry arm", lambda m, s: "ancestry")):
        lines += ["", f"## Test accuracy %, {title}: start -> after 1 -> after 4 epochs (mean ± std over seeds)", "",
                  "| size | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
        for s in sizes:
            lines.append(f"| {s} | " + " | ".join(_cell(summary[pick(m, s)].get((s, m))) if (m, s) in chosen else "-" for m in methods) + " |")
    return "\n".join(lines) + "\n"


def _cell(s: dict | None) -> str:
    if not s or s["status"] != "ok":
        return "-" if not s else "n/a"
    parts = []
    for epoch in (0, 1, 4):
        if epoch in s["epochs"]:
            i = s["epochs"].index(epoch)
            parts.append(f"{100 * s['mean'][i]:.1f}" + (f"±{100 * s['std'][i]:.1f}" if epoch and s["seeds"] > 1 else ""))
    return " -> ".join(parts) + (f" ({s['seeds']} seed)" if s["seeds"] == 1 else "")


if __name__ == "__main__":
    merge(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/bench/v4"))
    print(f"wrote results.csv, results.json and results.md in {sys.argv[1] if len(sys.argv) > 1 else 'docs/bench/v4'}")
