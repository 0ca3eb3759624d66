"""`waveinit.spawn`: a ViT of any depth and width from a learngene, in one call.

It joins the pure spawn rule (`spawning.py`) to files and data (`io/`) and, when the scalers
are fitted, to the PyTorch step behind `wave spawn` (`tasks.fit_scalers`). torch is imported
only when a fit needs it, so `fit=False` works with NumPy alone.
"""

from __future__ import annotations

import os

from .configs import SpawnConfig
from .errors import WaveError
from .io.datasets import Dataset, load_dataset
from .io.files import load_learngene
from .keys import ModelFile
from .learngene import Learngene
from .spawning import HEAD_ROLES, spawn_state_dict, target_spec

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
    on_progress=None,
    image_size: int | None = None,
    workers: int = 0,
) -> ModelFile:
    """A ViT of any depth and width from a learngene: the Python form of `wave spawn`.

    Scalers of the target's shapes start from the data-free rule (`spawning.py`); with `fit`,
    they are fitted for `fit_steps` steps on `fit_samples` training images of `data` (default:
    the learngene's data) with the templates frozen, distilling from the ancestry when one is
    available (`teacher`, or the learngene's own if its file exists and fits the data) and with
    cross-entropy otherwise. The fit needs PyTorch; `fit=False` needs no data and no PyTorch.
    Returns the dense weights (timm keys, float32 NumPy), spec and provenance (with the held-out
    accuracy after a fit); `waveinit.save_model` writes them. An image folder (`folder:DIR`) is
    read at `image_size` (default: the images' own size, when they share one: a spawned model
    takes the new data as it is), `workers` processes decoding ahead.
    """
    config = SpawnConfig(fit_steps=fit_steps, fit_samples=fit_samples, batch_size=batch_size, lr=lr, seed=seed)
    source = "(in memory)" if isinstance(learngene, Learngene) else str(learngene)
    gene = learngene if isinstance(learngene, Learngene) else load_learngene(learngene)
    data_name = data.name if isinstance(data, Dataset) else (data or gene.provenance.get("data", "digits"))
    dataset = data if isinstance(data, Dataset) else None
    if dataset is None and (fit or data is not None):
        dataset = load_dataset(data_name, data_dir=data_dir, seed=seed, image_size=image_size)
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
    # Other data with as many classes still means other classes: the classifier starts afresh.
    refresh = HEAD_ROLES if gene.provenance.get("data", data_name) != data_name else frozenset()
    if not fit:
        state, fresh = spawn_state_dict(gene, spec, seed, refresh)
        return ModelFile(state, spec, {**provenance, "init": "wave-nofit", "fresh_roles": sorted(fresh)})

    try:
        from .backends.torch import dense_numpy
        from .tasks import find_teacher, fit_scalers
    except ImportError as e:
        raise WaveError(f"fitting scalers needs PyTorch ({e.name} is missing): pip install 'waveinit[cli]', or spawn with fit=False") from None

    teacher_model, teacher_name = find_teacher(teacher, gene, dataset)
    result = fit_scalers(gene, spec, dataset, config, teacher=teacher_model, teacher_name=teacher_name, refresh=refresh,
                         device=device, on_progress=on_progress, workers=workers)
    state = dense_numpy(result.model.state_dict())
    return ModelFile(state, spec, {
        **provenance,
        "init": "wave",
        "fit_steps": result.steps,
        "fit_samples": result.samples,
        "fitted_params": result.fitted_params,
        "teacher": result.teacher,
        "fresh_roles": sorted(result.fresh_roles),
        "test_accuracy": result.eval["accuracy"],
        "test_loss": result.eval["loss"],
        "test_samples": result.eval["samples"],
        "seconds": result.seconds,
    })
