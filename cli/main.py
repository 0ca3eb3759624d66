"""The `wave` command: a thin Typer layer over the library.

Heavy imports (torch, the backends) happen inside the commands, so `wave --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from waveinit.configs import COMMAND_FINETUNE, COMMAND_TRAIN, AncestryConfig, DistillConfig, SpawnConfig, TrainConfig
from waveinit.errors import WaveError

from .common import (
    DATA,
    DEFAULT_ANCESTRY,
    DEFAULT_LEARNGENE,
    MODEL,
    RUN,
    TRAINING,
    Augment,
    AutoAugment,
    BatchSize,
    CheckpointEvery,
    Compile,
    Cutmix,
    Data,
    DataDir,
    Depth,
    Device,
    DropPath,
    Epochs,
    Force,
    Heads,
    ImageSize,
    Json,
    LogDir,
    Lr,
    Mixup,
    MixupProb,
    MixupSwitchProb,
    ModelEma,
    ModelEmaDecay,
    Patch,
    Reprob,
    Resume,
    Seed,
    SkipBadImages,
    Smoothing,
    Subset,
    Threads,
    WeightDecay,
    Width,
    Workers,
    check_data_name,
    console,
    echo,
    handles_errors,
    is_main_process,
    load_data,
    print_json,
    recipe,
    refuse_existing,
    use_threads,
)

# Option defaults come from the task configs: one home for every default.
_TRAIN, _FINETUNE, _DISTILL, _SPAWN, _ANCESTRY = COMMAND_TRAIN, COMMAND_FINETUNE, DistillConfig(), SpawnConfig(), AncestryConfig()

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


@app.command()
@handles_errors
def train(
    data: Data = "digits",
    data_dir: DataDir = None,
    subset: Subset = None,
    depth: Depth = None,
    width: Width = None,
    heads: Heads = None,
    patch: Patch = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, rich_help_panel=TRAINING, help=(
        f"Passes over the training set (default: {_TRAIN.epochs} from scratch, {_FINETUNE.epochs} from --init)."))] = None,
    batch_size: BatchSize = _TRAIN.batch_size,
    lr: Annotated[Optional[float], typer.Option(min=0.0, rich_help_panel=TRAINING, help=(
        f"Peak learning rate, AdamW, warm-up then cosine (default: {_TRAIN.lr:g} from scratch, {_FINETUNE.lr:g} from --init: "
        "the rate the bench chose for inherited starts; a from-scratch rate undoes them)."))] = None,
    weight_decay: WeightDecay = _TRAIN.weight_decay,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = None,
    compile_model: Compile = False,
    init: Annotated[Optional[Path], typer.Option(help="Start from this model file (e.g. made by `wave spawn`).", rich_help_panel=MODEL)] = None,
    out: Annotated[Optional[Path], typer.Option(help=(
        "Model file to write (default: runs/trained_d{D}_w{W}.safetensors, or runs/{init stem}-trained.safetensors)."), rich_help_panel=RUN)] = None,
    force: Force = False,
    log_dir: LogDir = None,
    resume: Resume = False,
    checkpoint_every: CheckpointEvery = 0,
    image_size: ImageSize = None,
    augment: Augment = False,
    workers: Workers = 0,
    skip_bad_images: SkipBadImages = False,
    smoothing: Smoothing = 0.0,
    mixup: Mixup = 0.0,
    cutmix: Cutmix = 0.0,
    mixup_prob: MixupProb = 1.0,
    mixup_switch_prob: MixupSwitchProb = 0.5,
    reprob: Reprob = 0.0,
    aa: AutoAugment = None,
    drop_path: DropPath = 0.0,
    model_ema: ModelEma = False,
    model_ema_decay: ModelEmaDecay = 0.9998,
    as_json: Json = False,
) -> None:
    """Train a plain ViT (an ancestry, or any model) and save it as a model file, with its
    per-epoch metrics beside it (<out stem>.metrics.csv)."""
    from waveinit.io.metrics import metrics_path
    from waveinit.io.storage import check_writable
    from waveinit.tasks import train_vit

    from .display import TrainingDisplay

    check_data_name(data)
    model, dataset, shift_flip = _model_and_data(data, data_dir, subset, depth, width, heads, patch, seed, init, image_size, augment, aa,
                                                 skip_bad_images)
    spec = model.spec
    out = out or Path(f"runs/{init.name.removesuffix('.safetensors')}-trained.safetensors" if init else
                      f"runs/trained_d{spec.depth}_w{spec.width}.safetensors")
    check_writable(out)
    refuse_existing(out, force or _resumable(out, resume))
    defaults = _FINETUNE if init is not None else _TRAIN
    config = TrainConfig(epochs=epochs or defaults.epochs, batch_size=batch_size, lr=defaults.lr if lr is None else lr, weight_decay=weight_decay,
                         seed=seed, checkpoint_every=checkpoint_every, augment=shift_flip, compile=compile_model,
                         **recipe(smoothing, mixup, cutmix, mixup_prob, mixup_switch_prob, reprob, drop_path, model_ema, model_ema_decay))
    provenance = {"init": str(init) if init is not None else "random", "threads": use_threads(threads)}
    echo(f"training a {spec.depth}x{spec.width} ViT ({spec.num_params():,} parameters) on {dataset.describe()}, "
         f"{config.epochs} epochs at lr {config.lr:g}")
    with TrainingDisplay("train") as display:
        result = train_vit(model, dataset, config, out=out, device=device, resume=resume, workers=workers,
                           on_progress=TrainingDisplay.callback_for_main_process(display), provenance=provenance, log_dir=log_dir)
    final = result.history[-1]["eval"]
    echo(f"test accuracy {100 * final['accuracy']:.2f}% (loss {final['loss']:.4f}); model saved to {out}, metrics in {metrics_path(out)}")
    if as_json:
        print_json({"command": "train", "out": str(out), "metrics": str(metrics_path(out)), "spec": spec.to_dict(),
                    "parameters": spec.num_params(), "test_accuracy": final["accuracy"], "test_loss": final["loss"],
                    "epochs": len(result.history), "steps": result.steps, "resumed_from": result.resumed_from,
                    "seconds": result.seconds, "threads": provenance["threads"], "history": result.history})


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


def _model_and_data(data, data_dir, subset, depth, width, heads, patch, seed, init, image_size, augment, aa, skip_bad_images):
    """`wave train`'s starting model (from --init, or random of the asked shape), its data, and
    whether the engine shifts and flips in-memory images (folders crop and flip as they load)."""
    from waveinit.tasks import load_vit, random_vit, spec_for

    initial = load_vit(init, heads=heads)[0] if init is not None else None
    shift_flip = augment and not data.startswith("folder:")
    if shift_flip and data == "digits":
        raise WaveError("--augment flips images left-right, which turns digits into other symbols: drop --augment for digits")
    dataset = load_data(data, data_dir=data_dir, subset=subset, seed=seed, augment=augment and not shift_flip, skip_bad_images=skip_bad_images,
                        auto_augment=aa,
                        image_size=image_size or (initial.spec.image_size if initial is not None and data.startswith("folder:") else None))
    if initial is None:
        return random_vit(spec_for(dataset, depth or _ANCESTRY.depth, width or _ANCESTRY.width, heads, patch), seed), dataset, shift_flip
    for name, given in (("depth", depth), ("width", width), ("patch", patch)):
        own = getattr(initial.spec, "patch_size" if name == "patch" else name)
        if given is not None and given != own:
            raise WaveError(f"--{name} {given} contradicts --init {init} (its {name} is {own}): drop --{name}")
    return initial, dataset, shift_flip


DISTILLATION = "Distillation"


@app.command()
@handles_errors
def distill(
    teacher: Annotated[Optional[str], typer.Option(rich_help_panel=DISTILLATION, help=(
        "Ancestry: a model file, a timm-keyed safetensors ViT, a Hugging Face or timm folder, or a Hub model "
        "(ORG/NAME, hf-hub:ORG/NAME[@REVISION]) (default: runs/ancestry.safetensors, trained first if missing)."))] = None,
    revision: Annotated[Optional[str], typer.Option(help="A Hub teacher's branch, tag or commit (default: main).",
                                                    rich_help_panel=DISTILLATION)] = None,
    teacher_heads: Annotated[Optional[int], typer.Option(help="Heads of a plain safetensors teacher (default: width / 64).",
                                                         rich_help_panel=DISTILLATION)] = None,
    data: Data = "digits",
    data_dir: DataDir = None,
    subset: Subset = None,
    depth: Annotated[Optional[int], typer.Option(help="Auxiliary model's blocks (default: the teacher's).", rich_help_panel=MODEL)] = None,
    width: Annotated[Optional[int], typer.Option(help="Auxiliary model's width (default: the teacher's).", rich_help_panel=MODEL)] = None,
    heads: Heads = None,
    sizes: Annotated[Optional[str], typer.Option(help=(
        "Distil the templates through several auxiliary sizes at once, each with its own scalers (DxW, DxWxH, timm names or "
        "parameter budgets, comma-separated: 2x64,4x128,6x192); a descendant of a listed size starts from its scalers. "
        "Instead of --depth and --width."), rich_help_panel=MODEL)] = None,
    templates: Annotated[int, typer.Option(min=1, help="Templates per weight role.", rich_help_panel=MODEL)] = _DISTILL.templates,
    templated: Annotated[str, typer.Option(help=(
        "What is templated: all (every parameter a Kronecker sum) or matrices (qkv, proj, fc1 and fc2, as in the paper; the "
        "other parameters stored densely in the learngene)."), rich_help_panel=MODEL)] = _DISTILL.templated,
    kron_order: Annotated[str, typer.Option(help=(
        "Each weight a sum of kron(T, S) (ts: scaler-shaped blocks) or of kron(S, T) (st: template-shaped blocks, one per "
        "head). docs/bench/ablations.md compares them: ts distils and spawns better."), rich_help_panel=MODEL)] = _DISTILL.order,
    side: Annotated[int, typer.Option(min=1, help="Template side s: templates are s x s blocks.", rich_help_panel=MODEL)] = _DISTILL.side,
    epochs: Epochs = _TRAIN.epochs,
    batch_size: BatchSize = _TRAIN.batch_size,
    lr: Lr = _TRAIN.lr,
    weight_decay: WeightDecay = _TRAIN.weight_decay,
    temperature: Annotated[float, typer.Option(min=1e-6, help="Distillation temperature.", rich_help_panel=DISTILLATION)] = _DISTILL.temperature,
    kd_weight: Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of the KL term; the rest goes to cross-entropy on labels.",
                                             rich_help_panel=DISTILLATION)] = _DISTILL.kd_weight,
    cache: Annotated[bool, typer.Option(help="Compute the teacher's logits once and reuse them every epoch.",
                                        rich_help_panel=DISTILLATION)] = _DISTILL.cache_teacher,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = None,
    compile_model: Compile = False,
    out: Annotated[Path, typer.Option(help="Learngene file to write.", rich_help_panel=RUN)] = DEFAULT_LEARNGENE,
    force: Force = False,
    log_dir: LogDir = None,
    resume: Resume = False,
    checkpoint_every: CheckpointEvery = 0,
    image_size: ImageSize = None,
    augment: Augment = False,
    workers: Workers = 0,
    skip_bad_images: SkipBadImages = False,
    smoothing: Smoothing = 0.0,
    mixup: Mixup = 0.0,
    cutmix: Cutmix = 0.0,
    mixup_prob: MixupProb = 1.0,
    mixup_switch_prob: MixupSwitchProb = 0.5,
    reprob: Reprob = 0.0,
    aa: AutoAugment = None,
    drop_path: DropPath = 0.0,
    model_ema: ModelEma = False,
    model_ema_decay: ModelEmaDecay = 0.9998,
    as_json: Json = False,
) -> None:
    """Distil an ancestry (teacher) ViT into a learngene: weight templates for every size (with
    per-epoch metrics beside it, <out stem>.metrics.csv)."""
    from waveinit.io.storage import check_writable
    from waveinit.spec import resized
    from waveinit.tasks import distill as run_distill

    from .display import TrainingDisplay

    check_data_name(data)
    check_writable(out)
    refuse_existing(out, force or _resumable(out, resume))
    n_threads = use_threads(threads)
    teacher_model, teacher_path = _teacher(teacher, teacher_heads, revision)
    if image_size is None and teacher_model is not None and data.startswith("folder:"):
        image_size = teacher_model.spec.image_size  # an image folder comes at the teacher's image size
    dataset = load_data(data, data_dir=data_dir, subset=subset, seed=seed, image_size=image_size, augment=augment, auto_augment=aa,
                        skip_bad_images=skip_bad_images)
    if teacher_model is None:
        teacher_model = _default_ancestry(dataset, epochs, batch_size, seed, device, resume, workers, depth, width, heads, side)
    t = teacher_model.spec
    aux_spec = resized(t.plain(), depth, width, heads, side=side)  # the teacher's shape unless told; a DeiT's token stays with it
    others = ()
    if sizes is not None:
        from waveinit.sizes import parse_sizes

        if depth is not None or width is not None:
            raise WaveError("--sizes lists the auxiliary sizes: leave out --depth and --width")
        specs = sorted((resized(t.plain(), s.depth, s.width, s.heads or heads, side=side) for s in parse_sizes(sizes, t.plain(), side)),
                       key=lambda spec: -spec.num_params())
        aux_spec, others = specs[0], tuple(specs[1:])
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, checkpoint_every=checkpoint_every,
                         compile=compile_model,
                         **recipe(smoothing, mixup, cutmix, mixup_prob, mixup_switch_prob, reprob, drop_path, model_ema, model_ema_decay))
    distill_config = DistillConfig(temperature=temperature, kd_weight=kd_weight, side=side, templates=templates, cache_teacher=cache,
                                   order=kron_order, templated=templated)
    auxiliaries = ", ".join(f"{s.depth}x{s.width}" for s in (aux_spec, *others))
    echo(f"distilling {teacher_path} ({t.depth}x{t.width}) into {templates} templates of {side}x{side} per role, "
         f"auxiliary model{'s' if others else ''} {auxiliaries}, on {dataset.describe()}")
    with TrainingDisplay("distill") as display:
        result = run_distill(teacher_model, dataset, aux_spec, config, distill_config, out=out, device=device, resume=resume,
                             on_progress=TrainingDisplay.callback_for_main_process(display),
                             provenance={"teacher": str(teacher_path), "threads": n_threads}, workers=workers, log_dir=log_dir, sizes=others)
    _distilled(result, out, teacher_path, aux_spec, n_threads, as_json)


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


def _default_ancestry(dataset, epochs, batch_size, seed, device, resume, workers, depth, width, heads, side):
    """`wave distill` without --teacher and without runs/ancestry.safetensors: train that ancestry first."""
    import dataclasses

    from waveinit.spec import resized
    from waveinit.tasks import load_vit, spec_for, train_ancestry

    from .display import TrainingDisplay

    recipe = dataclasses.replace(_ANCESTRY, epochs=epochs)
    resized(spec_for(dataset, recipe.depth, recipe.width), depth, width, heads, side=side)  # bad options fail now, not after the ancestry
    echo(f"no --teacher given and none at {DEFAULT_ANCESTRY}: training a {recipe.depth}x{recipe.width} ancestry on {dataset.name} first")
    with TrainingDisplay("ancestry") as display:
        train_ancestry(dataset, recipe, out=DEFAULT_ANCESTRY, batch_size=batch_size, seed=seed, device=device, resume=resume,
                       on_progress=TrainingDisplay.callback_for_main_process(display), provenance={"made_by": "wave distill"}, workers=workers)
    return load_vit(DEFAULT_ANCESTRY.resolve())[0]


FIT = "Scaler fit"


@app.command()
@handles_errors
def spawn(
    depth: Annotated[Optional[int], typer.Option(help="Blocks of the new model.", rich_help_panel=MODEL)] = None,
    width: Annotated[Optional[int], typer.Option(help="Width of the new model (a multiple of the template side).", rich_help_panel=MODEL)] = None,
    heads: Heads = None,
    size: Annotated[Optional[str], typer.Option(help=(
        "A size by timm's name: vit_tiny (12 blocks, 192 wide, 3 heads), vit_small (12/384/6), vit_base (12/768/12), "
        "vit_large (24/1024/16); --depth, --width and --heads override its parts."), rich_help_panel=MODEL)] = None,
    params: Annotated[Optional[int], typer.Option(min=1, help=(
        "A parameter budget: the depth and width (a multiple of the template side) whose model is nearest it, for the "
        "learngene's data shape; the choice is printed."), rich_help_panel=MODEL)] = None,
    learngene: Annotated[Path, typer.Option(rich_help_panel=MODEL, help=(
        "Learngene file (made by `wave distill`), its Hub folder (wave export --format hub), a Hub id (ORG/NAME, "
        "hf-hub:ORG/NAME[@REVISION], through the Hugging Face cache), or the name of one that ships with waveinit: fashion-mnist."))] = DEFAULT_LEARNGENE,
    data: Annotated[Optional[str], typer.Option(help="Data to fit on: digits, fashion-mnist, idx:DIR or folder:DIR (default: the learngene's).",
                                                rich_help_panel=DATA)] = None,
    data_dir: DataDir = None,
    patch: Annotated[Optional[int], typer.Option(help="Patch side, for data of another image size (default: the learngene's).",
                                                 rich_help_panel=MODEL)] = None,
    depth_rule: Annotated[str, typer.Option(help=(
        "Which learngene layers a target layer starts from: relative (same relative depth), first (the first layers), even "
        "(evenly spaced, first and last included), interpolate (blends neighbouring layers), or choose (the one of these with the "
        "lowest loss on the fit's first batches; needs the fit). docs/bench/ablations.md compares them."),
        rich_help_panel=MODEL)] = _SPAWN.depth_rule,
    width_rule: Annotated[str, typer.Option(help=(
        "How a narrower model's scalers are made: pick (evenly spaced blocks), mean (averaged blocks), or project (weight "
        "selection of the learngene's weights, projected onto its templates by least squares)."), rich_help_panel=MODEL)] = _SPAWN.width_rule,
    fit_steps: Annotated[int, typer.Option(min=1, help="Optimizer steps of the scaler fit, at most (see --fit-patience).",
                                           rich_help_panel=FIT)] = _SPAWN.fit_steps,
    fit_patience: Annotated[int, typer.Option(min=0, help=(
        "Stop the fit once the loss on its held-out fifth has not fallen for this many epoch ends of its images (0: run all "
        "--fit-steps)."), rich_help_panel=FIT)] = _SPAWN.fit_patience,
    fit_keep: Annotated[str, typer.Option(help=(
        "last: the scalers after the fit's last step; best: after the epoch of fit images with the lowest loss on the held-out fifth."),
        rich_help_panel=FIT)] = _SPAWN.fit_keep,
    fit_samples: Annotated[int, typer.Option(min=1, help=(
        "Training images the fit draws; a fifth is held out, and the fit keeps the data-free start unless it lowered the loss there."),
        rich_help_panel=FIT)] = _SPAWN.fit_samples,
    batch_size: BatchSize = _SPAWN.batch_size,
    lr: Annotated[float, typer.Option(min=0.0, help="Learning rate of the scaler fit.", rich_help_panel=FIT)] = _SPAWN.lr,
    teacher: Annotated[Optional[str], typer.Option(help=(
        "Ancestry to distil from while fitting: a model file or folder, hf-hub:ORG/NAME, or 'recorded' (the ancestry the learngene "
        "records, which must be on this machine). Default: none, the fit trains on labels alone (the same model on every machine). "
        "With the ancestry the fit is better: docs/bench/ablations.md, stage 5."),
        rich_help_panel=FIT)] = None,
    no_fit: Annotated[bool, typer.Option("--no-fit", help="Data-free: scalers resampled from the learngene, no data used.",
                                         rich_help_panel=FIT)] = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = None,
    compile_model: Compile = False,
    out: Annotated[Optional[Path], typer.Option(help="Model file to write (default: runs/{learngene stem}_d{D}_w{W}.safetensors).",
                                                rich_help_panel=RUN)] = None,
    sizes: Annotated[Optional[str], typer.Option(help=(
        "A family: several sizes in one run, comma-separated, mixing DxW, DxWxH, timm names and parameter budgets "
        "(2x64,vit_tiny,6x384,5M); one model file each in --out-dir, and the family table in family.csv and family.json."),
        rich_help_panel=MODEL)] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="--sizes: the family's folder (default: runs/{learngene stem}-family).",
                                                    rich_help_panel=RUN)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="--sizes: keep the sizes an interrupted family finished and spawn the rest.",
                                         rich_help_panel=RUN)] = False,
    force: Force = False,
    image_size: Annotated[Optional[int], typer.Option(min=1, help="folder:DIR: resize images to this side (default: the learngene's).",
                                                      rich_help_panel=DATA)] = None,
    workers: Workers = 0,
    as_json: Json = False,
) -> None:
    """Initialise a ViT of any depth and width (or a family of sizes, --sizes) from a learngene and save it as a plain model file."""
    import time

    from waveinit.api import plan_spawn, run_spawn
    from waveinit.io.files import save_model
    from waveinit.io.storage import check_writable

    from .display import TrainingDisplay

    start = time.perf_counter()
    check_data_name(data)
    config = SpawnConfig(depth_rule=depth_rule, width_rule=width_rule, fit_steps=fit_steps, fit_keep=fit_keep, fit_patience=fit_patience,
                         fit_samples=fit_samples, batch_size=batch_size, lr=lr, seed=seed, compile=compile_model)
    if sizes is not None:
        given = [name for name, value in (("--depth", depth), ("--width", width), ("--size", size), ("--params", params), ("--out", out))
                 if value is not None]
        if given:
            raise WaveError(f"--sizes lists the family's sizes and --out-dir its folder: drop {', '.join(given)}")
        from .tools import spawn_family_command

        spawn_family_command(learngene, sizes, out_dir, config, data=data, data_dir=data_dir, patch=patch, image_size=image_size, teacher=teacher,
                      fit=not no_fit, device=device, threads=threads, force=force, resume=resume, workers=workers, as_json=as_json)
        return
    if resume:
        raise WaveError("--resume continues a family (--sizes): a single spawn has nothing to resume; drop --resume")
    depth, width, heads = _target_size(learngene, depth, width, heads, size, params)
    from waveinit.family import model_name

    out = out or Path("runs") / model_name(str(learngene), depth, width)
    check_writable(out)
    refuse_existing(out, force)
    n_threads = None if no_fit else use_threads(threads)
    plan = plan_spawn(learngene, depth, width, heads, data=data, data_dir=data_dir, patch=patch, fit=not no_fit, config=config,
                      teacher=teacher, device=device, image_size=image_size)
    with TrainingDisplay("fit scalers", count="steps") as display:
        model = run_spawn(plan, on_progress=display.update if is_main_process() and not no_fit else None, on_note=echo, workers=workers)
    spec, p = model.spec, {**model.provenance, **({"threads": n_threads} if n_threads else {})}
    if is_main_process():
        save_model(out, model.state_dict, spec, p)
        _spawn_table(spec, p, no_fit, time.perf_counter() - start)
        echo(f"model saved to {out}")
    if as_json:
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
        count = gene.spec.replace(depth=d, width=w, heads=max(1, w // 64)).num_params()
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
from .bench import bench  # noqa: E402

app.command("bench")(bench)
