"""`waveinit.spawn`: a ViT of any depth and width from a learngene, in one call.

It joins the pure spawn rule (`spawning.py`) to files and data (`io/`) and, when the scalers
are fitted, to the PyTorch step behind `wave spawn` (`tasks.fit_scalers`). torch is imported
only when a fit needs it, so `fit=False` works with NumPy alone.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

from .configs import SpawnConfig
from .errors import WaveError
from .io.datasets import Dataset, load_dataset
from .io.files import load_learngene
from .keys import ModelFile
from .learngene import Learngene, size_name
from .spawning import fresh_roles, spawn_state_dict, target_spec
from .spec import HEAD_ROLES, ViTSpec

_FIT = SpawnConfig()  # the fit's defaults
TEACHER_RECORDED = "recorded"  # teacher=: the learngene's recorded ancestry, which must be on this machine


@dataclass(frozen=True)
class SpawnPlan:
    """A spawn resolved once, by `plan_spawn`: everything `run_spawn` needs, in memory. Nothing
    about it depends on which other files happen to exist."""

    learngene: Learngene
    spec: ViTSpec  # the model to make
    data: Dataset | None  # the fit's data; None without a fit and without data
    fit: bool  # False: the data-free rule alone
    config: SpawnConfig  # the fit's settings (and the seed of fresh factors)
    teacher: object | None  # the ancestry the fit distils from (a torch ViT), or None: labels alone
    teacher_name: str | None
    refresh: frozenset  # roles started afresh beyond those the data's shape forces (the classifier, for other data)
    device: str
    notes: tuple[str, ...]  # one line per role started afresh, and for a fit without a teacher
    provenance: dict  # what the spawned model records of its inputs


def spawn(learngene: Learngene | str | os.PathLike, depth: int, width: int, *, config: SpawnConfig = _FIT, data: str | Dataset | None = None,
          teacher: str | os.PathLike | None = None, on_progress: Callable | None = None, **options) -> ModelFile:
    """A ViT of any depth and width from a learngene: the Python form of `wave spawn`
    (`plan_spawn`, then `run_spawn`).

    Scalers of the target's shapes start from the data-free rule (`spawning.py`; the rules are
    `config.depth_rule` and `config.width_rule`); with a fit (the default), they are fitted for
    up to `config.fit_steps` steps on `config.fit_samples` training images of `data` (default:
    the learngene's data) with the templates frozen. The fit distils from `teacher` when one is
    given (a model file, folder or hub name, or "recorded": the ancestry the learngene records,
    which must then be on this machine); by default it has none and trains on the labels alone,
    so the same call gives the same model on any machine. A fifth of the fit's images is held
    out: the fit keeps its start unless it lowered the cross-entropy there. The fit needs
    PyTorch; `fit=False` needs no data and no PyTorch. Returns the dense weights (timm keys,
    float32 NumPy), spec and provenance (with the test accuracy after a fit);
    `waveinit.save_model` writes them.

    `options`: any field of `SpawnConfig` (fit_steps=, lr=, seed=, ...: `config` with those
    replaced), `plan_spawn`'s (heads, data_dir, patch, fit, device, image_size, fresh_head) and
    `run_spawn`'s (on_note, workers). The model keeps the learngene's image size and channels:
    an image folder (`folder:DIR`) is read at the learngene's size unless `image_size` says
    otherwise. Roles that must start afresh (other image size, channels, patch or classes) and a
    fit without a teacher are explained in one line each to `on_note` (and kept in the
    provenance's "notes").

    `on_progress` receives the training engine's `Progress` report (`waveinit.training.engine`:
    step, total_steps, loss, images_per_second, seconds_left, ...) about twice a second during
    the fit; `waveinit.io.progress.ProgressLines("spawn", count="steps")` prints them as lines.
    """
    fields = {f.name for f in dataclasses.fields(SpawnConfig)}
    config = dataclasses.replace(config, **{k: options.pop(k) for k in list(options) if k in fields})
    run = {k: options.pop(k) for k in ("on_note", "workers") if k in options}
    unknown = sorted(set(options) - set(inspect.signature(plan_spawn).parameters))
    if unknown:
        raise TypeError(f"spawn() got an unexpected keyword argument {unknown[0]!r} (not a SpawnConfig field nor plan_spawn's)")
    plan = plan_spawn(learngene, depth, width, data=data, config=config, teacher=teacher, **options)
    return run_spawn(plan, on_progress=on_progress, **run)


def plan_spawn(
    learngene: Learngene | str | os.PathLike,
    depth: int,
    width: int,
    heads: int | None = None,
    *,
    data: str | Dataset | None = None,
    data_dir: str | None = None,
    patch: int | None = None,
    fit: bool = True,
    config: SpawnConfig = _FIT,
    teacher=None,
    teacher_name: str | None = None,
    fresh_head: bool | None = None,
    device: str = "auto",
    image_size: int | None = None,
) -> SpawnPlan:
    """Resolve a spawn once (`spawn`'s arguments, the fit's in `config`): the learngene, data
    and teacher loaded, the target's spec, the roles to start afresh. `teacher` may also be a
    torch ViT already in memory (named `teacher_name`); `fresh_head` says whether the classifier
    starts afresh (default: when the data is not the learngene's recorded data, since other data
    means other classes even with as many of them)."""
    source = "(in memory)" if isinstance(learngene, Learngene) else str(learngene)
    gene = learngene if isinstance(learngene, Learngene) else load_learngene(learngene)
    recorded = data is None
    data_name = data.name if isinstance(data, Dataset) else (data or gene.provenance.get("data", "digits"))
    dataset = data if isinstance(data, Dataset) else None
    if dataset is None and (fit or data is not None or image_size is not None):
        dataset = _load(data_name, recorded, source, data_dir=data_dir, seed=config.seed, image_size=image_size, gene=gene)
    if not fit and config.depth_rule == "choose":
        raise WaveError("the depth rule 'choose' scores candidates on the fit's data: drop --no-fit (fit=False), or pick a fixed depth rule")
    if not fit and str(device) not in ("auto", "cpu"):
        _check_device(device)
    spec = target_spec(gene, depth, width, heads, **_data_shape(gene, dataset, patch))
    if fresh_head is None:
        fresh_head = gene.provenance.get("data", data_name) != data_name
    refresh = HEAD_ROLES if fresh_head else frozenset()
    notes = refresh_reasons(gene, spec, refresh, data_name)
    teacher_model = None
    if fit:
        teacher_model, teacher_name, why = _teacher(teacher, teacher_name, gene, dataset)
        if teacher_model is None:
            notes.append(f"fitting without a teacher (cross-entropy on labels only): {why}")
    provenance = {"learngene": source, "data": data_name, "seed": config.seed, "depth_rule": config.depth_rule, "width_rule": config.width_rule,
                  **_labels(gene, dataset)}
    if gene.auxiliaries:  # distilled through several sizes: the scalers this model starts from
        provenance["auxiliary"] = size_name(gene.source_for(spec).spec)
    return SpawnPlan(gene, spec, dataset, fit, config, teacher_model, teacher_name, refresh, device, tuple(notes), provenance)


def run_spawn(plan: SpawnPlan, *, on_progress: Callable | None = None, on_note: Callable[[str], None] | None = None,
              workers: int = 0) -> ModelFile:
    """The model a plan describes: the data-free rule, and the fit if the plan has one."""
    notes = list(plan.notes)
    for line in notes:
        if on_note is not None:
            on_note(line)
    if not plan.fit:
        state, fresh = spawn_state_dict(plan.learngene, plan.spec, plan.config.seed, plan.refresh, plan.config.depth_rule, plan.config.width_rule)
        return ModelFile(state, plan.spec, {**plan.provenance, "init": "wave-nofit", "fresh_roles": sorted(fresh), "notes": notes})
    from .backends.torch import dense_numpy
    from .tasks import fit_scalers

    result = fit_scalers(plan.learngene, plan.spec, plan.data, plan.config, teacher=plan.teacher, teacher_name=plan.teacher_name,
                         refresh=plan.refresh, device=plan.device, on_progress=on_progress, workers=workers)
    notes.append(result.judgement())
    if on_note is not None:
        on_note(notes[-1])
    return ModelFile(dense_numpy(result.model.state_dict()), plan.spec, {
        **plan.provenance,
        "init": "wave",
        "depth_rule": result.depth_rule,
        **({"depth_losses": result.depth_losses} if result.depth_losses else {}),
        "fit_steps": result.steps,
        "fit_stopped": result.stopped,
        **({"fit_best_step": result.best_step} if result.best_step is not None else {}),
        "fit_samples": result.samples,
        "fitted_params": result.fitted_params,
        "teacher": result.teacher,
        "fresh_roles": sorted(result.fresh_roles),
        "fit_kept": result.kept,
        "fit_holdout": result.holdout,
        "test_accuracy": result.eval["accuracy"],
        "test_loss": result.eval["loss"],
        "test_samples": result.eval["samples"],
        "notes": notes,
        "seconds": result.seconds,
    })


def _data_shape(gene: Learngene, dataset: Dataset | None, patch: int | None) -> dict:
    """The target's data fields: the data's images and classes (the learngene's without data)."""
    if dataset is None:
        return {"patch_size": patch}
    if patch is None and dataset.image_size % gene.spec.patch_size:
        raise WaveError(
            f"the learngene's patch size {gene.spec.patch_size} does not divide the {dataset.image_size}x{dataset.image_size} "
            f"images of {dataset.name}: pass --patch (patch=) with a divisor of {dataset.image_size}"
        )
    return {"patch_size": patch, "image_size": dataset.image_size, "channels": dataset.channels, "num_classes": dataset.num_classes}


def _labels(gene: Learngene, dataset: Dataset | None) -> dict:
    """The class names and pixel scale the model records: the data's, else the learngene's."""
    if dataset is None:
        return {k: gene.provenance[k] for k in ("labels", "pixel_max") if k in gene.provenance}
    return {**({"labels": list(dataset.class_names)} if dataset.class_names is not None else {}), "pixel_max": dataset.pixel_max}


def _teacher(teacher, name: str | None, gene: Learngene, data: Dataset):
    """(model, name, why there is none) of the fit's teacher: see `plan_spawn`."""
    try:
        from .tasks import resolve_teacher
    except ImportError as e:
        raise WaveError(f"fitting scalers needs PyTorch ({e.name} is missing): pip install 'waveinit[cli]', or spawn with fit=False") from None
    return resolve_teacher(teacher, name, gene, data)


def refresh_reasons(gene: Learngene, target: ViTSpec, refresh, data_name: str) -> list[str]:
    """One line per reason a role of the spawned model starts afresh instead of from the learngene
    (`spawning.fresh_roles`), the roles sharing a reason on one line."""
    reasons = fresh_roles(gene.spec, target)
    if refresh:
        other = f"{data_name} is not the learngene's data ({gene.provenance.get('data')}), so its classes mean other things"
        reasons.update({role: other for role in sorted(refresh) if role not in reasons})
    grouped: dict[str, list[str]] = {}
    for role, why in reasons.items():
        name = "the classifier (head)" if role in HEAD_ROLES else role.split(".")[0]
        if name not in grouped.setdefault(why, []):
            grouped[why].append(name)
    return [f"starting {' and '.join(names)} afresh: {why}" for why, names in grouped.items()]


def _load(name: str, recorded: bool, source: str, *, gene: Learngene, image_size: int | None, **options) -> Dataset:
    """The data to fit on; an image folder at the learngene's image size and channels unless told.
    A name read from the learngene that does not load says where it came from."""
    folder = name.startswith("folder:")
    try:
        return load_dataset(name, image_size=image_size or (gene.spec.image_size if folder else None),
                            channels=gene.spec.channels if folder and gene.spec.channels == 3 else None, **options)
    except WaveError as e:
        if recorded:
            raise WaveError(f"{e} (the data recorded in the learngene {source}): pass --data (data=)") from None
        raise


def _check_device(device: str) -> None:
    """A device that is not there is an error even when nothing runs on it (a no-fit spawn)."""
    try:
        from .training.distributed import resolve_device
    except ImportError:
        raise WaveError(f"device {device} needs PyTorch, and a spawn without a fit runs on NumPy: drop --device") from None
    resolve_device(device)
