"""`wave eval`, `wave inspect`, `wave export`: look at, score and hand on the files WAVE makes.

The library does the work (`tasks`, `io.inspect`, `io.hf`); this module parses options and
renders tables. torch is imported only by `eval`, inside it, so `wave --help` stays fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from waveinit.configs import EVAL_BATCH_SIZE, TrainConfig
from waveinit.errors import WaveError

from .common import check_data_name, console, echo, handles_errors, load_data, print_json, refuse_existing, use_threads
from .jobs import DataOptions, RunOptions
from .options import annotated

# The options these commands share with train, distill and spawn: the same fields (cli/jobs.py).
DataDir, ImageSize, Workers = (annotated(DataOptions, name) for name in ("data_dir", "image_size", "workers"))
SkipBadImages = annotated(DataOptions, "skip_bad_images")
Device, Threads, Force, Json = (annotated(RunOptions, name) for name in ("device", "threads", "force", "as_json"))
BatchSize = annotated(TrainConfig, "batch_size")
Revision = Annotated[Optional[str], typer.Option(help="Hub models: the branch, tag or commit to use (default: main).")]

EXPORT_FORMATS = ("hf", "timm", "hub")  # --format choices of `wave export` (hub: a learngene's)

ModelPath = Annotated[str, typer.Argument(help=(
    "A model file, a timm-keyed safetensors ViT, a Hugging Face or timm folder, or a Hub model: ORG/NAME or hf-hub:ORG/NAME[@REVISION]."),
    show_default=False)]
ModelHeads = Annotated[Optional[int], typer.Option(help="Heads of a plain safetensors ViT (default: width / 64; model files and HF folders know theirs).")]


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


# ----------------------------------------------------------------------------- eval

@handles_errors
def eval_model(
    model: ModelPath,
    data: Annotated[Optional[str], typer.Option(
        help="Dataset: digits, fashion-mnist, idx:DIR or folder:DIR; default: the data the model was trained on, else digits.")] = None,
    data_dir: DataDir = None,
    heads: ModelHeads = None,
    revision: Revision = None,
    batch_size: BatchSize = EVAL_BATCH_SIZE,
    device: Device = "auto",
    threads: Threads = None,
    image_size: ImageSize = None,
    workers: Workers = 0,
    skip_bad_images: SkipBadImages = False,
    as_json: Json = False,
) -> None:
    """Score a model on a dataset's test set: accuracy and mean cross-entropy."""
    from waveinit.tasks import check_fits, load_vit
    from waveinit.training.evaluation import evaluate

    check_data_name(data)
    n_threads = use_threads(threads)
    vit, provenance = load_vit(model, heads=heads, revision=revision)
    name = data or provenance.get("data") or "digits"
    try:
        folder = name.startswith("folder:")
        dataset = load_data(name, data_dir=data_dir, image_size=image_size or (vit.spec.image_size if folder else None),
                            skip_bad_images=skip_bad_images)
    except WaveError as e:
        if data is None:  # the name came from the file: say so, and how to override it
            raise WaveError(f"{e} (the data recorded in {model}): pass --data") from None
        raise
    check_fits(vit.spec, dataset, f"model {model}")
    result = evaluate(vit, dataset.test_images, dataset.test_labels, batch_size, device, workers)
    report = {**result, "data": dataset.name, "model": str(model), "spec": vit.spec.to_dict(), "threads": n_threads}
    if as_json:
        print_json(report)
        return
    from rich.table import Table

    # Paths stay out of the table (a narrow terminal would cut them mid-word): lines before it.
    out = _stdout_console()
    out.print(f"model: {model}", soft_wrap=True)
    out.print(f"data: {dataset.name} (test set)", soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("accuracy", f"{100 * result['accuracy']:.2f}%")
    table.add_row("loss", f"{result['loss']:.4f}")
    table.add_row("samples", f"{result['samples']:,}")
    table.add_row("spec", _spec_text(vit.spec.to_dict()))
    out.print(table)


# ----------------------------------------------------------------------------- inspect

@handles_errors
def inspect(
    file: Annotated[str, typer.Argument(help=(
        "A learngene, model file, training checkpoint (.ckpt), safetensors file, Hugging Face or timm folder, "
        "or a Hub model (ORG/NAME, hf-hub:ORG/NAME[@REVISION])."), show_default=False)],
    revision: Revision = None,
    as_json: Json = False,
) -> None:
    """Show what a file holds: its kind, format, model spec, templates and scalers, tensors, provenance."""
    from waveinit.io.inspect import describe

    info = describe(file, revision)
    if as_json:
        print_json(info)
    else:
        _render(info)


# ----------------------------------------------------------------------------- rendering

def _spec_text(spec: dict | None) -> str:
    if not spec:
        return "-"
    c = spec
    heads = f"{c['heads']} head" + ("s" if c["heads"] != 1 else "")
    deit = ", DeiT distillation token" + (" and head" if c.get("head_dist") else "") if c.get("dist_token") else ""
    return (f"depth {c['depth']}, width {c['width']}, {heads}, patch {c['patch_size']}, "
            f"{c['channels']}x{c['image_size']}x{c['image_size']} images, {c['num_classes']} classes, "
            f"LayerNorm eps {c.get('layer_norm_eps', 1e-6):g}{deit}")


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _shape(shape) -> str:
    return str(tuple(shape))


def _render(info: dict) -> None:
    from rich.table import Table

    console = _stdout_console()
    console.print(f"file: {info['path']}", soft_wrap=True)  # outside the table: a narrow terminal would cut it mid-word
    summary = Table(show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("kind", info["kind"])
    version = info.get("format_version")
    summary.add_row("format", f"{info['format'] or '-'}" + (f", version {version}" if version is not None else ""))
    summary.add_row("auxiliary model" if info["kind"] == "learngene" else "model", _spec_text(info.get("spec")))
    if info.get("parameters"):
        summary.add_row("parameters", f"{info['parameters']:,}")
    if info["kind"] == "learngene":
        summary.add_row("template side", str(info["side"]))
        summary.add_row("Kronecker order", {"st": "kron(S, T)", "ts": "kron(T, S)"}[info["kron_order"]])
        summary.add_row("template parameters", f"{info['template_params']:,}")
        summary.add_row("scaler parameters", f"{info['scaler_params']:,} (the auxiliary model's)")
        if info["dense_params"]:
            summary.add_row("dense parameters", f"{info['dense_params']:,} (the auxiliary's roles that are not templated)")
    if "checkpoint" in info:
        c = info["checkpoint"]
        summary.add_row("task", str(c["task"]))
        state = "complete" if c["complete"] else "in progress"
        summary.add_row("position", f"step {c['global_step']} of {c['total_steps']}, {c['epochs_done']} of {c['epochs']} epochs done ({state})")
        last = c["history"][-1].get("eval") if c["history"] else None
        if last:
            summary.add_row("last test accuracy", f"{100 * last['accuracy']:.2f}% (loss {last['loss']:.4f})")
    summary.add_row("tensors", f"{len(info['tensors'])} ({_bytes(info['tensor_bytes'])})")
    if info.get("note"):
        summary.add_row("note", info["note"])
    console.print(summary)

    if info["kind"] == "learngene":
        console.print(_roles_table(info["roles"]))
    else:
        console.print(_tensor_table(info["tensors"]))
    if info.get("provenance"):
        prov = Table(title="provenance", show_header=False)
        prov.add_column(style="bold")
        prov.add_column(overflow="fold")
        for key, value in info["provenance"].items():
            prov.add_row(key, value if isinstance(value, str) else json.dumps(value))
        console.print(prov)


def _roles_table(roles: dict):
    from rich.table import Table

    table = Table(title="templates and scalers per role (N templates; shapes of one term)")
    table.add_column("role", no_wrap=True)
    for name, justify in (("N", "right"), ("template", "right"), ("scaler", "right"), ("per\nlayer", "center"),
                          ("template\nparams", "right"), ("scaler\nparams", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for role, r in roles.items():
        table.add_row(role, str(r["templates"]), _shape(r["template_shape"]), _shape(r["scaler_shape"]),
                      "yes" if r["per_layer"] else "no", f"{r['template_params']:,}", f"{r['scaler_params']:,}")
    return table


def _tensor_table(tensors: list[dict]):
    """Tensors grouped by name with numbers as `*` (blocks.*.attn.qkv.weight), so a deep model reads in one screen."""
    from rich.table import Table

    groups: dict[str, list[dict]] = {}
    for t in tensors:
        groups.setdefault(re.sub(r"(?<![^.])\d+(?![^.])", "*", t["name"]), []).append(t)
    table = Table(title="tensors")
    table.add_column("name", overflow="fold")
    for name, justify in (("count", "right"), ("shape", "right"), ("dtype", "left"), ("bytes", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for pattern, members in groups.items():
        shapes = {tuple(m["shape"]) for m in members}
        dtypes = {m["dtype"] for m in members}
        table.add_row(
            pattern if len(members) > 1 else members[0]["name"],
            str(len(members)),
            _shape(members[0]["shape"]) if len(shapes) == 1 else "various",
            dtypes.pop() if len(dtypes) == 1 else "various",
            _bytes(sum(m["bytes"] for m in members)),
        )
    return table


# ----------------------------------------------------------------------------- export

@handles_errors
def export(
    model: ModelPath,
    fmt: Annotated[str, typer.Option("--format", help=(
        "hf: a folder for transformers' ViTForImageClassification (config.json with the class names as id2label, "
        "model.safetensors, preprocessor_config.json); timm: a folder timm.create_model('local-dir:DIR') loads "
        "(config.json with architecture and model_args, model.safetensors); hub: a learngene's folder for "
        "huggingface_hub.upload_folder (learngene.safetensors, config.json, a model card README.md)."))] = "hf",
    out: Annotated[Optional[Path], typer.Option(help="Folder to write (default: MODEL's name with -hf, -timm or -hub, next to it).")] = None,
    heads: ModelHeads = None,
    revision: Revision = None,
    grey_as_rgb: Annotated[bool, typer.Option(help=(
        "--format hf: a grey (1-channel) model gets a 3-channel patch embedding (each channel the weight / 3: the same on grey "
        "images), since transformers' pipeline converts every image to RGB; --no-grey-as-rgb keeps one channel."))] = True,
    license: Annotated[str, typer.Option(help="--format hub: the model card's license (a Hub license id; other: see the card).")] = "other",
    repo_id: Annotated[Optional[str], typer.Option(help="--format hub: the Hub id it will be uploaded to (ORG/NAME), for the card's "
                                                        "commands.")] = None,
    force: Force = False,
) -> None:
    """Write a model for other frameworks (a Hugging Face (transformers) or a timm folder), or a learngene for the Hub."""
    from waveinit.io.files import load_model
    from waveinit.io.hf import architecture, save_hf
    from waveinit.io.timm import architecture_name, save_timm

    if fmt not in EXPORT_FORMATS:
        raise WaveError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    out = out or Path(f"{str(model).rstrip('/').removesuffix('.safetensors')}-{fmt}")
    if out.is_dir():  # a file there is refused as not a folder
        refuse_existing(out, force)
    if fmt == "hub":
        _export_learngene(model, out, license, repo_id)
        return
    model_file = load_model(model, heads=heads, revision=revision)
    p, spec = model_file.provenance, model_file.spec
    labels = p.get("labels") if isinstance(p.get("labels"), list) and len(p["labels"]) == spec.num_classes else None
    provenance, pixel_max = {**p, "exported_from": str(model)}, float(p.get("pixel_max", 255.0))
    if fmt == "hf":
        save_hf(out, model_file.state_dict, spec, provenance, labels=labels, pixel_max=pixel_max, rgb=grey_as_rgb)
    else:
        save_timm(out, model_file.state_dict, spec, provenance, labels=labels, pixel_max=pixel_max)
    named = "class names from the model's data" if labels else "classes without names"
    if fmt == "hf":
        how = (f"load it with transformers.{architecture(spec)}.from_pretrained({str(out)!r}) (or AutoModelForImageClassification), "
               f"and its preprocessing with AutoImageProcessor")
    else:
        how = f"load it with timm.create_model('local-dir:{out}', pretrained=True) ({architecture_name(spec)} with model_args)"
    console().print(f"exported {model} ({spec.depth}x{spec.width}, {named}) to {out}: {how}", highlight=False, soft_wrap=True)


def _export_learngene(learngene: str, out: Path, license: str, repo_id: str | None) -> None:
    from waveinit.io.files import learngene_path
    from waveinit.io.share import export_learngene
    from waveinit.io.storage import LEARNGENE_FORMAT, read_metadata

    path = learngene_path(learngene)
    if path.is_dir() or read_metadata(path).get("format") != LEARNGENE_FORMAT:
        raise WaveError(f"{learngene} is not a learngene: --format hub exports learngenes (models export as hf or timm)")
    export_learngene(path, out, license=license, repo_id=repo_id)
    where = repo_id or "ORG/NAME"
    console().print(f"exported the learngene {learngene} to {out}: upload it with huggingface_hub.upload_folder(folder_path={str(out)!r}, "
                    f"repo_id={where!r}), then spawn with wave spawn --learngene hf-hub:{where}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- spawn --sizes

def spawn_family_command(learngene: Path, sizes: str, out_dir: Path | None, config, *, fit: bool, threads, force: bool, resume: bool,
                  as_json: bool, **options) -> None:
    """`wave spawn --sizes`: the family, its table on screen and beside the models (`waveinit.spawn_family`)."""
    from waveinit.family import spawn_family
    from waveinit.io.files import load_learngene
    from waveinit.sizes import parse_sizes

    gene = load_learngene(learngene)
    wanted = parse_sizes(sizes, gene.spec, gene.side)  # a bad list fails before anything runs
    out_dir = out_dir or Path(f"runs/{learngene.name.removesuffix('.safetensors')}-family")
    n_threads = use_threads(threads) if fit else None
    echo(f"spawning {len(wanted)} sizes from {learngene} into {out_dir}: {', '.join(f'{s.asked} ({s.depth}x{s.width})' for s in wanted)}")
    family = spawn_family(gene, wanted, out_dir, config=config, fit=fit, force=force, resume=resume, name=str(learngene),
                          on_size=lambda row: echo(f"{row['size']}: {row['depth']}x{row['width']} saved to {out_dir / row['file']} "
                                                   f"({row['seconds']:.1f} s)"), **options)
    _family_table(family.rows, fit)
    echo(f"{family.ran} sizes spawned, {len(family.rows) - family.ran} kept from before; table in {out_dir / 'family.csv'}")
    if as_json:
        print_json({"command": "spawn", "out_dir": str(out_dir), "learngene": str(learngene), "threads": n_threads, "sizes": family.rows})


def _family_table(rows: list[dict], fit: bool) -> None:
    from rich.table import Table

    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    table = Table(title="the family" + (" (accuracy % on the fit's held-out images)" if fit else " (data-free: no data used)"))
    auxiliaries = any(r["auxiliary"] for r in rows)  # distilled through several sizes: which one each started from
    columns = ("size", "DxW", "params", *(("from",) if auxiliaries else ()), "data-free", "fitted", "kept", "s")
    for column in columns:
        table.add_column(column, justify="left" if column in ("size", "kept") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["size"], f"{r['depth']}x{r['width']}", f"{r['params']:,}", *((r["auxiliary"],) if auxiliaries else ()),
                      pct(r["data_free_accuracy"]), pct(r["fitted_accuracy"]), r["kept"], f"{r['seconds']:.1f}")
    console().print(table)
