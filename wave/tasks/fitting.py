"""Fit a spawned model's scalers (templates frozen), judged on a held-out fifth of the fit's
images; the fit's teacher."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backends.torch import TemplatedViT, ViT, load_state_dict
from ..configs import DEPTH_RULES, EVAL_BATCH_SIZE, SpawnConfig, TrainConfig
from ..errors import WaveError
from ..io.datasets import Dataset
from ..learngene import Learngene
from ..spawning import layer_positions, spawn_dense, spawn_factors
from ..spec import ViTSpec
from ..training.distributed import resolve_device
from ..training.engine import train
from ..training.evaluation import evaluate
from ..training.objectives import cross_entropy_loss
from .models import _frozen, check_fits, load_vit, teacher_kd_loss


@dataclass
class SpawnResult:
    model: ViT  # the spawned plain ViT, dense weights
    factors: TemplatedViT  # the templates and fitted scalers it was built from
    fresh_roles: set  # roles initialised fresh because the target data differs from the learngene's
    fitted_params: int  # parameters the fit trained (scalers, and fresh templates)
    samples: int  # training images the fit trained on (held-out ones not counted)
    steps: int  # optimizer steps of the fit
    teacher: str | None  # the ancestry distilled from during the fit, if any
    eval: dict | None  # held-out accuracy and loss after the fit
    seconds: float
    kept: str | None = None  # "fitted", or "start" when the fit did not lower the loss on the held-out fit images
    holdout: dict | None = None  # the held-out fit images' count, how often they were scored, the start's and the fit's accuracy and loss there
    depth_rule: str = SpawnConfig.depth_rule  # the depth rule used (the chosen one under "choose")
    depth_losses: dict | None = None  # "choose": each candidate's cross-entropy on the fit's first batches
    best_step: int | None = None  # fit_keep "best": the step of the epoch end kept
    stopped: str | None = None  # why the fit ended: "fit_steps" (all of them) or "patience" (its held-out loss stopped falling)

    def judgement(self) -> str:
        """One line: which of start and fit was kept, and on what evidence."""
        if self.holdout is None:
            return "kept the fitted scalers (too few fit images to hold any out)"
        h = self.holdout
        scores = (f"loss {h['start_loss']:.4f} ({100 * h['start_accuracy']:.2f}%) at the start, {h['fitted_loss']:.4f} "
                  f"({100 * h['fitted_accuracy']:.2f}%) after {self.steps} steps{self._why()}, on {h['samples']:,} held-out fit images")
        if self.kept == "start":
            return f"kept the data-free start, not the fit: {scores}"
        return f"kept the fitted scalers: {scores}"

    def _why(self) -> str:
        return " (stopped early: the held-out loss had stopped falling)" if self.stopped == "patience" else ""


def fit_scalers(
    learngene: Learngene,
    target: ViTSpec,
    data: Dataset | None = None,
    config: SpawnConfig = SpawnConfig(),
    *,
    teacher: ViT | None = None,
    teacher_name: str | None = None,
    refresh=frozenset(),
    device: str = "auto",
    on_progress=None,
    workers: int = 0,
) -> SpawnResult:
    """Initialise a ViT of shape `target` from a learngene: scalers by the data-free rule
    (`spawning.spawn_factors`), then, with `data`, fitted for at most `config.fit_steps` steps with
    the templates frozen (KL to `teacher` plus cross-entropy when a teacher is given, else
    cross-entropy), stopping early once the held-out loss has not fallen for
    `config.fit_patience` epoch ends. Without data the data-free weights are returned as they are.

    The fit never ends worse than it started: of the `fit_samples` images it draws, a fifth is
    held out and scored before and after the fit, and the fit is kept only if it lowered the
    cross-entropy there (`SpawnResult.kept`). Loss, not accuracy: on a few hundred images
    accuracy moves in coarse, noisy steps (a fit that took the loss from 1.67 to 1.51 and test
    accuracy up 6 points lost 2.6 points of accuracy on 150 held-out images)."""
    start = time.perf_counter()
    depth_rule, losses = config.depth_rule, None
    if depth_rule == "choose":
        if data is None:
            raise WaveError("the depth rule 'choose' scores candidates on the fit's data: give data, or a fixed depth rule")
        depth_rule, losses = choose_depth_rule(learngene, target, data, config, refresh, device)
    model, fresh = spawned_factors(learngene, target, config.seed, refresh, depth_rule, config.width_rule)
    templates_p, _ = model.role_tensors()
    for name, t in {**templates_p, **model.dense_tensors()}.items():
        t.requires_grad_(name in fresh)  # learned templates and dense roles stay frozen; fresh ones must learn
    trainable = [p for p in model.parameters() if p.requires_grad]
    fit = _Fit()
    if data is not None:
        check_fits(target, data, "target model")
        fit = _fit_and_judge(model, trainable, data, config, teacher, resolve_device(device), on_progress, workers)
    dense = load_state_dict(ViT(target), {k: v.detach().cpu() for k, v in model.dense_state_dict().items()})
    return SpawnResult(model=dense, factors=model, fresh_roles=fresh, fitted_params=sum(p.numel() for p in trainable) if data is not None else 0,
                       samples=fit.samples, steps=fit.steps, teacher=teacher_name if (teacher is not None and data is not None) else None,
                       eval=fit.evaluation, seconds=time.perf_counter() - start, kept=fit.kept, holdout=fit.holdout,
                       depth_rule=depth_rule, depth_losses=losses, best_step=fit.best_step, stopped=fit.stopped)


def spawned_factors(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset(), depth_rule: str = SpawnConfig.depth_rule,
                    width_rule: str = SpawnConfig.width_rule) -> tuple[TemplatedViT, set[str]]:
    """The data-free spawn as a `TemplatedViT` (templates, scalers and dense roles of `target`),
    and the roles started afresh: what a scaler fit starts from."""
    templates, scalers, fresh = spawn_factors(learngene, target, seed, refresh, depth_rule, width_rule)
    dense = spawn_dense(learngene, target, seed, refresh, depth_rule, width_rule)
    return TemplatedViT.from_factors(target, learngene.side, templates, scalers, learngene.order, dense), fresh


def choose_depth_rule(learngene: Learngene, target: ViTSpec, data: Dataset, config: SpawnConfig, refresh=frozenset(),
                      device: str = "auto") -> tuple[str, dict]:
    """The "choose" depth rule: of `DEPTH_RULES`, the one whose data-free model has the lowest
    cross-entropy on the fit's first `choose_batches` batches (ties: the earlier rule), and every
    candidate's loss. Candidates giving the same layers are scored once."""
    dev = resolve_device(device)
    (images, labels), _ = fit_images(data, config)
    n = min(len(labels), config.choose_batches * config.batch_size)
    losses, seen = {}, {}
    for rule in DEPTH_RULES:
        positions = tuple(layer_positions(learngene.source_for(target).spec.depth, target.depth, rule))
        if positions not in seen:
            model, _ = spawned_factors(learngene, target, config.seed, refresh, rule, config.width_rule)
            seen[positions] = evaluate(model, images[:n], labels[:n], EVAL_BATCH_SIZE, dev)["loss"]
        losses[rule] = seen[positions]
    return min(DEPTH_RULES, key=lambda rule: losses[rule]), losses


@dataclass
class _Fit:
    samples: int = 0  # images trained on
    steps: int = 0
    kept: str | None = None  # "fitted" or "start"
    holdout: dict | None = None  # the held-out images' scores of start and fit
    evaluation: dict | None = None  # the kept model's test scores
    best_step: int | None = None  # fit_keep "best": the step whose epoch end had the lowest held-out loss
    stopped: str | None = None  # "fit_steps" or "patience"


def _fit_and_judge(model: TemplatedViT, trainable: list, data: Dataset, config: SpawnConfig, teacher: ViT | None, dev: torch.device,
                   on_progress, workers: int) -> _Fit:
    """Train `trainable` on the fit's images, then keep the fitted weights only if they lowered
    the cross-entropy on the held-out fifth (`fit_scalers`)."""
    (images, labels), held = fit_images(data, config)
    loss_fn = cross_entropy_loss
    if teacher is not None:
        check_fits(teacher.spec, data, "teacher")
        loss_fn = teacher_kd_loss(_frozen(teacher, dev), images, config.temperature, config.kd_weight, config.batch_size, dev, workers=workers)
    before = evaluate(model, *held, EVAL_BATCH_SIZE, dev, workers) if held is not None else None
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    watched = held is not None and (config.fit_keep == "best" or config.fit_patience > 0)
    best = _BestEpoch(model, on_progress, config.fit_keep == "best", config.fit_patience) if watched else None
    try:
        steps = train(model, images, labels, TrainConfig(batch_size=config.batch_size, lr=config.lr, weight_decay=0.0,
                                                          max_steps=config.fit_steps, seed=config.seed, compile=config.compile),
                      loss_fn=loss_fn, param_groups=[{"params": trainable, "weight_decay": 0.0}], device=dev,
                      on_progress=best.watch if best else on_progress, eval_data=held if best else None, workers=workers).steps
        stopped = "fit_steps"
    except _PatienceRanOut:
        steps, stopped = best.last_step, "patience"
    fit = _Fit(len(labels), steps, "fitted", stopped=stopped)
    if best is not None and best.state is not None:
        model.load_state_dict(best.state)
        fit.best_step = best.step
    if held is not None:
        after = evaluate(model, *held, EVAL_BATCH_SIZE, dev, workers)
        if after["loss"] >= before["loss"]:
            model.load_state_dict(start_state)
            fit.kept = "start"
        evaluations = 2 + (best.evaluations if best else 0)  # before, after, and each epoch end "best" watched: the fit's judging cost
        fit.holdout = {"samples": before["samples"], "evaluations": evaluations, "start_accuracy": before["accuracy"], "start_loss": before["loss"],
                       "fitted_accuracy": after["accuracy"], "fitted_loss": after["loss"]}
    fit.evaluation = evaluate(model, data.test_images, data.test_labels, EVAL_BATCH_SIZE, dev, workers)
    return fit


class _PatienceRanOut(Exception):
    """The fit's held-out loss has not fallen for `fit_patience` epoch ends: the fit stops here."""


class _BestEpoch:
    """The held-out loss at each epoch end of the fit: with `keep`, a copy of the model at the
    lowest (`fit_keep="best"`); with `patience`, `_PatienceRanOut` once it has not fallen for that
    many epoch ends (raised from the engine's progress callback, so the run ends at that step)."""

    def __init__(self, model, on_progress, keep: bool = True, patience: int = 0):
        self.model, self.on_progress, self.keep, self.patience = model, on_progress, keep, patience
        self.loss, self.state, self.step = math.inf, None, None
        self.evaluations = 0  # held-out evaluations seen (forward passes the fit spent judging itself)
        self.stale, self.last_step = 0, 0  # epoch ends since the loss last fell; the step of the latest

    def watch(self, progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)
        if progress.event != "epoch" or progress.eval is None:
            return
        self.evaluations += 1
        self.last_step = progress.global_step
        if progress.eval["loss"] < self.loss:
            self.loss, self.step, self.stale = progress.eval["loss"], progress.global_step, 0
            if self.keep:
                self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.stale += 1
        if self.patience and self.stale >= self.patience and progress.global_step < progress.total_steps:
            raise _PatienceRanOut


FIT_HOLDOUT = 5  # one in this many of the fit's images is held out to judge the fit


def fit_images(data: Dataset, config: SpawnConfig):
    """The fit's (images, labels), a fixed seeded draw of `fit_samples` training images, and the
    held-out fifth of that draw (None when the draw is too small to spare one)."""
    n = min(config.fit_samples, len(data.train_labels))
    pick = np.random.default_rng(config.seed).permutation(len(data.train_labels))[:n]
    m = n // FIT_HOLDOUT
    held = (data.train_images[pick[:m]], data.train_labels[pick[:m]]) if m else None
    return (data.train_images[pick[m:]], data.train_labels[pick[m:]]), held


def resolve_teacher(teacher, name: str | None, learngene: Learngene, data: Dataset) -> tuple[ViT | None, str | None, str]:
    """The ancestry a scaler fit distils from, its name, and why there is none. `teacher`: None
    (the default: none, whatever lies on the disk), a ViT in memory (named `name`), a model file,
    folder or hub name, or "recorded": the ancestry the learngene records (a file path, or
    `hf:ORG/NAME@COMMIT` in the Hugging Face cache), which must be there and fit the data."""
    if teacher is None:
        return None, None, "no teacher was given (the default); pass --teacher FILE, or --teacher recorded for the learngene's ancestry"
    if isinstance(teacher, ViT):
        check_fits(teacher.spec, data, "teacher")
        return teacher, name or "(in memory)", ""
    if str(teacher) == "recorded":
        teacher = _recorded_teacher(learngene, data)
    model, _ = load_vit(teacher)
    check_fits(model.spec, data, "teacher")
    return model, str(teacher), ""


def _recorded_teacher(learngene: Learngene, data: Dataset) -> str:
    """What `load_vit` reads for the learngene's recorded ancestry; WaveError if it cannot teach `data`."""
    recorded = learngene.provenance.get("teacher")
    if not recorded:
        raise WaveError("--teacher recorded: the learngene records no ancestry; pass --teacher FILE")
    if learngene.provenance.get("data") not in (None, data.name):  # an ancestry of other data cannot teach this one
        raise WaveError(f"--teacher recorded: the learngene's ancestry was trained on {learngene.provenance.get('data')}, not {data.name}; "
                        f"pass --teacher FILE or no teacher")
    if recorded.startswith("hf:"):
        return "hf-hub:" + recorded[3:]
    if not Path(recorded).exists():  # a file, or a Hugging Face folder
        raise WaveError(f"--teacher recorded: the learngene's ancestry {recorded} is not on this machine; pass --teacher with a copy")
    return recorded
