"""The reports of `wave bench`, made from its records alone: `results.csv` and `results.json`
(one row per size, method, seed and epoch), `results.md` (tables) and PNG plots.

Compute is counted in image passes through forward + backward, also shown in epochs of the
training set (passes / training images), and in FLOPs (`waveinit.flops`), which weigh a pass by
its model's cost and count the ancestry's forward passes: the savings tables and the n-times
total are given in both. Storage is float32 bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..configs import SpawnConfig
from ..io.storage import atomic_write_bytes
from ..spec import ViTSpec, scaler_shapes
from .config import METHODS, RECIPES, BenchConfig
from .plots import plot_accuracy_vs_compute, plot_accuracy_vs_epoch, plot_accuracy_vs_size, plot_capacity, plot_savings_vs_params, plot_storage, short_count

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


# ----------------------------------------------------------------------------- files

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


# ----------------------------------------------------------------------------- Markdown

def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _acc(s: dict, epoch: int) -> str:
    i = s["epochs"].index(epoch)
    spread = f" ± {100 * s['std'][i]:.1f}" if s["seeds"] > 1 else ""
    return f"{_pct(s['mean'][i])}{spread}"


def _passes(n: float | None, train_images: int) -> str:
    """Image passes as epochs of the training set, with the count."""
    if n is None:
        return "unknown"
    return f"{n / train_images:.2f} ep ({short_count(n)})"


def _bytes(n: float) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _percent(x: float | None) -> str:
    return f"{_pct(x)}%" if x is not None else "-"


def render_markdown(config: BenchConfig, family: dict, summary: dict, sizes: list[str], methods: list[str], rates: dict,
                    sweep_size: str, sweeps: list[dict], compute: dict, storage: dict, fits: list[dict], far: dict,
                    size_rates: dict | None = None, per_budget: dict | None = None, seconds: dict | None = None) -> str:
    n = next(s["train_images"] for s in summary.values() if s["status"] == "ok")
    sections = [
        _intro(config, n, max(s["seeds"] for s in summary.values())),
        _family_section(family, n),
        _capacity_section(config, family),
        _accuracy_section(config, summary, sizes, methods),
        _budgets_section(config, summary, sizes, methods) if config.budgets else [],
        _scratch_section(config, sizes, methods, compute, n),
        _flop_savings_section(config, sizes, methods, per_budget or {config.epochs: compute}),
        _savings_section(config, compute, n, family) if compute["totals"] else [],
        _fit_section(config, fits),
        _rates_section(config, methods, rates, sweep_size, sweeps),
        _size_rates_section(methods, size_rates) if size_rates else [],
        _downstream_section(config.for_downstream(), far),
        _time_section(seconds) if seconds else [],
        _storage_section(storage, with_capacity=bool(family.get("capacity"))),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _intro(config: BenchConfig, n: int, seeds: int) -> list[str]:
    subset = (f"The descendants train on a fixed draw of {n:,} of its training images (seed 0): the session's CPU budget "
              f"does not hold every size, method and seed on all of them" if config.subset else "The descendants train on all of them")
    made = ("the whole training set" if config.family_validation is None else
            f"the training set less a validation split of {100 * config.family_validation:.1f}% (seed 0) that no model sees in training")
    return [f"# wave bench: {config.data}", "", (
        f"The ancestry and every learngene (WAVE's, TLEG's, the capacity study's) are made from {made}. {subset}; "
        f"every score is on the full test set. Each cell initialises a model, trains all its parameters for {_budget(config)}, "
        f"AdamW with warm-up and cosine, batch {config.batch_size}{_recipe(config)}, at its method's swept learning rate. "
        f"Test accuracy in %, mean ± sample std over {seeds} seed(s) (the seed draws random "
        f"initialisations, the fit's images and the data order). Compute: forward + backward image passes, in epochs of the "
        f"descendants' training set; a pass of a bigger model costs more, which these counts do not weigh.")]


def _budget(config: BenchConfig) -> str:
    if config.budgets:
        scratch = f"scratch: {' / '.join(map(str, sorted(config.scratch_budgets)))}" if config.scratch_budgets else \
            f"scratch: {config.scratch_epochs}, scored after each"
        return f"{' / '.join(map(str, sorted(config.budgets)))} epochs, each budget its own run annealed to its end ({scratch})"
    return f"{config.epochs} epoch(s) (scratch: {config.scratch_epochs}, scored after each)"


def _recipe(config: BenchConfig) -> str:
    if config.recipe == "plain":
        return ""
    settings = ", ".join(f"{k} {v}" for k, v in RECIPES[config.recipe].items() if k != "augment" or config.ancestry_augment)
    return f", with the {config.recipe}'s regularisation ({settings}; downstream: none)"


def _family_section(family: dict, n: int) -> list[str]:
    a, g, nk = family["ancestry"], family["learngene"], family["nearest_kron"]
    teacher = f" + {short_count(g['teacher_forward'])} teacher forward passes" if g.get("teacher_forward") else ""
    matrices = [nk["relative_error"][r] for r in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")]
    lines = [
        "## The family (made once, shared by every size)", "",
        "| | how | test accuracy | compute | file |",
        "| --- | --- | --- | --- | --- |",
        (f"| ancestry {a['spec']['depth']}x{a['spec']['width']} ({a['params']:,} parameters) | {a['how']} | {_percent(a['test_accuracy'])} | "
         f"{_passes(a['compute'], n)} (reported apart) | {_bytes(a['bytes']) if a['bytes'] else '-'} |"),
        (f"| learngene: {max(g['templates'].values())} templates of {g['side']}x{g['side']} per role ({g['template_params']:,} template "
         f"parameters) | {g['how']} | {_percent(g['test_accuracy'])} (auxiliary model) | {_passes(g['compute'], n)}{teacher} | {_bytes(g['bytes'])} |"),
    ]
    if "tleg" in family:
        t = family["tleg"]
        lines.append(f"| TLEG: A and B per layer parameter ({t['params']:,} parameters) | {t['how']} | {_percent(t['test_accuracy'])} "
                     f"(auxiliary model) | {_passes(t['compute'], n)} | {_bytes(t['bytes'])} |")
    lines.append(f"| nearest-Kronecker templates (as many as the learngene's) | {nk['how']}; relative error of the four block matrices "
                 f"{min(matrices):.2f}-{max(matrices):.2f} | - | 0 | {_bytes(nk['bytes'])} |")
    return lines


def _capacity_section(config: BenchConfig, family: dict) -> list[str]:
    rows = family.get("capacity")
    if not rows:
        return []
    on = rows[0]["chosen_on"]
    where = "validation" if on == "val_accuracy" else "test"
    a = family["ancestry"][on]
    lines = ["## The learngene's capacity: what condensation keeps", "", (
        f"Every candidate distilled from the ancestry ({_percent(a)} on {where}) on the family's training set, an auxiliary model of "
        f"its shape; the rule, fixed before the run and read on the {where} images: the candidate of side {config.side} within "
        f"{100 * config.capacity_tolerance:g} point(s) of the ancestry at the fewest bytes, among those at most "
        f"1/{1 / config.capacity_bytes_fraction:.0f} of the family's dense bytes (none within: the most accurate of those). "
        f"Plot: `capacity.png`."), "",
        f"| templates per role | side | distillation epochs | file | of the family | auxiliary accuracy ({where}) | gap to the ancestry "
        f"| test accuracy | chosen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in rows:
        lines.append(f"| {c['templates']} | {c['side']} | {c['epochs']} | {_bytes(c['bytes'])} | 1/{1 / c['fraction_of_family']:.0f} | "
                     f"{_percent(c['score'])} | {100 * c['gap']:.2f} | {_percent(c['test_accuracy'])} | "
                     f"{'yes' if c['chosen'] else ''} |")
    return lines


def _accuracy_section(config: BenchConfig, summary: dict, sizes: list[str], methods: list[str]) -> list[str]:
    e, k = config.epochs, config.scratch_epochs
    lines = [f"## Test accuracy (%): after initialisation -> after {e} epoch(s)", "",
             "| size | parameters | " + " | ".join(f"scratch ({e} / {k} ep)" if m == "scratch" else m for m in methods) + " |",
             "| --- | --- |" + " --- |" * len(methods)]
    for size in sizes:
        params = next(s["params"] for (sz, _), s in summary.items() if sz == size)
        cells = []
        for m in methods:
            s = summary.get((size, m))
            if s is None:
                cells.append("-")
            elif s["status"] != "ok":
                cells.append("n/a")
            else:
                cells.append(f"{_acc(s, e)} / {_acc(s, k)}" if m == "scratch" else f"{_acc(s, 0)} -> {_acc(s, e)}")
        lines.append(f"| {size} | {params:,} | " + " | ".join(cells) + " |")
    reasons = sorted({s["reason"] for s in summary.values() if s["status"] != "ok"})
    return lines + (["", "n/a: " + "; ".join(reasons) + "."] if reasons else [])


def _scratch_section(config: BenchConfig, sizes: list[str], methods: list[str], compute: dict, n: int,
                     title: str = "## Scratch compute to reach each method's accuracy", epochs: int | None = None) -> list[str]:
    """`compute` is `compute_table` after `epochs` (default: `config.epochs`)."""
    epochs = epochs or config.epochs
    shown = [m for m in methods if m != "scratch"]
    lines = [title, "", (
        f"Per size and method: the training compute scratch needs to reach the method's mean accuracy after its budget, and in "
        f"brackets the ratio to the method's own compute (initialisation included): the saving. Scratch's curve is the upper "
        f"envelope of {_scratch_curve(config)} and random init's {epochs}-epoch run "
        f"(annealed over its own short schedule), linear between points. \"> k ep\": scratch never reached it. Not counted: "
        f"the ancestry's forward passes (its logits for the fits, kd-per-size and the distillations)."), "",
        "| size | " + " | ".join(shown) + " |", "| --- |" + " --- |" * len(shown)]
    for size in sizes:
        cells = []
        for m in shown:
            c = compute["sizes"][size].get(m)
            if c is None:
                cells.append("n/a")
            elif c["scratch_max"] is None:
                cells.append("-")
            elif c["scratch_equivalent"] is None:
                cells.append(f"> {c['scratch_max'] / n:.0f} ep")
            else:
                cells.append(f"{c['scratch_equivalent'] / n:.2f} ep ({c['scratch_equivalent'] / c['compute']:.1f}x)" if c["compute"]
                             else f"{c['scratch_equivalent'] / n:.2f} ep")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines


def _budgets_section(config: BenchConfig, summary: dict, sizes: list[str], methods: list[str]) -> list[str]:
    """Test accuracy after each budget, each its own run annealed to its end."""
    budgets, scratch = sorted(config.budgets), sorted(config.scratch_budgets or range(1, config.scratch_epochs + 1))
    lines = [f"## Test accuracy (%) after each budget: {' / '.join(map(str, budgets))} epoch(s) (scratch: {' / '.join(map(str, scratch))})",
             "", "Each budget is its own run from the same initialisation, its schedule annealed to its end.", "",
             "| size | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    return lines + _method_rows(summary, sizes, methods, lambda m, s: " / ".join(
        _acc(s, b) for b in (scratch if m == "scratch" else budgets) if b in s["epochs"]))


def _method_rows(summary: dict, sizes: list[str], methods: list[str], cell: Callable[[str, dict], str]) -> list[str]:
    """Table rows, one per size, a column per method: `cell(method, its summary)` where it ran,
    "n/a" where it does not apply, "-" where it did not run."""
    def text(size: str, m: str) -> str:
        s = summary.get((size, m))
        if s is None:
            return "-"
        return cell(m, s) if s["status"] == "ok" else "n/a"

    return [f"| {size} | " + " | ".join(text(size, m) for m in methods) + " |" for size in sizes]


def _scratch_curve(config: BenchConfig) -> str:
    if config.scratch_budgets:
        return f"its runs of {' / '.join(map(str, sorted(config.scratch_budgets)))} epochs, each annealed to its end,"
    return f"its {config.scratch_epochs}-epoch run, scored after each epoch,"


def _flop_savings_section(config: BenchConfig, sizes: list[str], methods: list[str], per_budget: dict) -> list[str]:
    """Per size and method, after each budget: scratch's FLOPs to reach the method's accuracy over
    the method's own FLOPs (initialisation, the teacher's forward passes and training), scratch's
    curve read linearly and, in brackets, in log-compute."""
    shown = [m for m in methods if m != "scratch"]
    if not any("flops" in c for table in per_budget.values() for entry in table["sizes"].values() for c in entry.values()):
        return []  # records older than the FLOP count

    def ratio(c: dict, tail: str) -> str:
        reach = c[f"scratch_equivalent_flops{tail}"]
        return f"> {c['scratch_max_flops'] / c['flops']:.1f}x" if reach is None else f"{reach / c['flops']:.2f}x"

    def saving(c: dict | None) -> str:
        if c is None or "flops" not in c:
            return "n/a"
        if c["scratch_max_flops"] is None or not c["flops"]:
            return "-"
        linear, log = ratio(c, ""), ratio(c, "_log")
        return linear if linear == log else f"{linear} ({log})"

    budgets = sorted(per_budget)
    lines = [f"## FLOP savings after {' / '.join(map(str, budgets))} epoch(s)", "", (
        "Per size and method: scratch's training FLOPs to reach the method's mean accuracy after the budget, over the method's "
        "own FLOPs (its initialisation, the ancestry's forward passes where it uses them, and its training; `waveinit.flops`). "
        "Above 1x the method saves compute; \"> kx\": scratch never reached it, a lower bound. Scratch's curve is read by "
        "straight lines between its budgets, and in brackets by straight lines in log-compute, which follow a curve that "
        "bends more closely and give the smaller saving. The family's files are charged in the totals below, not to a "
        "size. Plot: `savings_vs_params.png` (both readings).")]
    for b in budgets:
        lines += ["", f"After {b} epoch(s):", "", "| size | " + " | ".join(shown) + " |", "| --- |" + " --- |" * len(shown)]
        lines += [f"| {size} | " + " | ".join(saving(per_budget[b]["sizes"][size].get(m)) for m in shown) + " |" for size in sizes]
    return lines


def _savings_section(config: BenchConfig, compute: dict, n: int, family: dict) -> list[str]:
    """The n-times claim for every method: its fits and epochs at every size it applies to, and
    the family's files it needs charged once, against scratch to the same accuracies."""
    totals = compute["totals"]
    flops = all("scratch_flops" in t for t in totals.values())
    suffix, unit = ("_flops", "FLOPs") if flops else ("", "image passes")
    amount = (lambda x: f"{x:.3g}") if flops else (lambda x: _passes(x, n))  # noqa: E731

    def times(t: dict, key: str) -> str:
        if key not in t:
            return "-"
        bound = ">= " if t["scratch_lower_bound"] else ""
        return f"{bound}{t[key]:.2f}x"

    charges = ", ".join(f"{m}: {name}'s distillation" for m, name in FAMILY_CHARGE.items() if m in totals)
    ancestry = family.get("ancestry", {}).get("flops" if flops else "compute")
    lines = ["## Against pre-training every size (the n-times claim), per method", "", (
        f"Scratch's {unit} to reach each size's mean accuracy after {config.epochs} epoch(s) of the method, summed over the sizes "
        f"the method applies to (its longest run where it never gets there: \">=\", a lower bound), over the method's own "
        f"{unit} (its initialisations and epochs) plus the family's file it spawns from, charged once ({charges or 'none'}). "
        f"\"with ancestry\" charges the ancestry too"
        + (f" ({amount(ancestry)})" if ancestry is not None else " (of unknown cost here: left out)")
        + " to every method that reads it (all but random and mimetic). Linear: scratch's curve read by straight lines; log: "
        "in log-compute."), "",
        "| method | sizes | scratch, linear / log | the method's own | charged once | saving, linear / log | with ancestry, linear / log |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, t in totals.items():
        charged = t.get(f"charged{suffix}")
        lines.append(f"| {m} | {t['sizes']} | {amount(t[f'scratch{suffix}'])} / {amount(t[f'scratch{suffix}_log'])} | "
                     f"{amount(t[f'method{suffix}'])} | {'-' if charged is None else amount(charged)} | "
                     f"{times(t, f'saving{suffix}')} / {times(t, f'saving{suffix}_log')} | "
                     f"{times(t, f'saving{suffix}_with_ancestry')} / {times(t, f'saving{suffix}_with_ancestry_log')} |")
    if flops and "wave" in totals and "saving" in totals["wave"]:
        t = totals["wave"]
        lines += ["", f"In image passes, which weigh a pass of every size alike and leave the teacher's forward passes out: WAVE "
                      f"saves {times(t, 'saving')} (log: {times(t, 'saving_log')}) with its learngene charged."]
    return lines


def _fit_section(config: BenchConfig, fits: list[dict]) -> list[str]:
    if not fits:
        return []
    steps = [0, *config.fit_study_steps]
    lines = ["## The scaler fit: cost and accuracy on their own", "", (
        f"wave's accuracy right after its fit (0 steps: the data-free rule, wave-nofit) on {_validation(config)}, seed 0; "
        f"the fit draws {config.fit_samples} training images, batch {config.fit_batch}, "
        f"lr {config.fit_lr:g}, {_fit_loss()}. Its cost: about the step count x {config.fit_batch} image passes."), "",
        "| size | fitted parameters | " + " | ".join(f"{k} steps" for k in steps) + " |", "| --- | --- |" + " --- |" * len(steps)]
    by = {(f["size"], f["steps"]): f for f in fits}
    for size in dict.fromkeys(f["size"] for f in fits):
        fitted = max(by[(size, k)]["fitted_params"] for k in steps if (size, k) in by)
        lines.append(f"| {size} | {fitted:,} | " + " | ".join(_pct(by[(size, k)]["val_accuracy"]) if (size, k) in by else "-" for k in steps) + " |")
    return lines


def _fit_loss() -> str:
    """The scaler fit's loss on the family's data, as `wave spawn --teacher` fits (SpawnConfig's defaults)."""
    spawn = SpawnConfig()
    if spawn.kd_weight >= 1:
        return f"KL to the ancestry alone at temperature {spawn.temperature:g}"
    return f"KL to the ancestry (weight {spawn.kd_weight:g}, temperature {spawn.temperature:g}) + cross-entropy"


def _validation(config: BenchConfig) -> str:
    if config.family_validation is None:
        return f"a held-out {100 * config.validation_fraction:.0f}% of the descendants' training set (the family has seen it)"
    return "the validation split that no model of the family has seen"


def _rates_section(config: BenchConfig, methods: list[str], rates: dict, sweep_size: str, sweeps: list[dict]) -> list[str]:
    if len(config.lrs) == 1:
        return ["## Learning rates", "", f"One rate for all methods: {config.lrs[0]:g} (no sweep)."]
    lines = ["## Learning rates", "", (
        f"Swept on size {sweep_size}, seed 0, {config.sweep_epochs} epoch(s), trained on "
        + (f"{100 * (1 - config.validation_fraction):.0f}% of the descendants' training set" if config.family_validation is None
           else "the descendants' training set") + f" and scored on {_validation(config)} (validation accuracy %). "
        f"scratch uses random's rate (the same initialisation); downstream cells use each method's rate from here."), "",
        "| method | " + " | ".join(f"lr {lr:g}" for lr in (*config.lrs, *config.lower_lrs)) + " | chosen |",
        "| --- |" + " --- |" * (len(config.lrs) + len(config.lower_lrs) + 1)]
    by = {(r["method"], r["lr"]): r for r in sweeps if r["size"] == sweep_size}
    for m in methods:
        if m != "scratch" and any((m, lr) in by for lr in (*config.lrs, *config.lower_lrs)):
            cells = [_pct(by[(m, lr)]["val_accuracy"]) if (m, lr) in by else "-" for lr in (*config.lrs, *config.lower_lrs)]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {rates[m]:g} |")
        elif m != "scratch":
            lines.append(f"| {m} | " + " | ".join("n/a" for _ in (*config.lrs, *config.lower_lrs)) + f" | {rates[m]:g} (random's: n/a at {sweep_size}) |")
    return lines


def _size_rates_section(methods: list[str], size_rates: dict) -> list[str]:
    """The rate each method trained with at each size, from the sweep at every size."""
    lines = ["### The rate of each method at each size", "", (
        "The sweep above, run at every size the same way: each method trains at the rate chosen for it at its own size "
        "(scratch at random's; a method that does not apply at a size never trains there)."), "",
        "| size | " + " | ".join(m for m in methods if m != "scratch") + " |", "| --- |" + " --- |" * sum(m != "scratch" for m in methods)]
    for size, rates in size_rates.items():
        lines.append(f"| {size} | " + " | ".join(f"{rates[m]:g}" for m in methods if m != "scratch") + " |")
    return lines


def _downstream_section(config: BenchConfig, far: dict) -> list[str]:
    budgets = sorted(config.budgets or (config.epochs,))
    scratch_budgets = sorted(config.scratch_budgets or range(1, config.scratch_epochs + 1))
    lines = []
    for name, d in far.items():
        summary, sizes = d["summary"], d["sizes"]
        methods = [m for m in METHODS if any(k[1] == m for k in summary)]
        n = next(s["train_images"] for s in summary.values() if s["status"] == "ok")
        lines += [f"## Downstream: {name}", "", (
            f"The family's learngene and every peer that can initialise a model for other data: the classifier and the "
            f"parameters whose shape follows the data (the patch embedding's weights when the patch's pixels differ) start "
            f"afresh, the rest is inherited (position embeddings of the same 4x4 token grid included). {n:,} training images, "
            + (f"{' / '.join(map(str, budgets))} epoch(s), each budget its own run (scratch: {' / '.join(map(str, scratch_budgets))}); "
               if config.budgets else f"{config.epochs} epoch(s) (scratch: {config.scratch_epochs}, scored after each); ")
            + f"test accuracy %, after initialisation -> after the budget. wave's and nearest-kron's "
            f"initialisation trains on this data ({config.fit_steps} fit steps of {config.fit_batch} images)"
            + (f"; every other method but scratch first trains its fresh parameters alone for as many steps at the same rate "
               f"({config.fit_lr:g}), the rest frozen: the same head warm-up for all, counted as compute" if config.head_warmup else "")
            + ". The scratch tables below compare every method at its compute."), "",
            "| size | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
        lines += _method_rows(summary, sizes, methods, lambda m, s: " / ".join(_acc(s, b) for b in scratch_budgets if b in s["epochs"])
                              if m == "scratch" else f"{_acc(s, 0)} -> " + " / ".join(_acc(s, b) for b in budgets if b in s["epochs"]))
        for b, at in d["per_budget"].items():
            gains = ", ".join(f"{m} {100 * g['mean_gain']:+.1f} ({g['sizes']} sizes)" for m, g in at["gains"].items())
            lines += ["", f"Mean gain over random after {b} epoch(s) (points, mean over the sizes each applies to): {gains}."]
            if d["shared_sizes"]:
                shared = ", ".join(f"{m} {100 * g['mean_gain_shared']:+.1f}" for m, g in at["gains"].items() if g["mean_gain_shared"] is not None)
                lines.append(f"Over the sizes every method applies to ({', '.join(d['shared_sizes'])}): {shared}.")
        if any(m == "scratch" for m in methods):
            for b, at in d["per_budget"].items():
                lines += [""] + _scratch_section(config, sizes, methods, at["compute"], n,
                                                 f"### {name}: scratch compute to reach each method's accuracy after {b} epoch(s)", b)
        lines.append("")
    return lines[:-1] if lines else []


def _time_section(seconds: dict) -> list[str]:
    def hours(x: float) -> str:
        return f"{x / 3600:.2f} h"

    family = ", ".join(f"{name} {hours(f['seconds'])}" + (" (given)" if f["given"] else " (made by this run)")
                       for name, f in seconds["family"].items() if f["seconds"])
    made = sum(f["seconds"] or 0.0 for name, f in seconds["family"].items() if not f["given"] and name != "ancestry")
    cells = ", ".join(f"{m} {hours(s)}" for m, s in seconds["cells"].items())
    total = made + sum(seconds["cells"].values()) + sum(seconds["downstream"].values()) + seconds["fit_study"]
    return ["## Time", "", (
        f"Seconds as the records count them, on the machine each stage ran on: what trains "
        f"(initialisations, fits, training runs), not the scoring on the test set, nor the learning-rate sweeps, which keep no time. "
        f"The family's files, as their own records say (the ancestry's apart, like its compute): {family or 'none recorded'}. "
        f"This run: cells {hours(sum(seconds['cells'].values()))} ({cells}); the fit study {hours(seconds['fit_study'])}"
        + (f"; downstream {hours(sum(seconds['downstream'].values()))}" if seconds["downstream"] else "")
        + f"; in all, with what this run made of the family but the ancestry, {hours(total)}.")]


def _storage_section(storage: dict, with_capacity: bool) -> list[str]:
    lines = ["## Storage (float32)", "", "| size | parameters | dense model | its scalers |", "| --- | --- | --- | --- |"]
    for size, s in storage["sizes"].items():
        lines.append(f"| {size} | {s['params']:,} | {_bytes(s['dense_bytes'])} | {_bytes(s['scaler_bytes'])} |")
    return lines + ["", (
        f"The learngene file holds {_bytes(storage['learngene_bytes'])}. The {len(storage['sizes'])} dense models take "
        f"{_bytes(storage['dense_total_bytes'])}; the learngene plus every size's scalers "
        f"{_bytes(storage['learngene_and_scalers_bytes'])} ({storage['ratio']:.1f}x less)."), "",
        "Plots: `accuracy_vs_compute.png`, `accuracy_vs_size.png`, `accuracy_vs_epoch.png`, `savings_vs_params.png`, "
        + ("`capacity.png`, " if with_capacity else "") + "`storage.png`; every number: `results.csv`, `results.json`."]
