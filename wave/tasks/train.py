"""Train a plain ViT: any model (`wave train`), or the ancestry `wave distill` makes when it
is given none."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from ..backends.torch import ViT
from ..configs import COMMAND_TRAIN, AncestryConfig, TrainConfig
from ..io.datasets import Dataset
from ..training.engine import TrainResult, train
from ..training.objectives import smoothed
from ..training.recipe import with_state
from .models import _keeping, _labels, _logging_metrics, _remove_checkpoint, _scores, check_fits, checkpoint_path, ema_path, random_vit, save_vit, spec_for


def train_vit(
    model: ViT,
    data: Dataset,
    config: TrainConfig,
    *,
    out: str | Path,
    device: str = "auto",
    resume: bool = False,
    on_progress=None,
    provenance: dict | None = None,
    workers: int = 0,
    log_dir: str | Path | None = None,
) -> TrainResult:
    """Train `model` on `data` with cross-entropy and save it as a model file at `out`
    (`workers`: processes decoding an image folder's batches ahead; `log_dir`: TensorBoard event
    files of every epoch there too).

    A checkpoint next to `out` (`<out>.ckpt`) is written each epoch; `resume` continues from it.
    Each finished epoch is also a row of the metrics file `<out stem>.metrics.csv`.
    """
    check_fits(model.spec, data, "model")
    start = time.perf_counter()
    result = train(
        model, data.train_images, data.train_labels, config, loss_fn=smoothed(config.smoothing),
        device=device, checkpoint=checkpoint_path(out), resume=resume,
        eval_data=(data.test_images, data.test_labels), on_progress=_logging_metrics(out, resume, on_progress, log_dir), workers=workers,
        meta={"task": "train", "data": data.name, "train_size": len(data.train_labels), "spec": model.spec.to_dict()},
    )
    final = result.history[-1] if result.history else {}
    common = {**(provenance or {}), "data": data.name, **_labels(data), "train_size": int(len(data.train_labels)), "config": asdict(config)}
    with _keeping(checkpoint_path(out)):
        save_vit(out, model, {**common, **_scores(final.get("eval")), "seconds": time.perf_counter() - start})
        if result.ema is not None:  # the moving average, beside the model: <out stem>.ema.safetensors
            ema = with_state(model, result.ema)
            save_vit(ema_path(out), ema, {**common, **_scores(final.get("ema_eval")), "ema_decay": config.model_ema_decay})
    _remove_checkpoint(out)
    return result



def train_ancestry(data: Dataset, recipe: AncestryConfig, *, out: str | Path, batch_size: int = COMMAND_TRAIN.batch_size,
                   seed: int = 0, patch: int | None = None, heads: int | None = None, device: str = "auto",
                   resume: bool = False, on_progress=None, provenance: dict | None = None, workers: int = 0,
                   augment: bool = False) -> TrainResult:
    """Train the ancestry of `recipe` from a random init on `data` (what `wave distill` does when
    it is given none, and what the bench and the examples make) and save it at `out`
    (`augment`: random shifts and flips of in-memory images, TrainConfig.augment)."""
    model = random_vit(spec_for(data, recipe.depth, recipe.width, heads, patch), seed)
    config = TrainConfig(epochs=recipe.epochs, batch_size=batch_size, lr=recipe.lr, seed=seed, augment=augment)
    return train_vit(model, data, config, out=out, device=device, resume=resume, on_progress=on_progress,
                     provenance={"init": "random", **(provenance or {})}, workers=workers)


