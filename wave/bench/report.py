"""The reports of `wave bench`, made from its records alone: `results.csv` and `results.json`
(one row per size, method, seed and epoch), `results.md` (tables) and PNG plots.

Compute is counted in image passes through forward + backward, also shown in epochs of the
training set (passes / training images), and in FLOPs (`waveinit.flops`), which weigh a pass by
its model's cost and count the ancestry's forward passes: the savings tables and the n-times
total are given in both. Storage is float32 bytes.
"""

from __future__ import annotations

import math

import numpy as np

from ..spec import ViTSpec, scaler_shapes
from .config import BenchConfig

CSV_COLUMNS = ("data", "size", "depth", "width", "heads", "params", "method", "seed", "status", "epoch", "accuracy", "loss", "train_loss",
               "seconds", "lr", "init_compute", "compute", "compute_epochs", "flops", "images", "train_images")
BYTES_PER_PARAM = 4  # float32


# ----------------------------------------------------------------------------- tables of numbers

def flat_rows(records: list[dict]) -> list[dict]:
    """One row per (size, method, seed, epoch); one row with status "n/a" per cell that does not apply."""
    rows = []
    for r in records:
        base = {k: r.get(k) for k in ("data", "size", "depth", "width", "heads", "params", "method", "seed", "status")}
        if r["status"] != "ok":
            rows.append({**base, "note": r.get("reason", "")})
            continue
        for row in r["rows"]:
            rows.append({**base, "epoch": row["epoch"], "accuracy": row["accuracy"], "loss": row["loss"], "train_loss": row["train_loss"],
                         "seconds": row["seconds"], "lr": r["lr"], "init_compute": r["init_compute"], "compute": row["compute"],
                         "flops": row.get("flops"),
                         "compute_epochs": row["compute"] / r["train_images"], "images": row["images"], "train_images": r["train_images"]})
    return rows


def summarise(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(size, method) -> the mean and spread over seeds of every epoch's test accuracy.

    {"status", "seeds", "epochs", "mean", "std" (sample std; 0 for one seed), "compute" (image
    passes at each epoch), "params", "reason"}.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["size"], r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        if rs[0]["status"] != "ok":
            out[key] = {"status": rs[0]["status"], "reason": rs[0].get("reason", ""), "seeds": len(rs), "params": rs[0]["params"]}
            continue
        acc = np.array([[row["accuracy"] for row in r["rows"]] for r in rs])  # (seeds, epochs + 1)
        out[key] = {
            "status": "ok", "seeds": len(rs), "params": rs[0]["params"], "depth": rs[0]["depth"], "width": rs[0]["width"],
            "epochs": [row["epoch"] for row in rs[0]["rows"]],
            "mean": acc.mean(0).tolist(), "std": (acc.std(0, ddof=1) if len(rs) > 1 else np.zeros(acc.shape[1])).tolist(),
            "compute": [row["compute"] for row in rs[0]["rows"]], "train_images": rs[0]["train_images"], "lr": rs[0]["lr"],
            "flops": [row.get("flops") for row in rs[0]["rows"]],  # None in records older than the FLOP count
        }
    return out


def scratch_compute_to_reach(scratch: dict, target: float, short: tuple[float, float] | None = None, unit: str = "compute",
                             scale: str = "linear") -> float | None:
    """The training compute at which training from scratch reaches `target`: on the upper
    envelope of scratch's scored epochs (compute, mean accuracy) and `short`, the (compute,
    accuracy) of random init trained for the short budget on its own schedule (a run annealed
    early ends higher than the long run at the same point); 0 at or below the initial accuracy;
    None beyond the last point. `unit`: "compute" (image passes) or "flops". Between points,
    `scale` "linear" draws straight lines in compute; "log" draws them in log-compute, which
    follows a curve that bends (each doubling of compute gaining less) more closely and so needs
    less compute (the segment from 0 compute, which has no logarithm, stays linear)."""
    points: dict[float, float] = {}
    for c, a in [*zip(scratch[unit], scratch["mean"]), *([short] if short else [])]:
        points[c] = max(a, points.get(c, a))
    best, envelope = -1.0, []
    for c in sorted(points):
        best = max(best, points[c])
        envelope.append((c, best))
    if target <= envelope[0][1]:
        return float(envelope[0][0])
    for (c0, a0), (c1, a1) in zip(envelope, envelope[1:]):
        if a1 >= target:
            if a1 == a0:
                return float(c1)
            t = (target - a0) / (a1 - a0)
            return c0 * (c1 / c0) ** t if scale == "log" and c0 > 0 else c0 + t * (c1 - c0)
    return None


def final_index(s: dict, epochs: int) -> int:
    return s["epochs"].index(epochs)


# The n-times total charges each method, once for the whole family, the file it spawns from
# (its distillation) and, but for the two that never read it, the ancestry (reported apart).
FAMILY_CHARGE = {"wave": "learngene", "wave-nofit": "learngene", "tleg": "tleg"}
WITHOUT_ANCESTRY = ("random", "mimetic")
SCALES = (("linear", ""), ("log", "_log"))  # how scratch's curve is read between its budgets
UNITS = (("compute", ""), ("flops", "_flops"))  # image passes, FLOPs


def compute_table(summary: dict, sizes: list[str], methods: list[str], family: dict, epochs: int) -> dict:
    """Per size and method: the accuracy after the budget `epochs`, its compute, and the compute
    scratch needs to reach that accuracy (`scratch_equivalent`, None if not within scratch's
    budgets; `_log`: read in log-compute between them), in image passes and, where the records
    count them, in FLOPs (`*_flops`: the teacher's forward passes included, which passes leave
    out). `totals`: per method, the n-times claim over the sizes it applies to (`method_total`).
    Sizes differ in cost per pass, so the totals' fair unit is FLOPs."""
    ancestry, gene = family.get("ancestry", {}), family.get("learngene", {})
    table = {"ancestry_compute": ancestry.get("compute"), "learngene_compute": gene.get("compute"),
             "ancestry_flops": ancestry.get("flops"), "learngene_flops": gene.get("flops"), "sizes": {}}
    for size in sizes:
        scratch, random = summary.get((size, "scratch")), summary.get((size, "random"))
        scratch = scratch if scratch and scratch["status"] == "ok" else None
        random = random if random and random["status"] == "ok" and epochs in random["epochs"] else None
        entry = {}
        for m in methods:
            s = summary.get((size, m))
            if m == "scratch" or s is None or s["status"] != "ok" or epochs not in s["epochs"]:
                continue
            i = final_index(s, epochs)
            entry[m] = {"final": s["mean"][i]}
            for unit, suffix in UNITS:
                if unit == "flops" and not _counted(s, scratch, random):
                    continue  # records older than the FLOP count
                short = (random[unit][final_index(random, epochs)], random["mean"][final_index(random, epochs)]) if random else None
                entry[m].update({unit: s[unit][i], f"scratch_max{suffix}": scratch[unit][-1] if scratch else None})
                for scale, tail in SCALES:
                    entry[m][f"scratch_equivalent{suffix}{tail}"] = (
                        scratch_compute_to_reach(scratch, s["mean"][i], short, unit, scale) if scratch else None)
        table["sizes"][size] = entry
    totals = {}
    for m in methods:
        entries = [table["sizes"][size][m] for size in sizes if m in table["sizes"][size]]
        if entries and all(e["scratch_max"] is not None for e in entries):
            totals[m] = method_total(entries, m, family)
    table["totals"] = totals
    return table


def method_total(entries: list[dict], method: str, family: dict) -> dict:
    """The n-times claim for one method, from its `compute_table` entries (one per size it applies
    to): scratch's compute to each size's accuracy (its longest run where it never gets there, so
    the total is then a lower bound: `scratch_lower_bound`) against the method's own
    (initialisations and epochs, `method`) plus what the family charges it once (`charged`: the
    file it spawns from, `FAMILY_CHARGE`), and `saving` the ratio; `saving_with_ancestry` charges
    the ancestry too, for every method that reads it. Each in image passes and in FLOPs (`_flops`,
    where every entry counts them), scratch read linearly and in log-compute (`_log`). A charge
    or ancestry of unknown cost leaves its saving out."""
    charged = family.get(FAMILY_CHARGE[method], {}) if method in FAMILY_CHARGE else None
    ancestry = None if method in WITHOUT_ANCESTRY else family.get("ancestry", {})
    total = {"sizes": len(entries), "scratch_lower_bound": any(e["scratch_equivalent"] is None for e in entries)}
    for unit, suffix in UNITS:
        if not all(unit in e for e in entries):
            continue  # records older than the FLOP count
        own = sum(e[unit] for e in entries)
        charge = 0 if charged is None else charged.get(unit)
        total.update({f"method{suffix}": own, f"charged{suffix}": charge})
        for _, tail in SCALES:
            scratch = sum(e[f"scratch_max{suffix}"] if e[f"scratch_equivalent{suffix}{tail}"] is None
                          else e[f"scratch_equivalent{suffix}{tail}"] for e in entries)
            total[f"scratch{suffix}{tail}"] = scratch
            if charge is not None:
                total[f"saving{suffix}{tail}"] = scratch / (own + charge)
                if ancestry is None or ancestry.get(unit) is not None:
                    total[f"saving{suffix}_with_ancestry{tail}"] = scratch / (own + charge + (ancestry or {}).get(unit, 0))
    return total


def _counted(*summaries: dict | None) -> bool:
    """Whether every row of these summaries (None: absent) counts its FLOPs."""
    return all(None not in s["flops"] for s in summaries if s is not None)


def cell_seconds(record: dict, budgets: bool) -> float:
    """The seconds a cell's record counts: its initialisation and its training runs (scoring on the
    test set not included). With `budgets` each row after the first is its own run from the same
    start, its seconds the initialisation's plus the run's; else the rows are one run's running total."""
    rows = record["rows"]
    if not rows:
        return 0.0
    if not budgets:
        return rows[-1]["seconds"]
    start = rows[0]["seconds"]
    return start + sum(row["seconds"] - start for row in rows[1:])


def time_table(config: BenchConfig, family: dict, records: list[dict], fits: list[dict], downstream: list[dict]) -> dict:
    """Recorded seconds per stage: the family's files (the given ones as their records say), the
    fit study, and the cells per method, on the family's data and downstream."""
    def cells(rs: list[dict]) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in rs:
            runs = config.scratch_budgets if r["method"] == "scratch" else config.budgets
            out[r["method"]] = out.get(r["method"], 0.0) + cell_seconds(r, bool(runs))
        return out

    made = {name: {"seconds": family[name].get("seconds"), "given": family[name].get("how", "").startswith("given")}
            for name in ("ancestry", "learngene", "tleg") if name in family}
    return {"family": made, "fit_study": sum(f.get("seconds", 0.0) for f in fits), "cells": cells(records), "downstream": cells(downstream)}


def storage_table(records: list[dict], family: dict) -> dict:
    """The learngene file against a dense float32 model per size, and each size's own scalers."""
    gene = family["learngene"]
    ancestry = ViTSpec.from_dict(family["ancestry"]["spec"])
    sizes = {}
    for r in records:
        if r["size"] in sizes:
            continue
        spec = ancestry.replace(depth=r["depth"], width=r["width"], heads=r["heads"])
        scalers = sum(math.prod(s) for s in scaler_shapes(spec, gene["side"], gene["templates"]).values())
        sizes[r["size"]] = {"params": spec.num_params(), "dense_bytes": spec.num_params() * BYTES_PER_PARAM,
                            "scaler_params": scalers, "scaler_bytes": scalers * BYTES_PER_PARAM}
    dense = sum(s["dense_bytes"] for s in sizes.values())
    learngene_total = gene["bytes"] + sum(s["scaler_bytes"] for s in sizes.values())
    return {"learngene_bytes": gene["bytes"], "template_params": gene["template_params"], "sizes": sizes,
            "dense_total_bytes": dense, "learngene_and_scalers_bytes": learngene_total, "ratio": dense / learngene_total}


def downstream_table(records: list[dict], methods: list[str], epochs: int = 1, budgets: tuple[int, ...] = ()) -> dict:
    """Per downstream dataset: the summary of its cells, each method's mean gain over random
    after the budget `epochs` (the mean over sizes of the difference of the seed means), and,
    with scratch among the methods, the compute scratch needs to reach each (`compute_table`);
    `per_budget`: the same gains and compute after each of `budgets` (each its own run)."""
    by_data: dict[str, list[dict]] = {}
    for r in records:
        by_data.setdefault(r["data"], []).append(r)
    out = {}
    for name, rs in by_data.items():
        summary = summarise(rs)
        sizes = list(dict.fromkeys(r["size"] for r in rs))
        ok = lambda size, m, summary=summary: summary.get((size, m), {}).get("status") == "ok"  # noqa: E731
        inits = [m for m in methods if m != "scratch"]  # scratch is the yardstick, not an initialisation
        shared = [size for size in sizes if all(ok(size, m) for m in inits if any(k[1] == m for k in summary))]
        per_budget = {b: {"gains": _gains(summary, sizes, inits, shared, b),
                          "compute": compute_table(summary, sizes, [*inits, "scratch"], {}, b)}
                      for b in sorted({epochs, *budgets})}
        out[name] = {"summary": summary, "sizes": sizes, "shared_sizes": shared, **per_budget[epochs], "per_budget": per_budget}
    return out


def _gains(summary: dict, sizes: list[str], methods: list[str], shared: list[str], epochs: int) -> dict:
    """Each method's gain over random after `epochs`: the mean over the sizes it applies to (and
    over `shared`, where every method applies) of the difference of the seed means."""
    def final(size: str, m: str) -> float | None:
        s = summary.get((size, m))
        return s["mean"][final_index(s, epochs)] if s and s["status"] == "ok" and epochs in s["epochs"] else None

    gains = {}
    for m in methods:
        diffs = {size: final(size, m) - final(size, "random") for size in sizes
                 if final(size, m) is not None and final(size, "random") is not None}
        if diffs and m != "random":
            on_shared = [diffs[size] for size in shared if size in diffs]
            gains[m] = {"mean_gain": float(np.mean(list(diffs.values()))), "sizes": len(diffs),
                        "mean_gain_shared": float(np.mean(on_shared)) if on_shared else None}
    return gains
