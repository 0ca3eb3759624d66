"""`results.md` of `wave bench`: its sections, each a list of Markdown lines made from the
report's tables (`report.py`)."""

from __future__ import annotations

from collections.abc import Callable

from ..configs import SpawnConfig
from .config import METHODS, RECIPES, BenchConfig
from .plots import short_count
from .report import FAMILY_CHARGE


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
