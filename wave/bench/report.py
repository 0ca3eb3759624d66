"""The reports of `wave bench`, made from its records alone: `results.csv` and `results.json`
(one row per size, method, seed and epoch), `results.md` (tables) and three PNG plots.

Compute is counted in image passes through forward + backward (the unit of the issue; a pass
of a bigger model costs more, which these numbers do not weigh), and also shown in epochs of
the training set (passes / training images). Storage is float32 bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..io.storage import atomic_write_bytes
from ..spec import ViTSpec, scaler_shapes
from .config import METHODS, BenchConfig
from .plots import plot_accuracy_vs_epoch, plot_accuracy_vs_size, plot_storage, short_count

CSV_COLUMNS = ("size", "depth", "width", "heads", "params", "method", "seed", "status", "epoch", "accuracy", "loss", "train_loss",
               "seconds", "lr", "init_compute", "compute", "compute_epochs", "images", "train_images")
BYTES_PER_PARAM = 4  # float32


# ----------------------------------------------------------------------------- tables of numbers

def flat_rows(records: list[dict]) -> list[dict]:
    """One row per (size, method, seed, epoch); one row with status "n/a" per cell that does not apply."""
    rows = []
    for r in records:
        base = {k: r[k] for k in ("size", "depth", "width", "heads", "params", "method", "seed", "status")}
        if r["status"] != "ok":
            rows.append({**base, "note": r.get("reason", "")})
            continue
        for row in r["rows"]:
            rows.append({**base, "epoch": row["epoch"], "accuracy": row["accuracy"], "loss": row["loss"], "train_loss": row["train_loss"],
                         "seconds": row["seconds"], "lr": r["lr"], "init_compute": r["init_compute"], "compute": row["compute"],
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
        }
    return out


def first_reaching(summary: dict, target: float) -> tuple[int, int] | None:
    """(epoch, compute) at which the mean accuracy first reaches `target`; None if it never does."""
    for epoch, mean, compute in zip(summary["epochs"], summary["mean"], summary["compute"]):
        if mean >= target - 1e-12:
            return epoch, compute
    return None


def compute_table(summary: dict, sizes: list[str], methods: list[str], family: dict, epochs: int) -> dict:
    """Per size: the compute at which each method first reaches random init's final accuracy;
    WAVE's final accuracy, the compute scratch-long needs to reach it, and the saving."""
    family_compute = [family.get(k, {}).get("compute") for k in ("ancestry", "learngene")]
    shared = sum(family_compute) if all(c is not None for c in family_compute) else None
    amortised = shared / len(sizes) if shared is not None and sizes else None
    table = {"family_compute": shared, "amortised_per_size": amortised, "sizes": {}}
    for size in sizes:
        entry = {}
        random = summary.get((size, "random"))
        if random and random["status"] == "ok":
            target = random["mean"][random["epochs"].index(epochs)]
            entry["random_final"] = target
            entry["to_random_final"] = {}
            for m in methods:
                s = summary.get((size, m))
                if s and s["status"] == "ok":
                    hit = first_reaching(s, target)
                    entry["to_random_final"][m] = {"epoch": hit[0], "compute": hit[1]} if hit else None
        wave, scratch = summary.get((size, "wave")), summary.get((size, "scratch-long"))
        if wave and scratch and wave["status"] == scratch["status"] == "ok":
            final = wave["mean"][wave["epochs"].index(epochs)]
            wave_compute = wave["compute"][wave["epochs"].index(epochs)]
            hit = first_reaching(scratch, final)
            with_family = wave_compute + (amortised or 0)
            entry["wave"] = {
                "final": final, "compute": wave_compute, "with_amortised_family": with_family if amortised is not None else None,
                "scratch_compute": hit[1] if hit else None, "scratch_epoch": hit[0] if hit else None,
                "scratch_max_compute": scratch["compute"][-1],
                "saving": (hit[1] / with_family) if hit else None,
                "saving_at_least": None if hit else scratch["compute"][-1] / with_family,
            }
        table["sizes"][size] = entry
    waves = [table["sizes"][s].get("wave") for s in sizes]
    if waves and all(w is not None for w in waves):
        reached = all(w["scratch_compute"] is not None for w in waves)
        scratch_total = sum(w["scratch_compute"] if w["scratch_compute"] is not None else w["scratch_max_compute"] for w in waves)
        wave_total = sum(w["compute"] for w in waves) + (shared or 0)
        table["total"] = {"scratch": scratch_total, "scratch_lower_bound": not reached, "wave": wave_total,
                          "family_included": shared is not None, "saving": scratch_total / wave_total}
    return table


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


# ----------------------------------------------------------------------------- files

def write_reports(out: Path, config: BenchConfig, family: dict, records: list[dict], rates: dict[str, float],
                  sweep_size: str, sweeps: list[dict]) -> dict[str, Path]:
    """Write every report into `out`, each through a temporary file and a rename; name -> path."""
    sizes = list(dict.fromkeys(r["size"] for r in records))
    methods = [m for m in METHODS if m in config.methods]
    summary = summarise(records)
    compute = compute_table(summary, sizes, methods, family, config.epochs)
    storage = storage_table(records, family)
    rows = flat_rows(records)

    files = {name: out / name for name in ("results.csv", "results.json", "results.md", "accuracy_vs_size.png",
                                           "accuracy_vs_epoch.png", "storage.png")}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(files["results.csv"], text.getvalue().encode())

    report = {
        "settings": asdict(config), "family": family, "learning_rates": rates,
        "sweep": {"size": sweep_size, "epochs": config.sweep_epochs, "validation_fraction": config.validation_fraction,
                  "runs": sorted(sweeps, key=lambda r: (r["method"], r["lr"]))},
        "rows": rows,
        "summary": [{"size": size, "method": m, **summary[(size, m)]} for size in sizes for m in methods if (size, m) in summary],
        "compute": compute, "storage": storage,
    }
    atomic_write_bytes(files["results.json"], (json.dumps(report, indent=1) + "\n").encode())
    markdown = render_markdown(config, family, summary, sizes, methods, rates, sweep_size, sweeps, compute, storage)
    atomic_write_bytes(files["results.md"], markdown.encode())
    plot_accuracy_vs_size(files["accuracy_vs_size.png"], summary, sizes, methods, config)
    plot_accuracy_vs_epoch(files["accuracy_vs_epoch.png"], summary, sizes, methods)
    plot_storage(files["storage.png"], storage)
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


def render_markdown(config: BenchConfig, family: dict, summary: dict, sizes: list[str], methods: list[str], rates: dict,
                    sweep_size: str, sweeps: list[dict], compute: dict, storage: dict) -> str:
    n = next(s["train_images"] for s in summary.values() if s["status"] == "ok")
    sections = [
        _intro(config, n, max(s["seeds"] for s in summary.values())),
        _family_section(family, n),
        _rates_section(config, methods, rates, sweep_size, sweeps),
        _accuracy_section(config, summary, sizes, methods),
        _compute_section(config, summary, sizes, methods, compute, n),
        _savings_section(config, sizes, compute, n) if "total" in compute else [],
        _storage_section(storage),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def _intro(config: BenchConfig, n: int, seeds: int) -> list[str]:
    e, k = config.epochs, config.scratch_factor
    return [f"# wave bench: {config.data}", "", (
        f"{n:,} training images. Every cell trains all parameters for {e} epoch(s) (scratch-long: {k * e}), AdamW with "
        f"warm-up and cosine, batch {config.batch_size}, and is scored on the test set after initialisation (epoch 0) and "
        f"after every epoch. Test accuracy in %, mean ± sample std over {seeds} seed(s) (the seed draws random "
        f"initialisations, the fit's images and the data order; weight selection and wave-nofit do not depend on it "
        f"beyond the data order).")]


def _family_section(family: dict, n: int) -> list[str]:
    a, g, nk = family["ancestry"], family["learngene"], family["nearest_kron"]
    teacher = f" + {short_count(g['teacher_forward'])} teacher forward passes" if g.get("teacher_forward") else ""
    matrices = [nk["relative_error"][r] for r in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")]
    return [
        "## Ancestry and learngene (made once for the whole family)", "",
        "| | how | test accuracy | compute (fwd+bwd image passes) | file |",
        "| --- | --- | --- | --- | --- |",
        (f"| ancestry {a['spec']['depth']}x{a['spec']['width']} ({a['params']:,} parameters) | {a['how']} | {_percent(a['test_accuracy'])} | "
         f"{_passes(a['compute'], n)} | {_bytes(a['bytes']) if a['bytes'] else '-'} |"),
        (f"| learngene: {max(g['templates'].values())} templates of side {g['side']} per role ({g['template_params']:,} template "
         f"parameters) | {g['how']} | {_percent(g['test_accuracy'])} (auxiliary model) | {_passes(g['compute'], n)}{teacher} | {_bytes(g['bytes'])} |"),
        (f"| nearest-Kronecker templates (as many as the learngene's) | {nk['how']}; relative error of the four block matrices "
         f"{min(matrices):.2f}-{max(matrices):.2f} | - | 0 | {_bytes(nk['bytes'])} |"),
    ]


def _percent(x: float | None) -> str:
    return f"{_pct(x)}%" if x is not None else "-"


def _rates_section(config: BenchConfig, methods: list[str], rates: dict, sweep_size: str, sweeps: list[dict]) -> list[str]:
    if len(config.lrs) == 1:
        return ["## Learning rates", "", f"One rate for all methods: {config.lrs[0]:g} (no sweep)."]
    lines = ["## Learning rates", "", (
        f"Swept on size {sweep_size}, seed 0, {config.sweep_epochs} epoch(s), trained on {100 * (1 - config.validation_fraction):.0f}% "
        f"of the training set and scored on the held-out {100 * config.validation_fraction:.0f}% (validation accuracy %). "
        f"scratch-long uses random's rate (the same initialisation)."), "",
        "| method | " + " | ".join(f"lr {lr:g}" for lr in config.lrs) + " | chosen |",
        "| --- |" + " --- |" * (len(config.lrs) + 1)]
    by = {(r["method"], r["lr"]): r for r in sweeps if r["size"] == sweep_size}
    for m in methods:
        if m != "scratch-long" and any((m, lr) in by for lr in config.lrs):
            cells = [_pct(by[(m, lr)]["val_accuracy"]) if (m, lr) in by else "-" for lr in config.lrs]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {rates[m]:g} |")
    return lines


def _accuracy_section(config: BenchConfig, summary: dict, sizes: list[str], methods: list[str]) -> list[str]:
    e, k = config.epochs, config.scratch_factor
    lines = [f"## Test accuracy (%): after initialisation -> after {e} epoch(s)", "",
             "| size | parameters | " + " | ".join(f"scratch-long ({e} -> {k * e} ep)" if m == "scratch-long" else m for m in methods) + " |",
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
                cells.append(f"{_acc(s, e)} -> {_acc(s, k * e)}" if m == "scratch-long" else f"{_acc(s, 0)} -> {_acc(s, e)}")
        lines.append(f"| {size} | {params:,} | " + " | ".join(cells) + " |")
    reasons = sorted({s["reason"] for s in summary.values() if s["status"] != "ok"})
    return lines + (["", "n/a: " + "; ".join(reasons) + "."] if reasons else [])


def _compute_section(config: BenchConfig, summary: dict, sizes: list[str], methods: list[str], compute: dict, n: int) -> list[str]:
    header = ["## Compute to reach random init's final accuracy", "", (
        f"Training compute (forward + backward image passes, initialisation included: the scaler fit counts in full, "
        f"{config.fit_steps} steps x batch {config.batch_size}) at the first epoch whose mean accuracy reaches random "
        f"init's mean after {config.epochs} epoch(s); in epochs of the training set. \"not reached\": not within its epochs."), "",
        "| size | random's final | " + " | ".join(methods) + " |", "| --- | --- |" + " --- |" * len(methods)]
    rows = []
    for size in sizes:
        entry = compute["sizes"][size]
        if "random_final" not in entry:
            continue
        cells = []
        for m in methods:
            s = summary.get((size, m))
            if s is None or s["status"] != "ok":
                cells.append("n/a" if s else "-")
            else:
                hit = entry["to_random_final"].get(m)
                cells.append(_passes(hit["compute"], n) if hit else "not reached")
        rows.append(f"| {size} | {_pct(entry['random_final'])} | " + " | ".join(cells) + " |")
    return header + rows if rows else []  # nothing to compare with without random


def _savings_section(config: BenchConfig, sizes: list[str], compute: dict, n: int) -> list[str]:
    e, k = config.epochs, config.scratch_factor
    amortised = compute["amortised_per_size"]
    family = (f"({_passes(compute['family_compute'], n)} in all) shared by the {len(sizes)} sizes ({_passes(amortised, n)} each)."
              if amortised is not None else "(their compute is unknown: given files without a training record, left out).")
    lines = ["## WAVE against pre-training every size", "", (
        f"Per size: the compute scratch-long (random init, up to {k * e} epochs) needs to reach WAVE's mean accuracy after {e} "
        f"epoch(s), against WAVE's own (scaler fit + {e} epoch(s)) plus the ancestry and the distillation {family}"), "",
        "| size | WAVE's final | scratch-long reaches it at | WAVE | WAVE + share of the family | saving |",
        "| --- | --- | --- | --- | --- | --- |"]
    for size in sizes:
        w = compute["sizes"][size]["wave"]
        reached = _passes(w["scratch_compute"], n) if w["scratch_compute"] is not None else f"not within {_passes(w['scratch_max_compute'], n)}"
        saving = f"{w['saving']:.1f}x" if w["saving"] is not None else f">= {w['saving_at_least']:.1f}x"
        share = _passes(w["with_amortised_family"], n) if w["with_amortised_family"] is not None else "-"
        lines.append(f"| {size} | {_pct(w['final'])} | {reached} | {_passes(w['compute'], n)} | {share} | {saving} |")
    t = compute["total"]
    bound = "at least " if t["scratch_lower_bound"] else ""
    included = " including the ancestry and the distillation" if t["family_included"] else ""
    return lines + ["", (
        f"All {len(sizes)} sizes: pre-training each from scratch to WAVE's accuracy costs {bound}{_passes(t['scratch'], n)}; "
        f"WAVE costs {_passes(t['wave'], n)}{included}: a saving of {bound}{t['saving']:.1f}x. "
        f"(Image passes of different model sizes are counted alike.)")]


def _storage_section(storage: dict) -> list[str]:
    lines = ["## Storage (float32)", "", "| size | parameters | dense model | its scalers |", "| --- | --- | --- | --- |"]
    for size, s in storage["sizes"].items():
        lines.append(f"| {size} | {s['params']:,} | {_bytes(s['dense_bytes'])} | {_bytes(s['scaler_bytes'])} |")
    return lines + ["", (
        f"The learngene file holds {_bytes(storage['learngene_bytes'])}. The {len(storage['sizes'])} dense models take "
        f"{_bytes(storage['dense_total_bytes'])}; the learngene plus every size's scalers "
        f"{_bytes(storage['learngene_and_scalers_bytes'])} ({storage['ratio']:.1f}x less)."), "",
        "Plots: `accuracy_vs_size.png`, `accuracy_vs_epoch.png`, `storage.png`; every number: `results.csv`, `results.json`."]
