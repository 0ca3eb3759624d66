"""`waveinit.spawn`: a ViT of any depth and width from a learngene, in one call.

It joins the pure spawn rule (`spawning.py`) to files and data (`io/`) and, when the scalers
are fitted, to the PyTorch step behind `wave spawn` (`tasks.fit_scalers`). torch is imported
only when a fit needs it, so `fit=False` works with NumPy alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .configs import SpawnConfig
from .errors import WaveError
from .io.datasets import Dataset, load_dataset
from .io.files import load_learngene
from .keys import ModelFile
from .learngene import Learngene
from .spawning import spawn_state_dict, target_spec
from .spec import HEAD_ROLES, ViTSpec

_FIT = SpawnConfig()  # the fit's defaults


def spawn(
    learngene: Learngene | str | os.PathLike,
    depth: int,
    width: int,
    heads: int | None = None,
    *,
    data: str | Dataset | None = None,
    data_dir: str | None = None,
    patch: int | None = None,
    fit: bool = True,
    fit_steps: int = _FIT.fit_steps,
    fit_samples: int = _FIT.fit_samples,
    batch_size: int = _FIT.batch_size,
    lr: float = _FIT.lr,
    teacher: str | os.PathLike | None = None,
    seed: int = 0,
    device: str = "auto",
    on_progress: Callable | None = None,
    on_note: Callable[[str], None] | None = None,
    image_size: int | None = None,
    workers: int = 0,
    compile: bool = False,
) -> ModelFile:
    """A ViT of any depth and width from a learngene: the Python form of `wave spawn`.

    Scalers of the target's shapes start from the data-free rule (`spawning.py`); with `fit`,
    they are fitted for `fit_steps` steps on `fit_samples` training images of `data` (default:
    the learngene's data) with the templates frozen, distilling from the ancestry when one is
    available (`teacher`, or the learngene's own if its file exists and fits the data) and with
    cross-entropy otherwise. A fifth of the fit's images is held out: the fit keeps its start
    unless it lowered the cross-entropy there. The fit needs PyTorch (`compile`: under
    `torch.compile`); `fit=False` needs no data and no PyTorch. Returns the dense weights (timm
    keys, float32 NumPy), spec and provenance (with the test accuracy after a fit);
    `waveinit.save_model` writes them.

    The model keeps the learngene's image size and channels: an image folder (`folder:DIR`) is
    read at the learngene's size unless `image_size` says otherwise, `workers` processes
    decoding ahead. Roles that must start afresh (other image size, channels, patch or classes)
    and a fit without a teacher are explained in one line each to `on_note` (and kept in the
    provenance's "notes").

    `on_progress` receives the training engine's `Progress` report (`waveinit.training.engine`:
    step, total_steps, loss, images_per_second, seconds_left, ...) about twice a second during
    the fit; `waveinit.io.progress.ProgressLines("spawn", count="steps")` prints them as lines.
    """
    config = SpawnConfig(fit_steps=fit_steps, fit_samples=fit_samples, batch_size=batch_size, lr=lr, seed=seed, compile=compile)
    source = "(in memory)" if isinstance(learngene, Learngene) else str(learngene)
    gene = learngene if isinstance(learngene, Learngene) else load_learngene(learngene)
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if on_note is not None:
            on_note(message)

    recorded = data is None
    data_name = data.name if isinstance(data, Dataset) else (data or gene.provenance.get("data", "digits"))
    dataset = data if isinstance(data, Dataset) else None
    if dataset is None and (fit or data is not None or image_size is not None):
        dataset = _load(data_name, recorded, source, data_dir=data_dir, seed=seed, image_size=image_size, gene=gene)
    if not fit and str(device) not in ("auto", "cpu"):
        _check_device(device)
    shape = {"patch_size": patch}
    if dataset is not None:
        if patch is None and dataset.image_size % gene.spec.patch_size:
            raise WaveError(
                f"the learngene's patch size {gene.spec.patch_size} does not divide the {dataset.image_size}x{dataset.image_size} "
                f"images of {dataset.name}: pass --patch (patch=) with a divisor of {dataset.image_size}"
            )
        shape.update(image_size=dataset.image_size, channels=dataset.channels, num_classes=dataset.num_classes)
    spec = target_spec(gene, depth, width, heads, **shape)
    provenance = {"learngene": source, "data": data_name, "seed": seed}
    if dataset is not None:
        provenance.update({"labels": list(dataset.class_names)} if dataset.class_names is not None else {}, pixel_max=dataset.pixel_max)
    else:
        provenance.update({k: gene.provenance[k] for k in ("labels", "pixel_max") if k in gene.provenance})
    # Other data with as many classes still means other classes: the classifier starts afresh.
    refresh = HEAD_ROLES if gene.provenance.get("data", data_name) != data_name else frozenset()
    for line in refresh_reasons(gene, spec, refresh, data_name):
        note(line)
    if not fit:
        state, fresh = spawn_state_dict(gene, spec, seed, refresh)
        return ModelFile(state, spec, {**provenance, "init": "wave-nofit", "fresh_roles": sorted(fresh), "notes": notes})

    try:
        from .backends.torch import dense_numpy
        from .tasks import find_teacher, fit_scalers
    except ImportError as e:
        raise WaveError(f"fitting scalers needs PyTorch ({e.name} is missing): pip install 'waveinit[cli]', or spawn with fit=False") from None

    teacher_model, teacher_name, why = find_teacher(teacher, gene, dataset)
    if teacher_model is None:
        note(f"fitting without a teacher (cross-entropy on labels only): {why}")
    result = fit_scalers(gene, spec, dataset, config, teacher=teacher_model, teacher_name=teacher_name, refresh=refresh,
                         device=device, on_progress=on_progress, workers=workers)
    note(result.judgement())
    state = dense_numpy(result.model.state_dict())
    return ModelFile(state, spec, {
        **provenance,
        "init": "wave",
        "fit_steps": result.steps,
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


def refresh_reasons(gene: Learngene, target: ViTSpec, refresh, data_name: str) -> list[str]:
    """One line per reason a role of the spawned model starts afresh instead of from the learngene."""
    source, lines = gene.spec, []
    changes = [
        (source.image_size != target.image_size, "pos_embed and patch_embed",
         f"the data's {target.image_size}x{target.image_size} images differ from the learngene's {source.image_size}x{source.image_size}"),
        (source.patch_size != target.patch_size, "pos_embed and patch_embed",
         f"patch {target.patch_size} differs from the learngene's {source.patch_size}"),
        (source.channels != target.channels, "patch_embed",
         f"the data's {target.channels} channel(s) differ from the learngene's {source.channels}"),
        (source.num_classes != target.num_classes, "the classifier (head)",
         f"the data's {target.num_classes} classes differ from the learngene's {source.num_classes}"),
    ]
    for changed, roles, why in changes:
        if changed:
            lines.append(f"starting {roles} afresh: {why}")
    if refresh and source.num_classes == target.num_classes:
        lines.append(f"starting the classifier (head) afresh: {data_name} is not the learngene's data "
                     f"({gene.provenance.get('data')}), so its classes mean other things")
    return lines


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
