"""`wave bench`: WAVE against other initialisations, for a grid of model sizes, on the same data
and the same training budget.

Every cell (size, method, seed) initialises a plain ViT, scores it on the test set (epoch 0),
trains all its parameters for `epochs` epochs (AdamW, warm-up and cosine) and scores it after
every epoch. The methods:

    random            timm's initialisation (truncated normal, std 0.02), drawn from the seed
    weight-selection  Xu et al. 2024: the ancestry's first layers, evenly spaced elements, whole
                      heads (`waveinit.selection`); not applicable to sizes beyond the ancestry
    nearest-kron      templates from the ancestry's weights by `nearest_kron` (no data, no
                      distillation), then spawned exactly like `wave`: only the templates differ
    wave              `waveinit.spawn` from the learngene, scalers fitted (KL to the ancestry + CE)
    wave-nofit        `waveinit.spawn(..., fit=False)`: the data-free rule alone
    scratch-long      random, trained `scratch_factor` times as many epochs

A fair fight: each method's learning rate is the best of a small sweep (`lrs`, `sweep_epochs`
epochs, one representative size, seed 0) scored on a validation split of the training set;
scratch-long shares random's (same initialisation). Compute is counted in image passes
(forward + backward), the scaler fit in full (its steps times its batches); the ancestry and
the distillation are counted once for the whole family.

Resumable: finished cells (and sweep runs) are kept one JSON object a line in `cells.jsonl`
(`sweep.jsonl`), each addition an atomic rewrite; a rerun with the same settings skips them and
only adds what is missing (more seeds, sizes or methods are welcome; other training settings
are refused). The reports (`results.csv`, `results.json`, `results.md`, plots) are written
from those records by `report.py`.
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

from ..api import spawn
from ..backends.torch import ViT, dense_numpy, load_state_dict
from ..configs import EVAL_BATCH_SIZE, TrainConfig
from ..errors import WaveError
from ..io.datasets import Dataset, load_dataset, split_validation
from ..io.storage import atomic_write_bytes
from ..selection import check_applicable, weight_selection
from ..spec import ViTSpec, check_width, resized
from ..tasks import random_vit
from ..training.distributed import resolve_device
from ..training.engine import train
from ..training.evaluation import evaluate
from .config import METHODS, BenchConfig
from .family import Family, make_family, planned_family
from .records import RecordFile, images_passed
from .report import write_reports

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


def representative_size(sizes: list[ViTSpec], ancestry: ViTSpec) -> ViTSpec:
    """The size the learning rates are swept on: the median (by parameters, the larger of two)
    of the sizes every method applies to (none beyond the ancestry), else of all sizes."""
    applicable = [s for s in sizes if selectable(ancestry, s)] or sizes
    ordered = sorted(applicable, key=lambda s: (s.num_params(), s.depth))
    return ordered[len(ordered) // 2]


def selectable(ancestry: ViTSpec, spec: ViTSpec) -> bool:
    try:
        check_applicable(ancestry, spec)
    except WaveError:
        return False
    return True


# ----------------------------------------------------------------------------- one initialisation

@dataclass
class Init:
    model: ViT
    compute: int = 0  # forward + backward image passes spent before training (the scaler fit)
    images: int = 0  # distinct training images the initialisation looked at
    teacher_forward: int = 0  # forward-only passes of the ancestry (its logits for the fit)
    seconds: float = 0.0


def initialise(method: str, spec: ViTSpec, seed: int, family: Family, data: Dataset, config: BenchConfig, device: str) -> Init:
    """A ViT of shape `spec` initialised by `method` (scratch-long: as random). WaveError if the
    method does not apply (weight selection beyond the ancestry)."""
    start = time.perf_counter()
    if method in ("random", "scratch-long"):
        return Init(random_vit(spec, seed), seconds=time.perf_counter() - start)
    if method == "weight-selection":
        state = weight_selection(dense_numpy(family.ancestry.state_dict()), family.ancestry.spec, spec)
        return Init(load_state_dict(ViT(spec), state), seconds=time.perf_counter() - start)
    gene = family.nearest_kron if method == "nearest-kron" else family.learngene
    fit = method != "wave-nofit"
    spawned = spawn(gene, spec.depth, spec.width, spec.heads, data=data, patch=spec.patch_size, fit=fit,
                    fit_steps=config.fit_steps, fit_samples=config.fit_samples, batch_size=config.batch_size, lr=config.fit_lr,
                    teacher=family.ancestry_path, seed=seed, device=device)
    if spawned.spec != spec:
        raise WaveError(f"{method} spawned a {spawned.spec} for the size {spec}: the learngene does not fit the bench's sizes")
    model = load_state_dict(ViT(spec), spawned.state_dict)
    if not fit:
        return Init(model, seconds=time.perf_counter() - start)
    samples = spawned.provenance["fit_samples"]
    return Init(model, compute=images_passed(samples, config.batch_size, spawned.provenance["fit_steps"]), images=samples,
                teacher_forward=samples if spawned.provenance.get("teacher") else 0, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------- the learning-rate sweep

def _sweep_size(sweeps: RecordFile, sizes: list[ViTSpec], ancestry: ViTSpec) -> ViTSpec:
    """The representative size, or the one an earlier run of this bench swept on: the rates
    of finished cells stay the rates of the cells still to run."""
    earlier = {r["size"] for r in sweeps.records.values()}
    if not earlier:
        return representative_size(sizes, ancestry)
    depth, width = map(int, earlier.pop().split("x"))
    return resized(ancestry, depth, width)


def sweep_learning_rates(config: BenchConfig, family: Family, data: Dataset, size: ViTSpec, store: RecordFile,
                         device: str, log: Callable[[str], None]) -> dict[str, float]:
    """Method -> learning rate: the best validation accuracy (then loss) after `sweep_epochs`
    epochs on the training part of a split of the training set, size `size`, seed 0."""
    if len(config.lrs) == 1:
        return {m: config.lrs[0] for m in config.methods}
    train_part, val = split_validation(data, config.validation_fraction, seed=0)
    # The initialisations see the training part only; the name stays the data's, so spawning
    # knows it is the data the learngene was distilled on.
    init_data = dataclasses.replace(train_part, name=data.name)
    swept = [m for m in METHODS if m in config.methods and m != "scratch-long"]
    if "scratch-long" in config.methods and "random" not in swept:
        swept.insert(0, "random")
    chosen = {}
    for method in swept:
        if method == "weight-selection" and not selectable(family.ancestry.spec, size):
            continue  # not applicable anywhere the sweep could run
        keys = {lr: f"{method}/{size_name(size)}/lr{lr:g}" for lr in config.lrs}
        missing = [lr for lr, key in keys.items() if key not in store]
        if missing:
            start = initialise(method, size, 0, family, init_data, config, device)
            for lr in missing:
                model = copy.deepcopy(start.model)
                train(model, val.train_images, val.train_labels, TrainConfig(epochs=config.sweep_epochs, batch_size=config.batch_size, lr=lr),
                      device=device)
                result = evaluate(model, val.test_images, val.test_labels, EVAL_BATCH_SIZE, device)
                store.add({"key": keys[lr], "method": method, "size": size_name(size), "lr": lr, "epochs": config.sweep_epochs,
                           "val_accuracy": result["accuracy"], "val_loss": result["loss"], "val_samples": result["samples"]})
                log(f"sweep {method} {size_name(size)} lr {lr:g}: validation accuracy {100 * result['accuracy']:.1f}%")
        runs = [store[keys[lr]] for lr in config.lrs]
        best = max(runs, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
        chosen[method] = best["lr"]
    if "scratch-long" in config.methods:
        chosen["scratch-long"] = chosen["random"]  # the same initialisation, trained longer
    if "weight-selection" in config.methods and "weight-selection" not in chosen:
        chosen["weight-selection"] = chosen.get("random", config.lrs[0])  # never used: not applicable anywhere
    return chosen


# ----------------------------------------------------------------------------- one cell

def cell_key(spec: ViTSpec, method: str, seed: int) -> str:
    return f"{size_name(spec)}/{method}/seed{seed}"


def run_cell(method: str, spec: ViTSpec, seed: int, lr: float, family: Family, data: Dataset, config: BenchConfig, device: str) -> dict:
    """Initialise, score (epoch 0), train and score after every epoch: the cell's record."""
    base = {"key": cell_key(spec, method, seed), "size": size_name(spec), "depth": spec.depth, "width": spec.width,
            "heads": spec.heads, "params": spec.num_params(), "method": method, "seed": seed}
    if method == "weight-selection":
        try:
            check_applicable(family.ancestry.spec, spec)
        except WaveError as e:
            return {**base, "status": "n/a", "reason": str(e), "rows": []}
    init = initialise(method, spec, seed, family, data, config, device)
    model = init.model.to(resolve_device(device))
    n = len(data.train_labels)
    first = evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, device)
    rows = [{"epoch": 0, "accuracy": first["accuracy"], "loss": first["loss"], "train_loss": None,
             "seconds": init.seconds, "compute": init.compute, "images": init.images}]
    epochs = config.epochs * (config.scratch_factor if method == "scratch-long" else 1)
    result = train(model, data.train_images, data.train_labels, TrainConfig(epochs=epochs, batch_size=config.batch_size, lr=lr, seed=seed),
                   device=device, eval_data=(data.test_images, data.test_labels))
    seconds = init.seconds
    for h in result.history:
        seconds += h["seconds"]
        rows.append({"epoch": h["epoch"], "accuracy": h["eval"]["accuracy"], "loss": h["eval"]["loss"], "train_loss": h["train_loss"],
                     "seconds": seconds, "compute": init.compute + h["epoch"] * n, "images": n})
    return {**base, "status": "ok", "lr": lr, "init_compute": init.compute, "init_images": init.images,
            "init_teacher_forward": init.teacher_forward, "train_images": n, "test_images": len(data.test_labels), "rows": rows}


# ----------------------------------------------------------------------------- the whole bench

@dataclass
class BenchResult:
    out: Path
    records: list[dict]  # every cell's record, finished now or before
    ran: int  # cells run by this call
    skipped: int  # cells found finished
    learning_rates: dict[str, float]
    files: dict[str, Path]  # report name -> path


def run_bench(config: BenchConfig, out: str | Path, *, ancestry: str | Path | None = None, learngene: str | Path | None = None,
              device: str = "auto", log: Callable[[str], None] = print) -> BenchResult:
    """Run every missing cell of the bench into `out` and write the reports (module docstring)."""
    config.check()
    out = Path(out)
    ancestry, learngene = (Path(p) if p is not None else None for p in (ancestry, learngene))
    data = load_dataset(config.data, data_dir=config.data_dir, subset=config.subset, seed=0)
    header = _settings_header(config, ancestry, learngene)
    bench_sizes(config, *planned_family(config, data, out, ancestry, learngene))  # bad sizes fail now, not after an hour
    _claim(out, header)
    family = make_family(config, data, out, ancestry, learngene, device, log)
    sizes = bench_sizes(config, family.ancestry.spec, family.learngene.side)
    sweeps = RecordFile(out / "sweep.jsonl")
    size = _sweep_size(sweeps, sizes, family.ancestry.spec)
    rates = sweep_learning_rates(config, family, data, size, sweeps, device, log)
    log("learning rates: " + ", ".join(f"{m} {lr:g}" for m, lr in rates.items()) + (f" (swept on {size_name(size)})" if len(config.lrs) > 1 else ""))

    cells = RecordFile(out / "cells.jsonl")
    todo = [(seed, spec, method) for seed in range(config.seeds) for spec in sizes for method in config.methods]
    log(f"{len(todo)} cells: {len(sizes)} sizes ({', '.join(map(size_name, sizes))}) x {len(config.methods)} methods x {config.seeds} seeds, "
        f"{config.epochs} epoch(s) each on {len(data.train_labels):,} {data.name} images")
    done = [cell_key(spec, method, seed) for seed, spec, method in todo if cell_key(spec, method, seed) in cells]
    if done:
        log(f"skipped {len(done)} finished cells (in {cells.path})")
    ran = 0
    for i, (seed, spec, method) in enumerate(todo):
        key = cell_key(spec, method, seed)
        if key in cells:
            continue
        start = time.perf_counter()
        record = run_cell(method, spec, seed, rates[method], family, data, config, device)
        cells.add(record)
        ran += 1
        if record["status"] == "n/a":
            log(f"[{i + 1}/{len(todo)}] {key}: not applicable ({record['reason']})")
        else:
            rows = record["rows"]
            log(f"[{i + 1}/{len(todo)}] {key}: {100 * rows[0]['accuracy']:.1f}% -> {100 * rows[-1]['accuracy']:.1f}% "
                f"after {rows[-1]['epoch']} epochs ({time.perf_counter() - start:.1f} s)")
    records = [cells[cell_key(spec, method, seed)] for seed, spec, method in todo]
    files = write_reports(out, config, family.record, records, rates, size_name(size), list(sweeps.records.values()))
    return BenchResult(out, records, ran, len(done), rates, files)


def _settings_header(config: BenchConfig, ancestry: Path | None, learngene: Path | None) -> dict:
    for given, what in ((ancestry, "ancestry"), (learngene, "learngene")):
        if given is not None and not given.exists():
            raise WaveError(f"{given}: no such file: check the --{what} path, or leave it out to have the bench make one")
    return {"settings": config.fingerprint(),
            "ancestry": {"given": str(ancestry), "digest": _digest(ancestry)} if ancestry else "made by the bench",
            "learngene": {"given": str(learngene), "digest": _digest(learngene)} if learngene else "made by the bench"}


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
    data, budget, ancestry ...): its finished cells would not be comparable."""
    path = out / "bench.json"
    if path.exists():
        saved = json.loads(path.read_text())
        for key in ("settings", "ancestry", "learngene"):
            old, new = saved.get(key), header[key]
            if key == "settings":
                diff = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), None)
                if diff:
                    raise WaveError(f"{out} holds a bench made with other settings ({diff}: {old.get(diff)} there, {new.get(diff)} now): "
                                    f"use another --out, or the same settings to resume")
            elif old != new:
                raise WaveError(f"{out} holds a bench with another {key} ({_source(old)} there, {_source(new)} now): "
                                f"use another --out, or the same --{key} to resume")
    atomic_write_bytes(path, (json.dumps(header, indent=1, sort_keys=True) + "\n").encode())


def _source(entry) -> str:
    return entry["given"] if isinstance(entry, dict) else entry
