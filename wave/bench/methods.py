"""The initialisations `wave bench` compares, one function from (method, size, seed) to a model:

    random            timm's initialisation (truncated normal, std 0.02), drawn from the seed
    weight-selection  Xu et al. 2024: the ancestry's first layers, evenly spaced elements, whole
                      heads (`waveinit.selection`); not applicable beyond the ancestry's size
    mimetic           Trockman and Kolter 2023: random, then every block's attention drawn so
                      that W_q W_k^T is near alpha I and W_v W_o near -beta I (`waveinit.mimetic`)
    nearest-kron      templates from the ancestry's weights by `nearest_kron` (no data, no
                      distillation), then spawned exactly like `wave`: only the templates differ
    tleg              Xia et al. 2024: layer l of L is A + l/(L-1) B, A and B distilled from the
                      ancestry (`waveinit.tleg`); any depth, only the ancestry's width
    kd-per-size       random, then trained on the ancestry's logits (the distillation's loss) for
                      as many image passes as wave's fit, and on through its epochs
    wave              `waveinit.spawn` from the learngene, scalers fitted (KL to the ancestry, as
                      `wave spawn --teacher` fits)
    wave-nofit        `waveinit.spawn(..., fit=False)`: the data-free rule alone
    scratch           random, trained `scratch_epochs` epochs
    ws-auxiliary      weight selection from the learngene's auxiliary (spawned data-free at its own
                      size, which reproduces it) instead of the ancestry: what the templates kept
    wave-first        wave with the depth rule "first": a shallower target takes the auxiliary's
                      first layers, as weight selection takes the ancestry's (wave-relative and
                      wave-even: the other depth rules, `spawning.layer_positions`)

On other data (downstream), the classifier and the parameters whose shape follows the data (the
patch embedding's weights when the patch's pixels differ; the position embeddings when the token
grid does) start random for every method that inherits weights, as `wave spawn` gives those
roles fresh templates.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ..api import plan_spawn, run_spawn
from ..backends.torch import ViT, dense_numpy, load_state_dict
from ..configs import EVAL_BATCH_SIZE, DistillConfig, SpawnConfig, TrainConfig
from ..errors import WaveError
from ..io.datasets import Dataset
from ..keys import split_key, state_dict_keys
from ..mimetic import mimetic
from ..selection import check_applicable, weight_selection
from ..spawning import fresh_roles
from ..spec import HEAD_ROLES, ViTSpec, data_fields, resized
from ..tasks import fit_images, random_vit, teacher_kd_loss
from ..tleg import expand
from ..training.distributed import resolve_device
from ..training.engine import train
from .config import WAVE_DEPTH_RULES, BenchConfig
from .family import Family
from .records import images_passed


@dataclass
class Init:
    model: ViT
    compute: int = 0  # forward + backward image passes spent before training (the scaler fit, kd-per-size's first part, a head warm-up)
    images: int = 0  # distinct training images the initialisation looked at
    teacher_forward: int = 0  # forward-only passes of the ancestry (its logits)
    forward: int = 0  # forward-only passes of the model itself (the scaler fit judging itself on its held-out images)
    seconds: float = 0.0


def not_applicable(method: str, spec: ViTSpec, family: Family) -> str | None:
    """Why `method` cannot make a model of `spec` (None: it can)."""
    source = {"weight-selection": family.ancestry.spec, "ws-auxiliary": family.learngene.spec}.get(method)
    if source is not None:
        try:
            check_applicable(source, resized(spec, **data_fields(source)))
        except WaveError as e:
            return str(e)
    if method == "tleg":
        own = family.tleg.spec
        if (spec.width, spec.heads) != (own.width, own.heads):
            return (f"TLEG makes only its ancestry's width {own.width} ({own.heads} heads): A + l/(L-1) B changes the depth, "
                    f"not the shape of a layer")
    return None


def fresh_keys(spec: ViTSpec, family_spec: ViTSpec) -> set[str]:
    """The parameters a model of `spec` initialised for other data starts afresh: the classifier,
    and those whose shape follows the data (`spawning.fresh_roles`, which compares at `spec`'s own
    depth and width on the family's data: a method that made a narrower model than the ancestry
    inherited all the rest)."""
    fresh = set(fresh_roles(family_spec, spec, other_data=True))
    return {key for key in state_dict_keys(spec) if split_key(key)[0] in fresh}


def warm_up_head(model: ViT, keys: set[str], data: Dataset, config: BenchConfig, seed: int, device: str) -> int:
    """Train only the parameters `keys` (the rest frozen) for wave's fit steps, at its rate, on its
    images (the same seeded draw, less the part the fit holds out); the image passes it cost."""
    (images, labels), _ = fit_images(data, SpawnConfig(fit_samples=config.fit_samples, seed=seed))
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in keys)
    try:
        train(model, images, labels, TrainConfig(batch_size=config.fit_batch, lr=config.fit_lr, weight_decay=0.0, max_steps=config.fit_steps,
                                                 seed=seed), param_groups=[{"params": [params[k] for k in sorted(keys)], "weight_decay": 0.0}],
              device=device)
    finally:
        for p in params.values():
            p.requires_grad_(True)
    return images_passed(len(labels), config.fit_batch, config.fit_steps)


def with_fresh_data_keys(state: dict[str, np.ndarray], spec: ViTSpec, seed: int, same_data: bool) -> ViT:
    """A ViT of `spec` from an inherited state dict made on the family's data: on other data,
    the parameters whose shape differs and the classifier come from a random init of `seed`."""
    fresh = dense_numpy(random_vit(spec, seed).state_dict())
    if not same_data:
        state = {k: (fresh[k] if (k in HEAD_ROLES or v.shape != fresh[k].shape) else v) for k, v in state.items()}
    return load_state_dict(ViT(spec), state)


def initialise(method: str, spec: ViTSpec, seed: int, family: Family, data: Dataset, config: BenchConfig, device: str,
               same_data: bool = True, lr: float | None = None) -> Init:
    """A ViT of shape `spec` initialised by `method` for training on `data` (`same_data`: the
    family's data, else a downstream dataset; `lr`: kd-per-size's rate, its training's).
    WaveError if the method does not apply."""
    start = time.perf_counter()
    reason = not_applicable(method, spec, family)
    if reason:
        raise WaveError(reason)
    done = lambda model, **kw: Init(model, seconds=time.perf_counter() - start, **kw)  # noqa: E731
    if method in ("random", "scratch"):
        return done(random_vit(spec, seed))
    if method == "mimetic":
        return done(load_state_dict(ViT(spec), mimetic(dense_numpy(random_vit(spec, seed).state_dict()), spec, seed)))
    if method == "weight-selection":
        state = weight_selection(dense_numpy(family.ancestry.state_dict()), family.ancestry.spec, resized(spec, **data_fields(family.ancestry.spec)))
        return done(with_fresh_data_keys(state, spec, seed, same_data))
    if method == "ws-auxiliary":
        aux = family.learngene.spec
        auxiliary = run_spawn(plan_spawn(family.learngene, aux.depth, aux.width, aux.heads, fit=False))
        state = weight_selection(auxiliary.state_dict, aux, resized(spec, **data_fields(aux)))
        return done(with_fresh_data_keys(state, spec, seed, same_data))
    if method == "tleg":
        state = expand(family.tleg.a, family.tleg.b, family.tleg.shared, family.tleg.spec, spec.depth)
        return done(with_fresh_data_keys({k: np.asarray(v) for k, v in state.items()}, spec, seed, same_data))
    if method == "kd-per-size":
        if not same_data:
            raise WaveError("kd-per-size needs the ancestry's logits on the training data: not on other data")
        if lr is None:
            raise WaveError("kd-per-size trains from its first step: give its learning rate")
        # wave's fit, mirrored: the same steps, batch and images (its seeded draw, less the part
        # it holds out), so the same image passes, on the ancestry's logits instead of through
        # the templates.
        model, steps = random_vit(spec, seed), config.fit_steps
        (images, labels), _ = fit_images(data, SpawnConfig(fit_samples=config.fit_samples, seed=seed))
        n = len(labels)
        train(model, images, labels, TrainConfig(batch_size=config.fit_batch, lr=lr, max_steps=steps, seed=seed),
              loss_fn=kd_loss_for(family, images, device), device=device)
        return done(model, compute=images_passed(n, config.fit_batch, steps), images=n, teacher_forward=n)
    if method not in ("nearest-kron", "wave", "wave-nofit", *WAVE_DEPTH_RULES):
        raise WaveError(f"unknown method {method!r}")
    gene = family.nearest_kron if method == "nearest-kron" else family.learngene
    fit = method != "wave-nofit"
    fit_settings = fit_config(config, seed)
    if method in WAVE_DEPTH_RULES:
        fit_settings = dataclasses.replace(fit_settings, depth_rule=WAVE_DEPTH_RULES[method])
    spawned = run_spawn(plan_spawn(gene, spec.depth, spec.width, spec.heads, data=data, patch=spec.patch_size, fit=fit,
                                   config=fit_settings, teacher=family.ancestry if same_data else None,
                                   teacher_name=str(family.ancestry_path), fresh_head=not same_data, device=device))
    if spawned.spec != spec:
        raise WaveError(f"{method} spawned a {spawned.spec} for the size {spec}: the learngene does not fit the bench's sizes")
    model = load_state_dict(ViT(spec), spawned.state_dict)
    if not fit:
        return done(model)
    samples, holdout = spawned.provenance["fit_samples"], spawned.provenance.get("fit_holdout") or {}
    return done(model, compute=images_passed(samples, config.fit_batch, spawned.provenance["fit_steps"]), images=samples,
                teacher_forward=samples if spawned.provenance.get("teacher") else 0,
                forward=holdout.get("samples", 0) * holdout.get("evaluations", 0))


class InitCache:
    """The scaler-fitted initialisations (wave, nearest-kron) of one bench run, which do not
    depend on the learning rate: the three rates of a size's sweep and seed 0's cell start from
    one fit instead of four. A cached start is the same model and reports the same cost as the
    fit that made it (`initialise` is deterministic: tests/test_bench.py reruns cells without it)."""

    CACHED = ("wave", "nearest-kron", *WAVE_DEPTH_RULES)

    def __init__(self):
        self.entries: dict[tuple, tuple[Init, dict]] = {}

    def __call__(self, method: str, spec: ViTSpec, seed: int, family: Family, data: Dataset, config: BenchConfig, device: str,
                 same_data: bool = True, lr: float | None = None) -> Init:
        if method not in self.CACHED:
            return initialise(method, spec, seed, family, data, config, device, same_data, lr=lr)
        key = (method, spec, seed, id(data), same_data)
        if key not in self.entries:
            init = initialise(method, spec, seed, family, data, config, device, same_data, lr=lr)
            self.entries[key] = (init, {k: v.detach().clone() for k, v in init.model.state_dict().items()})
        init, state = self.entries[key]
        model = copy.deepcopy(init.model)
        model.load_state_dict(state)
        return dataclasses.replace(init, model=model)


def fit_config(config: BenchConfig, seed: int, steps: int | None = None) -> SpawnConfig:
    """The scaler fit of the bench's wave and nearest-kron cells: every one of its steps, as the
    protocols (v2-v4) were written and run before `wave spawn` stopped its fit early (issue #36)."""
    return SpawnConfig(fit_steps=steps or config.fit_steps, fit_samples=config.fit_samples, batch_size=config.fit_batch,
                       lr=config.fit_lr, seed=seed, fit_patience=0)


def kd_loss_for(family: Family, images, device: str, train_config: TrainConfig | None = None):
    """The distillation loss (the learngene's temperature and weight) against the ancestry on
    training `images` (the engine's dataset indices): the teacher's logits computed once, or on
    every batch where `train_config` augments the images (its label smoothing applies too)."""
    d = DistillConfig()
    return teacher_kd_loss(family.ancestry, images, d.temperature, d.kd_weight, EVAL_BATCH_SIZE, resolve_device(device),
                           smoothing=train_config.smoothing if train_config else 0.0,
                           inputs_change=bool(train_config and train_config.changes_inputs))
