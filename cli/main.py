"""The `wave` command: a thin Typer layer over the library.

Heavy imports (torch, the backends) happen inside the commands, so `wave --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from waveinit.configs import COMMAND_FINETUNE, COMMAND_TRAIN, AncestryConfig, DistillConfig, SpawnConfig, TrainConfig
from waveinit.errors import WaveError

from .common import check_data_name, console, echo, is_main_process, load_data, print_json, refuse_existing, use_threads
from .jobs import DATASETS, DEFAULT_ANCESTRY, DataOptions, DistillModel, RunOptions, SpawnModel, TrainModel
from .options import Job, Section, command

_ANCESTRY = AncestryConfig()  # what `wave distill` trains when it finds no teacher

app = typer.Typer(
    help="WAVE: condense a pre-trained ViT into weight templates once, then initialise ViTs of any depth and width.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from waveinit import __version__

        typer.echo(f"waveinit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the waveinit version and exit.")] = False,
) -> None:
    """WAVE: condense a pre-trained ViT into weight templates once, then initialise ViTs of any depth and width."""


def _train_defaults(done: dict) -> TrainConfig:
    """`wave train`'s defaults: from scratch, or fine-tuning a start given by --init."""
    return COMMAND_FINETUNE if done["model"].init is not None else COMMAND_TRAIN


@command(app, "train", Section("data", DataOptions()), Section("model", TrainModel()), Section("train", COMMAND_TRAIN, choose=_train_defaults, helps={
    "epochs": f"Passes over the training set (from --init: {COMMAND_FINETUNE.epochs} unless given).",
    "lr": f"Peak learning rate, AdamW, warm-up then cosine (from --init: {COMMAND_FINETUNE.lr:g} unless given: the rate the bench chose for "
          "inherited starts; a from-scratch rate undoes them)."}), Section("run", RunOptions()))
def train(job: Job) -> None:
    """Train a plain ViT (an ancestry, or any model) and save it as a model file, with its
    per-epoch metrics beside it (<out stem>.metrics.csv)."""
    from waveinit.io.storage import check_writable
    from waveinit.tasks import train_vit

    from .display import TrainingDisplay

    check_data_name(job.data.data)
    model, dataset, shift_flip = _model_and_data(job.data, job.model, job.train.seed)
    spec, init, run = model.spec, job.model.init, job.run
    out = job.model.out or Path(f"runs/{init.name.removesuffix('.safetensors')}-trained.safetensors" if init else
                                f"runs/trained_d{spec.depth}_w{spec.width}.safetensors")
    check_writable(out)
    refuse_existing(out, run.force or _resumable(out, run.resume))
    config = dataclasses.replace(job.train, augment=shift_flip)
    provenance = {"init": str(init) if init is not None else "random", "threads": use_threads(run.threads), "settings": job.settings()}
    echo(f"training a {spec.depth}x{spec.width} ViT ({spec.num_params():,} parameters) on {dataset.describe()}, "
         f"{config.epochs} epochs at lr {config.lr:g}")
    with TrainingDisplay("train") as display:
        result = train_vit(model, dataset, config, out=out, device=run.device, resume=run.resume, workers=job.data.workers,
                           on_progress=TrainingDisplay.callback_for_main_process(display), provenance=provenance, log_dir=run.log_dir)
    _trained(result, out, spec, provenance["threads"], run.as_json)


def _trained(result, out: Path, spec, n_threads: int, as_json: bool) -> None:
    """`wave train`'s closing line, and its --json record."""
    from waveinit.io.metrics import metrics_path

    final = result.history[-1]["eval"]
    echo(f"test accuracy {100 * final['accuracy']:.2f}% (loss {final['loss']:.4f}); model saved to {out}, metrics in {metrics_path(out)}")
    if as_json:
        print_json({"command": "train", "out": str(out), "metrics": str(metrics_path(out)), "spec": spec.to_dict(),
                    "parameters": spec.num_params(), "test_accuracy": final["accuracy"], "test_loss": final["loss"],
                    "epochs": len(result.history), "steps": result.steps, "resumed_from": result.resumed_from,
                    "seconds": result.seconds, "threads": n_threads, "history": result.history})


def _resumable(out: Path, resume: bool) -> bool:
    """--resume with the run's checkpoint there: the run may (re)write its own output. --resume
    with none is one line: the run is finished (its output there: exit 0, nothing to do), or
    there is nothing to resume (exit 2), as timm refuses a missing resume file."""
    from waveinit.tasks import checkpoint_path

    if not resume:
        return False
    checkpoint = checkpoint_path(out)
    if checkpoint.exists():
        return True
    if out.exists():
        echo(f"{out} is finished (no checkpoint {checkpoint} is left to resume): nothing to do; pass --force instead of --resume to run it again")
        raise typer.Exit(0)
    raise WaveError(f"--resume: there is no checkpoint {checkpoint} to resume (the run never started, or its checkpoint was removed): "
                    f"drop --resume to start it")


def _model_and_data(data: DataOptions, m: TrainModel, seed: int):
    """`wave train`'s starting model (from --init, or random of the asked shape), its data, and
    whether the engine shifts and flips in-memory images (folders crop and flip as they load)."""
    from waveinit.tasks import load_vit, random_vit, spec_for

    initial = load_vit(m.init, heads=m.heads)[0] if m.init is not None else None
    folder = data.data.startswith("folder:")
    shift_flip = data.augment and not folder
    if shift_flip and data.data == "digits":
        raise WaveError("--augment flips images left-right, which turns digits into other symbols: drop --augment for digits")
    dataset = load_data(data.data, data_dir=data.data_dir, subset=data.subset, seed=seed, augment=data.augment and not shift_flip,
                        skip_bad_images=data.skip_bad_images, auto_augment=data.aa,
                        image_size=data.image_size or (initial.spec.image_size if initial is not None and folder else None))
    if initial is None:
        return random_vit(spec_for(dataset, m.depth or _ANCESTRY.depth, m.width or _ANCESTRY.width, m.heads, m.patch), seed), dataset, shift_flip
    for name, given in (("depth", m.depth), ("width", m.width), ("patch", m.patch)):
        own = getattr(initial.spec, "patch_size" if name == "patch" else name)
        if given is not None and given != own:
            raise WaveError(f"--{name} {given} contradicts --init {m.init} (its {name} is {own}): drop --{name}")
    return initial, dataset, shift_flip


@command(app, "distill", Section("model", DistillModel()), Section("data", DataOptions()), Section("train", COMMAND_TRAIN),
         Section("distill", DistillConfig()), Section("run", RunOptions()))
def distill(job: Job) -> None:
    """Distil an ancestry (teacher) ViT into a learngene: weight templates for every size (with
    per-epoch metrics beside it, <out stem>.metrics.csv)."""
    from waveinit.io.storage import check_writable
    from waveinit.tasks import distill as run_distill

    from .display import TrainingDisplay

    out, run, d = job.model.out, job.run, job.distill
    check_data_name(job.data.data)
    check_writable(out)
    refuse_existing(out, run.force or _resumable(out, run.resume))
    n_threads = use_threads(run.threads)
    teacher, teacher_path, dataset = _teacher_and_data(job)
    aux_spec, others = _auxiliaries(job.model, teacher.spec, d.side, d.templated == "all")
    echo(f"distilling {teacher_path} ({teacher.spec.depth}x{teacher.spec.width}) into {d.templates} templates of {d.side}x{d.side} per role, "
         f"auxiliary model{'s' if others else ''} {', '.join(f'{s.depth}x{s.width}' for s in (aux_spec, *others))}, on {dataset.describe()}")
    with TrainingDisplay("distill") as display:
        result = run_distill(teacher, dataset, aux_spec, job.train, d, out=out, device=run.device, resume=run.resume,
                             on_progress=TrainingDisplay.callback_for_main_process(display), workers=job.data.workers, log_dir=run.log_dir,
                             provenance={"teacher": str(teacher_path), "threads": n_threads, "settings": job.settings()}, sizes=others)
    _distilled(result, out, teacher_path, aux_spec, n_threads, run.as_json)


def _teacher_and_data(job: Job):
    """`wave distill`'s teacher (trained first when there is none), how provenance names it, and the data."""
    data, m = job.data, job.model
    teacher, teacher_path = _teacher(m.teacher, m.teacher_heads, m.revision)
    image_size = data.image_size
    if image_size is None and teacher is not None and data.data.startswith("folder:"):
        image_size = teacher.spec.image_size  # an image folder comes at the teacher's image size
    dataset = load_data(data.data, data_dir=data.data_dir, subset=data.subset, seed=job.train.seed, image_size=image_size,
                        augment=data.augment, auto_augment=data.aa, skip_bad_images=data.skip_bad_images)
    if teacher is None:
        teacher = _default_ancestry(dataset, job)
    return teacher, teacher_path, dataset


def _auxiliaries(m: DistillModel, teacher, side: int, every_role_templated: bool = True):
    """The auxiliary model's spec (the teacher's shape unless told; a DeiT's token stays with it)
    and the other auxiliaries of --sizes, largest first (thirds: of that auxiliary's size)."""
    from waveinit.sizes import THIRDS, parse_sizes, thirds
    from waveinit.spec import resized

    largest = resized(teacher.plain(), m.depth, m.width, m.heads, side=side)
    if m.sizes == THIRDS and not every_role_templated:
        echo("--templated matrices keeps the other parameters dense, which one auxiliary alone can hold: distilling through "
             f"{largest.depth}x{largest.width} only (as --sizes one)")
    if m.sizes in ("one", THIRDS):
        sizes = thirds(largest, side) if m.sizes == THIRDS and every_role_templated else []
        others = [resized(teacher.plain(), s.depth, s.width, None, side=side) for s in sizes if (s.depth, s.width) != (largest.depth, largest.width)]
        return largest, tuple(sorted(others, key=lambda spec: -spec.num_params()))
    if m.depth is not None or m.width is not None:
        raise WaveError("--sizes lists the auxiliary sizes: leave out --depth and --width (or give --sizes thirds or one)")
    specs = sorted((resized(teacher.plain(), s.depth, s.width, s.heads or m.heads, side=side) for s in parse_sizes(m.sizes, teacher.plain(), side)),
                   key=lambda spec: -spec.num_params())
    return specs[0], tuple(specs[1:])


def _distilled(result, out: Path, teacher_path, aux_spec, n_threads, as_json: bool) -> None:
    """`wave distill`'s closing line, and its --json record."""
    from waveinit.io.metrics import metrics_path

    lg = result.learngene
    echo(
        f"teacher {100 * result.teacher_eval['accuracy']:.2f}%, auxiliary model {100 * lg.provenance['test_accuracy']:.2f}% test accuracy; "
        f"learngene: {lg.num_template_params():,} template and {lg.num_scaler_params():,} scaler parameters"
        + (f" and {lg.num_dense_params():,} dense ones" if lg.dense else "") + f", saved to {out}, "
        f"metrics in {metrics_path(out)}"
    )
    if as_json:
        print_json({"command": "distill", "out": str(out), "metrics": str(metrics_path(out)), "teacher": str(teacher_path),
                    "teacher_test_accuracy": result.teacher_eval["accuracy"], "test_accuracy": lg.provenance["test_accuracy"],
                    "test_loss": lg.provenance["test_loss"], "spec": aux_spec.to_dict(), "side": lg.side, "templates": lg.counts,
                    "template_params": lg.num_template_params(), "scaler_params": lg.num_scaler_params(), "dense_params": lg.num_dense_params(),
                    "sizes": list(lg.sizes),
                    "bytes": out.stat().st_size, "epochs": len(result.train.history), "steps": result.train.steps,
                    "seconds": result.seconds, "threads": n_threads})


def _teacher(teacher: str | None, heads: int | None, revision: str | None):
    """`wave distill`'s teacher and how the learngene's provenance names it: a Hub model as
    `hf:ORG/NAME@COMMIT`, a local one by its absolute path (`wave spawn` finds it from any
    folder); without --teacher, runs/ancestry.safetensors if it is there, else (None, its path)."""
    from waveinit.tasks import load_vit

    if teacher is None:
        if not DEFAULT_ANCESTRY.exists():
            return None, DEFAULT_ANCESTRY.resolve()
        teacher = str(DEFAULT_ANCESTRY)
    model, provenance = load_vit(teacher, heads=heads, revision=revision)
    return model, provenance.get("hub") or Path(teacher).resolve()


def _default_ancestry(dataset, job: Job):
    """`wave distill` without --teacher and without runs/ancestry.safetensors: train that ancestry first."""
    from waveinit.spec import resized
    from waveinit.tasks import load_vit, spec_for, train_ancestry

    from .display import TrainingDisplay

    m, t = job.model, job.train
    recipe = dataclasses.replace(_ANCESTRY, epochs=t.epochs)
    resized(spec_for(dataset, recipe.depth, recipe.width), m.depth, m.width, m.heads, side=job.distill.side)  # bad options fail now
    echo(f"no --teacher given and none at {DEFAULT_ANCESTRY}: training a {recipe.depth}x{recipe.width} ancestry on {dataset.name} first")
    with TrainingDisplay("ancestry") as display:
        train_ancestry(dataset, recipe, out=DEFAULT_ANCESTRY, batch_size=t.batch_size, seed=t.seed, device=job.run.device, resume=job.run.resume,
                       on_progress=TrainingDisplay.callback_for_main_process(display), provenance={"made_by": "wave distill"},
                       workers=job.data.workers)
    return load_vit(DEFAULT_ANCESTRY.resolve())[0]


_SPAWN_DATA = ("data", "data_dir", "image_size", "workers")


@command(app, "spawn", Section("model", SpawnModel()), Section("data", DataOptions(data=None), only=_SPAWN_DATA, helps={
    "data": f"Data to fit on: {DATASETS} (default: the learngene's).",
    "image_size": "folder:DIR: resize images to this side (default: the learngene's)."}), Section("spawn", SpawnConfig()),
         Section("run", RunOptions(), only=("device", "threads", "force", "resume", "as_json"), helps={
             "resume": "--sizes: keep the sizes an interrupted family finished and spawn the rest."}))
def spawn(job: Job) -> None:
    """Initialise a ViT of any depth and width (or a family of sizes, --sizes) from a learngene and save it as a plain model file."""
    m, data, run = job.model, job.data, job.run
    check_data_name(data.data)
    if m.sizes is None:
        return _spawn_one(job)
    given = [name for name, value in (("--depth", m.depth), ("--width", m.width), ("--size", m.size), ("--params", m.params), ("--out", m.out))
             if value is not None]
    if given:
        raise WaveError(f"--sizes lists the family's sizes and --out-dir its folder: drop {', '.join(given)}")
    from .tools import spawn_family_command

    spawn_family_command(m.learngene, m.sizes, m.out_dir, job.spawn, data=data.data, data_dir=data.data_dir, patch=m.patch,
                         image_size=data.image_size, teacher=m.teacher, fit=not m.no_fit, device=run.device, threads=run.threads,
                         force=run.force, resume=run.resume, workers=data.workers, as_json=run.as_json)


def _spawn_one(job: Job) -> None:
    """`wave spawn` of one size."""
    import time

    from waveinit.api import plan_spawn, run_spawn
    from waveinit.family import model_name
    from waveinit.io.files import save_model
    from waveinit.io.storage import check_writable

    from .display import TrainingDisplay

    start, m, data, run = time.perf_counter(), job.model, job.data, job.run
    if run.resume:
        raise WaveError("--resume continues a family (--sizes): a single spawn has nothing to resume; drop --resume")
    depth, width, heads = _target_size(m.learngene, m.depth, m.width, m.heads, m.size, m.params)
    out = m.out or Path("runs") / model_name(str(m.learngene), depth, width)
    check_writable(out)
    refuse_existing(out, run.force)
    n_threads = None if m.no_fit else use_threads(run.threads)
    plan = plan_spawn(m.learngene, depth, width, heads, data=data.data, data_dir=data.data_dir, patch=m.patch, fit=not m.no_fit,
                      config=job.spawn, teacher=m.teacher, device=run.device, image_size=data.image_size)
    with TrainingDisplay("fit scalers", count="steps") as display:
        model = run_spawn(plan, on_progress=display.update if is_main_process() and not m.no_fit else None, on_note=echo, workers=data.workers)
    spec, p = model.spec, {**model.provenance, **({"threads": n_threads} if n_threads else {}), "settings": job.settings()}
    if is_main_process():
        save_model(out, model.state_dict, spec, p)
        _spawn_table(spec, p, m.no_fit, time.perf_counter() - start)
        echo(f"model saved to {out}")
    if run.as_json:
        print_json({"command": "spawn", "out": str(out), "spec": spec.to_dict(), "parameters": spec.num_params(), **p,
                    "seconds": time.perf_counter() - start})


def _target_size(learngene: Path, depth, width, heads, size: str | None, params: int | None) -> tuple[int, int, int | None]:
    """`wave spawn`'s depth, width and heads: given, by timm's name (--size), or nearest a budget (--params)."""
    if size is not None and params is not None:
        raise WaveError("--size and --params both choose the size: give one")
    if size is not None:
        from waveinit.io.timm import size_named

        d, w, h = size_named(size)
        return depth or d, width or w, heads or (h if width is None else None)
    if params is not None:
        from waveinit.io.files import load_learngene
        from waveinit.spawning import size_for_params

        gene = load_learngene(learngene)
        d, w = size_for_params(params, gene.spec, gene.side)
        count = gene.spec.params_at(d, w)
        echo(f"--params {params:,}: depth {d}, width {w} ({count:,} parameters), the nearest {params:,} parameters on the "
             f"learngene's grid (widths in steps of {gene.side})")
        return depth or d, width or w, heads
    if depth is None or width is None:
        raise WaveError("the new model's size is missing: give --depth and --width, or --size NAME (vit_tiny, ...), or --params N")
    return depth, width, heads


_STOPPED = {"patience": " (stopped early: the held-out loss had stopped falling)", "fit_steps": " (all of --fit-steps)"}


def _spawn_table(spec, p: dict, no_fit: bool, seconds: float) -> None:
    """What `wave spawn` made, as a table (paths stay out of it: a narrow terminal would cut them)."""
    from rich.table import Table

    rows = [("target parameters", f"{spec.num_params():,}"), ("roles started afresh", ", ".join(p["fresh_roles"]) or "none")]
    if no_fit:
        rows += [("data used", "none")]
    else:
        rows += [
            ("scaler parameters fitted", f"{p['fitted_params']:,}"),
            ("samples / steps", f"{p['fit_samples']:,} / {p['fit_steps']}" + _STOPPED.get(p.get("fit_stopped"), "")),
            ("fitted against", "KL to the ancestry + CE" if p["teacher"] else "cross-entropy on labels"),
            ("kept", "the fitted scalers" if p["fit_kept"] == "fitted" else "the data-free start (the fit raised the held-out loss)"),
            ("test accuracy", f"{100 * p['test_accuracy']:.2f}% on {p['test_samples']:,} test images"),
        ]
    rows += [("seconds", f"{seconds:.2f}")]
    table = Table(title=f"spawned {spec.depth}x{spec.width} ViT ({spec.heads} heads)", show_header=False)
    for name, value in rows:
        table.add_row(name, value)
    console().print(table)


@app.command()
def version() -> None:
    """Print the waveinit version."""
    from waveinit import __version__

    typer.echo(__version__)


# Commands defined in cli/tools.py.
from .tools import eval_model, export, inspect  # noqa: E402

app.command("eval")(eval_model)
app.command("inspect")(inspect)
app.command("export")(export)


def main() -> None:
    """The `wave` entry point: Typer's usage errors, too, become one line and exit code 2;
    SIGINT and SIGTERM end in one line saying what was kept and how to resume, exit 130 or 143."""
    import sys

    from waveinit.training import interrupts

    try:  # recent Typer releases vendor click
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import ClickException

    interrupts.install_handlers()
    try:
        code = app(standalone_mode=False)
    except interrupts.Interrupted as e:
        if is_main_process():
            print(interrupted_message(e, sys.argv[1:]), file=sys.stderr)
        sys.exit(e.exit_code)
    except ClickException as e:  # a usage error: unknown option, missing or out-of-range value
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    distributed = sys.modules.get("waveinit.training.distributed")  # loaded only by commands that train
    if distributed is not None:
        # Under torchrun: after success every rank is done before any tears down; after an error
        # (perhaps on this rank alone) nobody waits for peers that may never come.
        distributed.close_distributed(wait=not code)
    sys.exit(code if isinstance(code, int) else 0)


def interrupted_message(e, args: list[str]) -> str:
    """One line: which signal, what was kept, and the exact command that continues the run."""
    import os
    import shlex

    command = args[0] if args else ""
    family = command == "spawn" and any(a == "--sizes" or a.startswith("--sizes=") for a in args)
    if e.kept and (command in ("train", "distill") or family) and "--resume" not in args:
        args = [*args, "--resume"]  # continue from the checkpoint, not start over
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    launcher = "wave" if world <= 1 else f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', world)} -m waveinit.cli"
    again = f"{launcher} {shlex.join(args)}"
    if e.kept:
        return f"interrupted by {e.name}: kept {e.kept}; resume with: {again}"
    return f"interrupted by {e.name}: nothing was written; start again with: {again}"


# The command defined in cli/bench.py.
from .bench import BenchOptions, bench  # noqa: E402

command(app, "bench", Section("bench", BenchOptions()))(bench)
