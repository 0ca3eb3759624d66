"""`wave bench`: WAVE against the other initialisations (`methods.py`), for a grid of model
sizes, on the same data and the same training budget, and on downstream data.

The protocol (every setting in `config.py`, fixed before the run):

1. the family (`family.py`), on the whole training set: the ancestry (its cost reported apart),
   the capacity study and the chosen learngene, TLEG's learngene, the nearest-Kronecker templates;
2. the scaler-fit study: wave's accuracy after 0 (wave-nofit) to 400 fit steps, per size, on a
   validation split (its cost and accuracy on their own);
3. a learning-rate sweep per method (`lrs`, `sweep_epochs` epochs, one representative size,
   seed 0) scored on a validation split of the descendants' training set; scratch shares
   random's rate (the same initialisation);
4. the cells (size, method, seed): initialise, score on the test set (epoch 0), train all
   parameters `epochs` epochs (scratch: `scratch_epochs`), AdamW with warm-up and cosine, scored
   after every epoch;
5. downstream: each dataset of `downstream`, the same sizes and budget, the methods that can
   initialise a model for other data, at their swept rates.

Compute is counted in image passes (forward + backward), the scaler fit and kd-per-size's first
part in full; the ancestry and the distillations once for the whole family.

Resumable: finished records are kept one JSON object a line (`cells.jsonl`, `sweep.jsonl`,
`fit.jsonl`, `downstream.jsonl`), each addition an atomic rewrite; a rerun with the same settings
skips them and only adds what is missing (more seeds, sizes, methods or downstream datasets
are welcome; other training settings are refused). The reports are written from those records
by `report.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..api import plan_spawn, run_spawn
from ..backends.torch import ViT, load_state_dict
from ..configs import EVAL_BATCH_SIZE, DistillConfig, TrainConfig
from ..errors import WaveError
from ..flops import forward_flops, train_flops
from ..io.datasets import Dataset, load_dataset, split_validation, subset_of
from ..io.storage import atomic_write_bytes
from ..spec import ViTSpec, check_width, resized
from ..tasks import spec_for
from ..training.distributed import resolve_device
from ..training.engine import train
from ..training.evaluation import evaluate
from ..training.objectives import smoothed
from .config import DOWNSTREAM_METHODS, METHODS, RECIPES, WAVE_DEPTH_RULES, BenchConfig
from .family import Family, make_family, planned_family
from .files import write_reports
from .methods import InitCache, fit_config, fresh_keys, initialise, kd_loss_for, not_applicable, warm_up_head
from .records import RecordFile, images_passed
from .report import BYTES_PER_PARAM

# ----------------------------------------------------------------------------- sizes

def bench_sizes(config: BenchConfig, ancestry: ViTSpec, side: int) -> list[ViTSpec]:
    """The grid (depths x widths) and the extra sizes, in that order, each once. Every model
    keeps the ancestry's head width, so weight selection keeps whole heads and templates
    align with heads."""
    pairs = [(d, w) for d in config.depths for w in config.widths] + [tuple(s) for s in config.extra_sizes]
    sizes = []
    for depth, width in dict.fromkeys(pairs):
        check_width(width, side)
        if width % ancestry.head_dim:
            raise WaveError(f"width {width} is not a multiple of the ancestry's head width {ancestry.head_dim}: "
                            f"choose widths that are multiples of {ancestry.head_dim}")
        sizes.append(resized(ancestry, depth, width))
    return sizes


def size_name(spec: ViTSpec) -> str:
    return f"{spec.depth}x{spec.width}"


def representative_size(sizes: list[ViTSpec], family: Family, methods: tuple[str, ...]) -> ViTSpec:
    """The size the learning rates are swept on: the median (by parameters, the larger of two)
    of the sizes every method applies to, else of those weight selection applies to, else of all."""
    every = [s for s in sizes if all(not_applicable(m, s, family) is None for m in methods)]
    selectable = [s for s in sizes if not_applicable("weight-selection", s, family) is None]
    ordered = sorted(every or selectable or sizes, key=lambda s: (s.num_params(), s.depth))
    return ordered[len(ordered) // 2]


def downstream_size(spec: ViTSpec, data: Dataset, patch: int | None) -> ViTSpec:
    """The bench size `spec` for other data: its depth, width and heads, the data's images and classes."""
    return spec_for(data, spec.depth, spec.width, spec.heads, patch)


# ----------------------------------------------------------------------------- how descendants train

def training_config(config: BenchConfig, same_data: bool, **fields) -> TrainConfig:
    """The descendants' training after their initialisation (AdamW, warm-up and cosine): on the
    family's data with `config.recipe`'s regularisation (shifts and flips only where
    `ancestry_augment` allows them), downstream plain."""
    recipe = dict(RECIPES[config.recipe]) if same_data else {}
    if "augment" in recipe:
        recipe["augment"] = config.ancestry_augment
    return TrainConfig(batch_size=config.batch_size, **recipe, **fields)


def training_loss(method: str, family: Family, images, train_config: TrainConfig, device: str):
    """kd-per-size trains on the ancestry's logits, every other method on the labels."""
    return kd_loss_for(family, images, device, train_config) if method == "kd-per-size" else smoothed(train_config.smoothing)


# ----------------------------------------------------------------------------- the learning-rate sweep

def _sweep_size(sweeps: RecordFile, sizes: list[ViTSpec], family: Family, methods: tuple[str, ...], every_size: bool) -> ViTSpec:
    """The representative size, or the one an earlier run of this bench swept on: the rates
    of finished cells stay the rates of the cells still to run. Where every size is swept, the
    representative size only heads the report, whatever was swept first."""
    earlier = {r["size"] for r in sweeps.records.values()}
    if not earlier or every_size:
        return representative_size(sizes, family, methods)
    depth, width = map(int, earlier.pop().split("x"))
    return resized(family.ancestry.spec, depth, width)


def swept_methods(methods: tuple[str, ...]) -> list[str]:
    """The methods the sweep runs: all but scratch, which takes random's rate."""
    swept = [m for m in METHODS if m in methods and m != "scratch"]
    if "scratch" in methods and "random" not in swept:
        swept.insert(0, "random")
    return swept


def validation_split(config: BenchConfig, data: Dataset, held_out: Dataset | None) -> tuple[Dataset, Dataset]:
    """(what the sweeps' and the fit study's initialisations may train on, the same training images
    with the validation images as their test set). With `held_out` (the family's validation split,
    `BenchConfig.family_validation`): the descendants' training set, scored on images no model of
    the family has seen; else a split of the descendants' training set (`validation_fraction`)."""
    if held_out is None:
        return split_validation(data, config.validation_fraction, seed=0)
    return data, dataclasses.replace(held_out, train_images=data.train_images, train_labels=data.train_labels)


def sweep_learning_rates(config: BenchConfig, family: Family, data: Dataset, size: ViTSpec, store: RecordFile,
                         device: str, log: Callable[[str], None], methods: tuple[str, ...], held_out: Dataset | None = None,
                         fallback: dict[str, float] | None = None, cache: InitCache | None = None) -> dict[str, float]:
    """Method -> learning rate: the best validation accuracy (then loss) after `sweep_epochs`
    epochs on the training part of `validation_split`, size `size`, seed 0. A method that does
    not apply at that size takes `fallback`'s rate if given, else random's (the report says so)."""
    if len(config.lrs) == 1:
        return {m: config.lrs[0] for m in methods}
    init_data, val = validation_split(config, data, held_out)  # the initialisations see the training part only
    chosen = {}
    for method in swept_methods(methods):
        if not_applicable(method, size, family):
            continue
        runs = {}  # lr -> its sweep record
        for lr in config.lrs:
            runs[lr] = _sweep_run(method, size, lr, init_data, val, config, family, store, device, log, cache)
        for lower in config.lower_lrs:  # the grid's lowest rate won: one rate lower, while the lowest keeps winning
            if _best_rate(runs) != min(runs):
                break
            runs[lower] = _sweep_run(method, size, lower, init_data, val, config, family, store, device, log, cache)
        chosen[method] = _best_rate(runs)
    random = chosen.get("random", config.lrs[len(config.lrs) // 2])
    for method in methods:  # scratch takes random's rate; a method n/a at this size, the fallback's or random's
        chosen.setdefault(method, fallback[method] if fallback and method != "scratch" and method in fallback else random)
    return chosen


def _best_rate(runs: dict[float, dict]) -> float:
    """The rate of the best validation accuracy, ties broken by the lower validation loss."""
    return max(runs.values(), key=lambda r: (r["val_accuracy"], -r["val_loss"]))["lr"]


def _sweep_run(method: str, size: ViTSpec, lr: float, init_data: Dataset, val: Dataset, config: BenchConfig, family: Family,
               store: RecordFile, device: str, log: Callable[[str], None], cache: InitCache | None) -> dict:
    """The sweep's record of `method` at `size` and `lr`, run unless `store` holds it."""
    key = f"{method}/{size_name(size)}/lr{lr:g}"
    if key not in store:
        model = (cache or initialise)(method, size, 0, family, init_data, config, device, lr=lr).model
        train_config = training_config(config, True, epochs=config.sweep_epochs, lr=lr)
        train(model, val.train_images, val.train_labels, train_config,
              loss_fn=training_loss(method, family, val.train_images, train_config, device), device=device)
        result = evaluate(model, val.test_images, val.test_labels, EVAL_BATCH_SIZE, device)
        store.add({"key": key, "method": method, "size": size_name(size), "lr": lr, "epochs": config.sweep_epochs,
                   "val_accuracy": result["accuracy"], "val_loss": result["loss"], "val_samples": result["samples"]})
        log(f"sweep {method} {size_name(size)} lr {lr:g}: validation accuracy {100 * result['accuracy']:.1f}%")
    return store[key]


# ----------------------------------------------------------------------------- the scaler-fit study

def fit_study(config: BenchConfig, family: Family, data: Dataset, sizes: list[ViTSpec], store: RecordFile, device: str,
              log: Callable[[str], None], held_out: Dataset | None = None) -> list[dict]:
    """wave's validation accuracy (`validation_split`) after 0 (the data-free rule) and each of
    `fit_study_steps` fit steps, every size, seed 0, and the fit's cost: one record per (size, steps)."""
    _, val = validation_split(config, data, held_out)
    gene = family.learngene
    for spec in sizes:
        for steps in (0, *config.fit_study_steps):
            key = f"{size_name(spec)}/fit{steps}"
            if key in store:
                continue
            start = time.perf_counter()
            spawned = run_spawn(plan_spawn(gene, spec.depth, spec.width, spec.heads, data=val, patch=spec.patch_size, fit=steps > 0,
                                           config=fit_config(config, 0, max(steps, 1)), teacher=family.ancestry,
                                           teacher_name=str(family.ancestry_path), fresh_head=False, device=device))
            if steps:
                accuracy, fitted = spawned.provenance["test_accuracy"], spawned.provenance["fitted_params"]
                compute = images_passed(spawned.provenance["fit_samples"], config.fit_batch, steps)
            else:
                model = load_state_dict(ViT(spec), spawned.state_dict)
                accuracy, fitted, compute = evaluate(model, val.test_images, val.test_labels, EVAL_BATCH_SIZE, device)["accuracy"], 0, 0
            store.add({"key": key, "size": size_name(spec), "width": spec.width, "depth": spec.depth, "params": spec.num_params(),
                       "steps": steps, "val_accuracy": accuracy, "fitted_params": fitted, "compute": compute,
                       "seconds": time.perf_counter() - start})
            log(f"fit study {size_name(spec)}: {steps} steps -> validation accuracy {100 * accuracy:.1f}%")
    return [store[f"{size_name(s)}/fit{k}"] for s in sizes for k in (0, *config.fit_study_steps)]


# ----------------------------------------------------------------------------- one cell

def cell_key(spec: ViTSpec, method: str, seed: int, dataset: str | None = None) -> str:
    return (f"{dataset}/" if dataset else "") + f"{size_name(spec)}/{method}/seed{seed}"


def run_cell(method: str, spec: ViTSpec, seed: int, lr: float, family: Family, data: Dataset, config: BenchConfig, device: str,
             same_data: bool = True, cache: InitCache | None = None) -> dict:
    """Initialise (downstream: with the head warm-up, `BenchConfig.head_warmup`), score (epoch 0),
    train and score after every epoch: the cell's record, its compute in image passes and FLOPs
    (`waveinit.flops`: training passes at the model's training cost, the ancestry's forward
    passes at its forward cost, the fit's scoring of its held-out images at the model's)."""
    base = {"key": cell_key(spec, method, seed, None if same_data else data.name), "size": size_name(spec), "depth": spec.depth,
            "width": spec.width, "heads": spec.heads, "params": spec.num_params(), "method": method, "seed": seed, "data": data.name}
    reason = not_applicable(method, spec, family)
    if reason:
        return {**base, "status": "n/a", "reason": reason, "rows": []}
    init = (cache or initialise)(method, spec, seed, family, data, config, device, same_data, lr=lr)
    model = init.model.to(resolve_device(device))
    warmup = 0
    if not same_data and config.head_warmup and method not in ("wave", "nearest-kron", "scratch", *WAVE_DEPTH_RULES):  # their fits train the fresh parts
        start = time.perf_counter()
        warmup = warm_up_head(model, fresh_keys(spec, family.ancestry.spec), data, config, seed, device)
        init.compute, init.seconds = init.compute + warmup, init.seconds + time.perf_counter() - start
    n = len(data.train_labels)
    per_image, teacher_flops = train_flops(spec), forward_flops(family.ancestry.spec)
    init_flops = init.compute * per_image + init.teacher_forward * teacher_flops + init.forward * forward_flops(spec)
    first = evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, device)
    rows = [{"epoch": 0, "accuracy": first["accuracy"], "loss": first["loss"], "train_loss": None,
             "seconds": init.seconds, "compute": init.compute, "flops": init_flops, "images": init.images}]
    epochs = config.scratch_epochs if method == "scratch" else config.epochs
    budgets = config.scratch_budgets if method == "scratch" else config.budgets
    train_config = training_config(config, same_data, epochs=epochs, lr=lr, seed=seed)
    loss = training_loss(method, family, data.train_images, train_config, device)

    def teacher_passes(epoch: int) -> int:
        """kd-per-size's teacher after `epoch` epochs: its logits once over the training set, or on every augmented batch."""
        if method != "kd-per-size":
            return 0
        return n if loss.teacher_cached else epoch * n

    if budgets:  # one run per budget, each annealed to its end, from the same start
        history = []
        for budget in sorted(budgets):
            run = copy.deepcopy(model)
            done = train(run, data.train_images, data.train_labels, dataclasses.replace(train_config, epochs=budget), loss_fn=loss,
                         device=device)
            last = done.history[-1]
            history.append({**last, "epoch": budget, "eval": evaluate(run, data.test_images, data.test_labels, EVAL_BATCH_SIZE, device),
                            "seconds": sum(h["seconds"] for h in done.history)})
    else:  # one run, scored after every epoch
        history = train(model, data.train_images, data.train_labels, train_config, loss_fn=loss, device=device,
                        eval_data=(data.test_images, data.test_labels)).history
    seconds = init.seconds
    for h in history:
        seconds = (init.seconds if budgets else seconds) + h["seconds"]
        rows.append({"epoch": h["epoch"], "accuracy": h["eval"]["accuracy"], "loss": h["eval"]["loss"], "train_loss": h["train_loss"],
                     "seconds": seconds, "compute": init.compute + h["epoch"] * n, "teacher_forward": teacher_passes(h["epoch"]),
                     "flops": init_flops + h["epoch"] * n * per_image + teacher_passes(h["epoch"]) * teacher_flops, "images": n})
    return {**base, "status": "ok", "lr": lr, "init_compute": init.compute, "init_images": init.images, "head_warmup": warmup,
            "init_teacher_forward": init.teacher_forward, "init_forward": init.forward, "init_flops": init_flops, "train_flops_per_image": per_image,
            "train_images": n, "test_images": len(data.test_labels), "rows": rows}


class Cell(NamedTuple):
    key: str
    seed: int
    spec: ViTSpec
    method: str
    data: Dataset  # the family's data, or a downstream dataset


def finished(store: RecordFile, key: str, lr: float) -> bool:
    """Whether `store` holds the cell `key` trained at the rate `lr` (or found not applicable): a
    cell kept from a sweep that chose another rate (a grid since extended) runs again."""
    return key in store and (store[key]["status"] == "n/a" or store[key].get("lr") == lr)


def _run_cells(todo: list[Cell], store: RecordFile, run: Callable[[Cell], dict], log: Callable[[str], None],
               rate: Callable[[Cell], float]) -> int:
    """Run every cell of `todo` not `finished` in `store`; how many ran."""
    ran = 0
    for i, cell in enumerate(todo):
        key = cell.key
        if finished(store, key, rate(cell)):
            continue
        start = time.perf_counter()
        record = run(cell)
        store.add(record)
        ran += 1
        if record["status"] == "n/a":
            log(f"[{i + 1}/{len(todo)}] {key}: not applicable")
        else:
            rows = record["rows"]
            log(f"[{i + 1}/{len(todo)}] {key}: {100 * rows[0]['accuracy']:.1f}% -> {100 * rows[-1]['accuracy']:.1f}% "
                f"after {rows[-1]['epoch']} epochs ({time.perf_counter() - start:.1f} s)")
    return ran


# ----------------------------------------------------------------------------- the whole bench

@dataclass
class BenchResult:
    out: Path
    records: list[dict]  # every cell's record, finished now or before
    downstream: list[dict]  # every downstream cell's record
    ran: int  # cells run by this call (downstream included)
    skipped: int  # cells found finished
    learning_rates: dict[str, float]
    files: dict[str, Path]  # report name -> path


def bench_data(config: BenchConfig) -> tuple[Dataset, Dataset, Dataset | None]:
    """(the family's training data, the descendants' (a `subset` of it), the validation split or
    None): with `family_validation`, its images are held out of both (`validation_split`)."""
    full = load_dataset(config.data, data_dir=config.data_dir, seed=0)
    held_out = None
    if config.family_validation is not None:
        train_part, held_out = split_validation(full, config.family_validation, seed=0)
        full = dataclasses.replace(train_part, name=full.name)
    return full, full if config.subset is None else subset_of(full, config.subset, seed=0), held_out


def run_bench(config: BenchConfig, out: str | Path, *, ancestry: str | Path | None = None, learngene: str | Path | None = None,
              device: str = "auto", log: Callable[[str], None] = print) -> BenchResult:
    """Run every missing part of the bench into `out` and write the reports (module docstring)."""
    config.check()
    out = Path(out)
    ancestry, learngene = (Path(p) if p is not None else None for p in (ancestry, learngene))
    full, data, held_out = bench_data(config)
    downstream = [load_dataset(name, subset=config.downstream_subset, seed=0) for name in config.downstream]  # bad names fail now
    header = _settings_header(config, ancestry, learngene)
    planned = bench_sizes(config, *planned_family(config, full, out, ancestry, learngene))  # bad sizes fail now, not after an hour
    for ds in downstream:
        for spec in planned:
            downstream_size(spec, ds, None)  # and downstream images a patch cannot tile
    _claim(out, header)
    family_bytes = sum(s.num_params() for s in planned) * BYTES_PER_PARAM
    family = make_family(config, full, out, ancestry, learngene, family_bytes, "tleg" in config.methods, device, log, held_out)
    sizes = bench_sizes(config, family.ancestry.spec, family.learngene.side)
    methods = tuple(m for m in config.methods if m != "tleg" or family.tleg is not None)

    fits = fit_study(config, family, data, sizes, RecordFile(out / "fit.jsonl"), device, log, held_out) if "wave" in methods else []
    sweeps = RecordFile(out / "sweep.jsonl")
    size = _sweep_size(sweeps, sizes, family, methods, config.sweep_every_size)
    cache = InitCache()  # one scaler fit per (method, size, seed) for the sweeps and the cells
    rates = sweep_learning_rates(config, family, data, size, sweeps, device, log, methods, held_out, cache=cache)
    log("learning rates: " + ", ".join(f"{m} {lr:g}" for m, lr in rates.items()) + (f" (swept on {size_name(size)})" if len(config.lrs) > 1 else ""))
    size_rates = {size_name(s): rates for s in sizes}  # size -> method -> rate
    if config.sweep_every_size:
        size_rates = {size_name(s): sweep_learning_rates(config, family, data, s, sweeps, device, log, methods, held_out, fallback=rates,
                                                         cache=cache)
                      for s in sizes}
    rate = lambda c: size_rates[size_name(c.spec)][c.method]  # noqa: E731  (a downstream size is named as its family size)

    cells = RecordFile(out / "cells.jsonl")
    todo = [Cell(cell_key(spec, m, seed), seed, spec, m, data) for seed in range(config.seeds) for spec in sizes for m in methods]
    log(f"{len(todo)} cells: {len(sizes)} sizes ({', '.join(map(size_name, sizes))}) x {len(methods)} methods x {config.seeds} seeds, "
        f"{config.epochs} epoch(s) each (scratch {config.scratch_epochs}) on {len(data.train_labels):,} {data.name} images")
    skipped = sum(finished(cells, c.key, rate(c)) for c in todo)
    ran = _run_cells(todo, cells, lambda c: run_cell(c.method, c.spec, c.seed, rate(c), family, c.data, config, device, cache=cache), log,
                     rate)

    far = RecordFile(out / "downstream.jsonl")
    far_todo = []
    for ds in downstream:
        targets = [downstream_size(spec, ds, None) for spec in sizes]
        far_todo += [Cell(cell_key(target, m, seed, ds.name), seed, target, m, ds)
                     for seed in range(config.seeds) for target in targets for m in DOWNSTREAM_METHODS if m in methods]
    if far_todo:
        log(f"downstream: {len(far_todo)} cells on {', '.join(ds.name for ds in downstream)}")
    skipped += sum(finished(far, c.key, rate(c)) for c in far_todo)
    far_config = config.for_downstream()
    ran += _run_cells(far_todo, far, lambda c: run_cell(c.method, c.spec, c.seed, rate(c), family, c.data, far_config, device,
                                                        same_data=False), log, rate)

    records = [cells[c.key] for c in todo]
    far_records = [far[c.key] for c in far_todo]
    files = write_reports(out, config, family.record, records, rates, size_name(size), list(sweeps.records.values()), fits, far_records,
                          size_rates if config.sweep_every_size else None)
    return BenchResult(out, records, far_records, ran, skipped, rates, files)


def _settings_header(config: BenchConfig, ancestry: Path | None, learngene: Path | None) -> dict:
    for given, what in ((ancestry, "ancestry"), (learngene, "learngene")):
        if given is not None and not given.exists():
            raise WaveError(f"{given}: no such file: check the --{what} path, or leave it out to have the bench make one")
    return {"settings": config.fingerprint(), "defaults": _defaults(config),
            "ancestry": {"given": str(ancestry), "digest": _digest(ancestry)} if ancestry else "made by the bench",
            "learngene": {"given": str(learngene), "digest": _digest(learngene)} if learngene else "made by the bench"}


# Library defaults added after benches recorded theirs, and the value that is the behaviour before
# them: a bench resumed from an older bench.json compares them as that value.
LATER_DEFAULTS = {"fit": {"fit_patience": 0}}


def _defaults(config: BenchConfig) -> dict:
    """The library defaults a cell depends on beyond `BenchConfig`: the scaler fit (the spawn
    rules, its loss and what it keeps), the distillation loss (kd-per-size, TLEG) and the
    training recipe. A run resumed across sessions must not mix cells made under other defaults."""
    fit = dataclasses.asdict(fit_config(config, 0))
    fit.pop("seed")
    train_config = dataclasses.asdict(training_config(config, True, epochs=1, lr=1e-3))
    for key in ("epochs", "lr", "seed"):
        train_config.pop(key)
    return json.loads(json.dumps({"fit": fit, "distill": dataclasses.asdict(DistillConfig()), "train": train_config}))


def _digest(path: Path) -> str:
    """A fingerprint of a file's bytes, or of every file in a folder (a Hugging Face model)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _claim(out: Path, header: dict) -> None:
    """Write `out/bench.json`, refusing a folder that holds a bench of other settings (other
    data, budget, library defaults, ancestry ...): its finished cells would not be comparable.
    A folder written before the defaults were recorded is checked on the rest."""
    path = out / "bench.json"
    if path.exists():
        saved = json.loads(path.read_text())
        for key in ("settings", "defaults", "ancestry", "learngene"):
            old, new = saved.get(key), header[key]
            if key == "defaults" and old is None:
                continue
            if key == "defaults":  # a default added later reads, in an older record, as the behaviour before it
                old = {part: {**LATER_DEFAULTS.get(part, {}), **values} for part, values in old.items()}
            if key in ("settings", "defaults"):
                diff = _first_difference(old, new)
                if diff:
                    what = "settings" if key == "settings" else "library defaults"
                    raise WaveError(f"{out} holds a bench made with other {what} ({diff}): "
                                    f"use another --out, or the same {what} to resume")
            elif old != new:
                raise WaveError(f"{out} holds a bench with another {key} ({_source(old)} there, {_source(new)} now): "
                                f"use another --out, or the same --{key} to resume")
    atomic_write_bytes(path, (json.dumps(header, indent=1, sort_keys=True) + "\n").encode())


def _first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    """'key: old there, new now' for the first key (nested keys joined by dots) whose values differ."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _first_difference(a, b, f"{prefix}{key}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{key}: {a} there, {b} now"
    return None


def _source(entry) -> str:
    return entry["given"] if isinstance(entry, dict) else entry
