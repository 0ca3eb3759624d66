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
from those records by `bench_report.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data import Dataset, load_dataset, split_validation
from ..errors import WaveError
from ..files import atomic_write_bytes, load_learngene, save_learngene
from ..learngene import Learngene, learngene_from_weights
from ..selection import check_applicable, weight_selection
from ..spawning import spawn
from ..spec import ViTSpec, check_width
from .pipeline import DistillConfig, check_fits, dense_numpy, distill, load_vit, random_vit, spec_for, train_vit
from .torch import ViT, load_state_dict
from .torch_train import TrainConfig, evaluate, resolve_device, train

METHODS = ("random", "weight-selection", "nearest-kron", "wave", "wave-nofit", "scratch-long")
EVAL_BATCH = 256


@dataclass(frozen=True)
class BenchConfig:
    data: str = "fashion-mnist"
    data_dir: str | None = None
    # Sized to run in a session on 2 CPU cores (98 minutes, README: Results): 5,000 training images
    # (a fixed draw, seed 0; None: all), the full test set, one epoch per cell.
    subset: int | None = 5000
    depths: tuple[int, ...] = (2, 4, 6)
    widths: tuple[int, ...] = (64, 128, 192)
    extra_sizes: tuple[tuple[int, int], ...] = ((8, 256),)  # (depth, width) beyond the ancestry
    methods: tuple[str, ...] = METHODS
    seeds: int = 3
    epochs: int = 1  # training epochs of every cell (scratch-long: scratch_factor times as many)
    scratch_factor: int = 5
    batch_size: int = 64
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)  # learning-rate sweep candidates, one rate: no sweep
    sweep_epochs: int = 1
    validation_fraction: float = 0.1  # of the training set, held out for the sweep
    fit_steps: int = 100  # scaler fit of wave and nearest-kron
    fit_samples: int = 1500
    fit_lr: float = 0.1
    patch: int | None = None  # None: image side / 4
    # The ancestry and the learngene, when the bench makes them.
    ancestry_depth: int = 6
    ancestry_width: int = 192
    ancestry_epochs: int = 10
    ancestry_lr: float = 2e-3
    side: int = 64  # template side, also the head width of every model
    templates: int = 4  # per role
    distill_epochs: int = 5
    distill_lr: float = 2e-3

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise WaveError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
        if not self.methods:
            raise WaveError(f"no methods to run: choose from {', '.join(METHODS)}")
        positive = ("seeds", "epochs", "scratch_factor", "batch_size", "sweep_epochs", "fit_steps", "fit_samples",
                    "ancestry_depth", "ancestry_width", "ancestry_epochs", "side", "templates", "distill_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise WaveError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise WaveError(f"learning rates must be positive numbers, got {list(self.lrs)}")
        if not (self.depths and self.widths) and not self.extra_sizes:
            raise WaveError("no model sizes: give depths and widths, or extra sizes")

    def fingerprint(self) -> dict:
        """The settings a finished cell depends on: a rerun must share them to reuse cells.
        Sizes, methods and seeds are not among them (a rerun may add more)."""
        d = asdict(self)
        for key in ("depths", "widths", "extra_sizes", "methods", "seeds"):
            d.pop(key)
        return json.loads(json.dumps(d))


QUICK = BenchConfig(
    data="digits",
    subset=None,
    depths=(1, 2),
    widths=(32, 64),
    extra_sizes=((3, 96),),
    seeds=3,
    epochs=1,
    scratch_factor=5,
    lrs=(1e-3, 3e-3, 1e-2),
    fit_steps=40,
    fit_samples=600,
    ancestry_depth=2,
    ancestry_width=64,
    ancestry_epochs=20,
    ancestry_lr=3e-3,
    side=32,
    templates=2,
    distill_epochs=10,
    distill_lr=3e-3,
)


def preset(quick: bool) -> BenchConfig:
    """`--quick`: digits, tiny sizes, minutes on 2 CPU cores. Default: Fashion-MNIST."""
    return QUICK if quick else BenchConfig()


# ----------------------------------------------------------------------------- records on disk

class RecordFile:
    """Finished records, one JSON object a line, keyed by `record["key"]`.

    Each addition rewrites the whole file through a temporary file and a rename, so a crash
    leaves the records before it or after it, never half a line.
    """

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.records[record["key"]] = record

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> dict:
        return self.records[key]

    def add(self, record: dict) -> None:
        self.records[record["key"]] = record
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records.values())
        atomic_write_bytes(self.path, text.encode())


# ----------------------------------------------------------------------------- the family: ancestry and learngenes

@dataclass
class Family:
    """What every size is initialised from, made (or given) once."""

    ancestry: ViT
    ancestry_path: Path
    learngene: Learngene
    learngene_path: Path
    nearest_kron: Learngene  # templates by nearest_kron of the ancestry, shaped like the learngene's
    nearest_kron_path: Path
    record: dict = field(default_factory=dict)  # how each was made, and what it cost


def images_passed(samples: int, batch_size: int, steps: int) -> int:
    """Images through forward + backward in `steps` steps over `samples` images in batches
    (each epoch's last batch may be smaller), as the training engine draws them."""
    per_epoch = -(-samples // batch_size)
    full, rest = divmod(steps, per_epoch)
    return full * samples + min(rest * batch_size, samples)


def _training_compute(provenance: dict) -> int | None:
    """Forward + backward image passes recorded by train_vit / distill, when they are known."""
    config, size = provenance.get("config"), provenance.get("train_size")
    if not isinstance(config, dict) or not size:
        return None
    if config.get("max_steps"):
        return images_passed(size, config["batch_size"], config["max_steps"])
    return config["epochs"] * size


def make_family(config: BenchConfig, data: Dataset, out: Path, ancestry: Path | None, learngene: Path | None,
                device: str, log: Callable[[str], None]) -> Family:
    """Load the given ancestry and learngene, or make them in `out` (a rerun reuses them), and
    take the nearest-Kronecker templates of the ancestry."""
    model, ancestry, record = _ancestry(config, data, out, ancestry, device, log)
    gene, learngene, record["learngene"] = _learngene(config, data, out, learngene, model, ancestry, device, log)
    nearest = learngene_from_weights(dense_numpy(model.state_dict()), model.spec, gene.side, gene.counts)
    nearest.provenance.update(teacher=str(ancestry.resolve()), data=record["ancestry"]["data"] or data.name)
    nearest_path = out / "nearest_kron.safetensors"
    save_learngene(nearest_path, nearest)
    record["nearest_kron"] = {
        "path": str(nearest_path), "how": "nearest_kron of the ancestry's weights, all layers at once (no data, no training)",
        "relative_error": nearest.provenance["relative_error"], "compute": 0, "bytes": nearest_path.stat().st_size,
    }
    return Family(model, ancestry, gene, learngene, nearest, nearest_path, record)


def _ancestry(config, data, out, path, device, log) -> tuple[ViT, Path, dict]:
    if path is not None:
        model, provenance = load_vit(path)
        check_fits(model.spec, data, f"ancestry {path}")
        how = f"given: {path}"
    else:
        path = out / "ancestry.safetensors"
        if not path.exists():
            spec = _ancestry_spec(config, data)
            log(f"training the ancestry ({spec.depth}x{spec.width}, {config.ancestry_epochs} epochs) -> {path}")
            train_vit(random_vit(spec, 0), data, TrainConfig(epochs=config.ancestry_epochs, batch_size=config.batch_size, lr=config.ancestry_lr),
                      out=path, device=device, resume=True, provenance={"init": "random", "made_by": "wave bench"})
        model, provenance = load_vit(path)
        how = f"trained by wave bench (train_vit, {config.ancestry_epochs} epochs, lr {config.ancestry_lr:g})"
    model.to(resolve_device(device)).eval()
    record = {"ancestry": {
        "path": str(path), "how": how, "spec": model.spec.to_dict(), "params": model.spec.num_params(), "data": provenance.get("data"),
        "test_accuracy": evaluate(model, data.test_images, data.test_labels, EVAL_BATCH, device)["accuracy"],
        "compute": _training_compute(provenance), "train_images": provenance.get("train_size"), "seconds": provenance.get("seconds"),
        "bytes": path.stat().st_size if path.is_file() else None,
    }}
    return model, path, record


def _ancestry_spec(config: BenchConfig, data: Dataset) -> ViTSpec:
    """The ancestry the bench trains: heads as wide as the templates."""
    check_width(config.ancestry_width, config.side)
    return spec_for(data, config.ancestry_depth, config.ancestry_width, config.ancestry_width // config.side, config.patch)


def _learngene(config, data, out, path, ancestry: ViT, ancestry_path: Path, device, log) -> tuple[Learngene, Path, dict]:
    if path is not None:
        gene = load_learngene(path)
        check_fits(gene.spec, data, f"learngene {path}")
        how = f"given: {path}"
    else:
        path = out / "learngene.safetensors"
        if not path.exists():
            log(f"distilling the ancestry into {config.templates} templates of {config.side}x{config.side} per role "
                f"({config.distill_epochs} epochs) -> {path}")
            distill(ancestry, data, ancestry.spec, TrainConfig(epochs=config.distill_epochs, batch_size=config.batch_size, lr=config.distill_lr),
                    DistillConfig(side=config.side, templates=config.templates), out=path, device=device, resume=True,
                    provenance={"teacher": str(ancestry_path.resolve()), "made_by": "wave bench"})
        gene = load_learngene(path)
        how = f"distilled by wave bench ({config.distill_epochs} epochs, lr {config.distill_lr:g}, auxiliary model of the ancestry's size)"
    compute = _training_compute(gene.provenance)
    return gene, path, {
        "path": str(path), "how": how, "spec": gene.spec.to_dict(), "side": gene.side, "templates": gene.counts,
        "template_params": gene.num_template_params(), "scaler_params": gene.num_scaler_params(),
        "test_accuracy": gene.provenance.get("test_accuracy"), "compute": compute,
        "teacher_forward": gene.provenance.get("train_size") if compute is not None else None,  # the teacher's logits, cached once
        "train_images": gene.provenance.get("train_size"), "seconds": gene.provenance.get("seconds"), "bytes": path.stat().st_size,
    }


def _planned_family(config: BenchConfig, data: Dataset, out: Path, ancestry: Path | None, learngene: Path | None) -> tuple[ViTSpec, int]:
    """(ancestry spec, template side) of the family `make_family` will give, read without making it."""
    from ..files import load_model

    made = out / "ancestry.safetensors"
    spec = load_model(ancestry or made).spec if ancestry is not None or made.exists() else _ancestry_spec(config, data)
    made = out / "learngene.safetensors"
    side = load_learngene(learngene or made).side if learngene is not None or made.exists() else config.side
    return spec, side


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
        sizes.append(ancestry.replace(depth=depth, width=width, heads=width // ancestry.head_dim))
    return sizes


def size_name(spec: ViTSpec) -> str:
    return f"{spec.depth}x{spec.width}"


def representative_size(sizes: list[ViTSpec], ancestry: ViTSpec) -> ViTSpec:
    """The size the learning rates are swept on: the median (by parameters, the larger of two)
    of the sizes every method applies to (none beyond the ancestry), else of all sizes."""
    applicable = [s for s in sizes if _selectable(ancestry, s)] or sizes
    ordered = sorted(applicable, key=lambda s: (s.num_params(), s.depth))
    return ordered[len(ordered) // 2]


def _sweep_size(sweeps: RecordFile, sizes: list[ViTSpec], ancestry: ViTSpec) -> ViTSpec:
    """The representative size, or the one an earlier run of this bench swept on: the rates
    of finished cells stay the rates of the cells still to run."""
    earlier = {r["size"] for r in sweeps.records.values()}
    if not earlier:
        return representative_size(sizes, ancestry)
    depth, width = map(int, earlier.pop().split("x"))
    return ancestry.replace(depth=depth, width=width, heads=width // ancestry.head_dim)


def _selectable(ancestry: ViTSpec, spec: ViTSpec) -> bool:
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
        if method == "weight-selection" and not _selectable(family.ancestry.spec, size):
            continue  # not applicable anywhere the sweep could run
        keys = {lr: f"{method}/{size_name(size)}/lr{lr:g}" for lr in config.lrs}
        missing = [lr for lr, key in keys.items() if key not in store]
        if missing:
            start = initialise(method, size, 0, family, init_data, config, device)
            for lr in missing:
                model = copy.deepcopy(start.model)
                train(model, val.train_images, val.train_labels, TrainConfig(epochs=config.sweep_epochs, batch_size=config.batch_size, lr=lr),
                      device=device)
                result = evaluate(model, val.test_images, val.test_labels, EVAL_BATCH, device)
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
    first = evaluate(model, data.test_images, data.test_labels, EVAL_BATCH, device)
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
    from .bench_report import write_reports  # matplotlib is imported there, when the reports are drawn

    config.check()
    out = Path(out)
    ancestry, learngene = (Path(p) if p is not None else None for p in (ancestry, learngene))
    data = load_dataset(config.data, data_dir=config.data_dir, subset=config.subset, seed=0)
    header = _settings_header(config, ancestry, learngene)
    bench_sizes(config, *_planned_family(config, data, out, ancestry, learngene))  # bad sizes fail now, not after an hour
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
