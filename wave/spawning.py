"""Starting points for a model of any size: fresh factors, and the data-free spawn rule
(pure array-API math; `api.py` adds the data and the scaler fit).

The data-free rule (what `wave spawn --no-fit` uses, and where the scaler fit starts):

1. Balance: S_t * T_t == (S_t / c_t) * (T_t * c_t), so each term's scale is moved into its
   template, leaving every scaler term with RMS 1 (over layers and grid). This changes no weight.
2. Depth: target layer l takes the auxiliary layer at the same relative depth,
   floor((l + 1/2) * L_aux / L), so layers repeat when deeper and are spread out when shallower.
3. Width: each scaler grid axis that grows with the width is resampled by nearest neighbour,
   target block i <- auxiliary block floor(i * g_aux / g). On the input (fan-in) axis of a linear
   weight the scalers are multiplied by g_aux / g. For a width k times the auxiliary one (same
   depth, same head width), every block is duplicated k times and the spawned network computes
   exactly the auxiliary network's function (each head copied k times, each fan-in sum divided
   by k); for narrower widths it keeps evenly spaced blocks.
4. Data: roles whose template shape depends on the data (position embedding, patch embedding,
   classifier) get fresh factors when the target's image size, channels or classes differ
   from the learngene's, and the classifier also when the target is another dataset with as
   many classes; these fresh templates are the only ones a scaler fit trains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from array_api_compat import array_namespace

from .errors import WaveError
from .learngene import Array, Learngene, materialize
from .spec import ROLES, ROLES_BY_NAME, ViTSpec, check_side, init_target, resized, scaler_shapes, template_counts, template_shapes


def init_factors(target: tuple[float, float], template_shape, scaler_shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Templates and scalers (float32) whose Kronecker sum starts near a target (mean, std).

    Zero-mean roles: scalers ~ N(0, 1) and templates ~ N(0, std^2 / N), so the N-term sum has
    the target std. Mean-m roles (LayerNorm weights): scalers ~ 1 + 0.02 noise and templates
    ~ m/N + noise, so the sum is about m; the noise keeps identical factors from never
    diverging. Roles whose target is exactly 0 (biases) get a small std (1e-3) for the same reason.
    """
    mean, std = target
    n = template_shape[0]
    if mean == 0:
        std = std or 1e-3
        templates = rng.standard_normal(template_shape) * (std / math.sqrt(n))
        scalers = rng.standard_normal(scaler_shape)
    else:
        templates = mean / n + (std or 0.02) / math.sqrt(n) * rng.standard_normal(template_shape)
        scalers = 1.0 + 0.02 * rng.standard_normal(scaler_shape)
    return templates.astype(np.float32), scalers.astype(np.float32)


def fresh_factors(spec: ViTSpec, side: int, n: int | Mapping[str, int], seed: int = 0, roles=None) -> tuple[dict, dict]:
    """Freshly initialised (templates, scalers) for `spec`, for every role or only `roles`."""
    rng = np.random.default_rng(seed)
    counts = template_counts(n)
    t_shapes, s_shapes = template_shapes(spec, side, counts), scaler_shapes(spec, side, counts)
    templates, scalers = {}, {}
    for role in ROLES:  # always draw in the same order, so a role's factors do not depend on `roles`
        t, s = init_factors(init_target(role.name, spec), t_shapes[role.name], s_shapes[role.name], rng)
        if roles is None or role.name in roles:
            templates[role.name], scalers[role.name] = t, s
    return templates, scalers


def balance(templates: Mapping[str, Array], scalers: Mapping[str, Array]) -> tuple[dict, dict]:
    """Move each term's scale into its template: scalers[role][..., t, ...] get RMS 1.

    The weights `kron_expand(scalers, templates)` are unchanged (up to rounding). A term whose
    scalers are all zero is left as it is (nothing to divide by).
    """
    out_t, out_s = {}, {}
    for role in ROLES:
        s, t = scalers[role.name], templates[role.name]
        xp = array_namespace(s, t)
        term_axis = 1 if role.per_layer else 0
        other_axes = tuple(a for a in range(s.ndim) if a != term_axis)
        rms = xp.sqrt(xp.mean(s * s, axis=other_axes))  # (N,)
        rms = xp.where(rms > 0, rms, xp.ones_like(rms))
        s_shape = [1] * s.ndim
        s_shape[term_axis] = rms.shape[0]
        out_s[role.name] = s / xp.reshape(rms, tuple(s_shape))
        out_t[role.name] = t * xp.reshape(rms, (rms.shape[0],) + (1,) * (t.ndim - 1))
    return out_t, out_s


def layer_map(source_depth: int, target_depth: int) -> list[int]:
    """The auxiliary layer each target layer starts from: same relative depth."""
    return [min(source_depth - 1, (2 * layer + 1) * source_depth // (2 * target_depth)) for layer in range(target_depth)]


def resample_scalers(scalers: Mapping[str, Array], source: ViTSpec, target: ViTSpec, side: int) -> dict:
    """The data-free rule's steps 2 and 3: the auxiliary scalers mapped to `target`'s shapes
    (for the roles present in `scalers`)."""
    check_side(target, side)
    return {name: _resample(s, ROLES_BY_NAME[name], source, target, side) for name, s in scalers.items()}


def _resample(s: Array, role, source: ViTSpec, target: ViTSpec, side: int) -> Array:
    xp = array_namespace(s)
    if role.per_layer:
        s = xp.take(s, xp.asarray(layer_map(source.depth, target.depth)), axis=0)
    first_grid_axis = s.ndim - len(role.axes)
    for k, (g_s, g_t) in enumerate(zip(role.scaler_shape(source, side), role.scaler_shape(target, side))):
        if g_s == g_t:
            continue
        s = xp.take(s, xp.asarray([i * g_s // g_t for i in range(g_t)]), axis=first_grid_axis + k)
        if k == role.fan_in:  # a linear layer sums over this axis: keep the sum's scale
            s = s * (g_s / g_t)
    return s


def data_roles_to_refresh(source: ViTSpec, target: ViTSpec, side: int) -> set[str]:
    """Roles whose template shape differs between the learngene's data and the target's."""
    return {r.name for r in ROLES if r.depends_on_data and r.template_shape(source, side) != r.template_shape(target, side)}


def spawn_factors(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset()) -> tuple[dict, dict, set[str]]:
    """Data-free (templates, scalers) for a `target` model, and the set of roles given fresh
    factors: those whose shapes differ with the target's data, and `refresh` (e.g. HEAD_ROLES
    for other classes of the same count). See the module docstring."""
    fresh = data_roles_to_refresh(learngene.spec, target, learngene.side) | set(refresh)
    templates, scalers = balance(learngene.templates, learngene.scalers)
    kept = {name: s for name, s in scalers.items() if name not in fresh}
    scalers = resample_scalers(kept, learngene.spec, target, learngene.side)
    new_templates, new_scalers = fresh_factors(target, learngene.side, learngene.counts, seed, roles=fresh)
    templates = {r.name: new_templates.get(r.name, templates[r.name]) for r in ROLES}
    scalers = {r.name: new_scalers.get(r.name, scalers.get(r.name)) for r in ROLES}
    return templates, scalers, fresh


def target_spec(learngene: Learngene, depth: int, width: int, heads: int | None = None, *, image_size: int | None = None,
                channels: int | None = None, num_classes: int | None = None, patch_size: int | None = None) -> ViTSpec:
    """The spec of a model to spawn: the learngene's data shape unless another is given, its
    head width where the width allows it, and a width that is a multiple of the template side."""
    spec = resized(learngene.spec, depth, width, heads, side=learngene.side, image_size=image_size,
                   channels=channels, num_classes=num_classes, patch_size=patch_size)
    check_side(spec, learngene.side)
    return spec


def spawn_state_dict(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset()) -> tuple[dict, set[str]]:
    """The data-free spawn: a dense timm state dict (float32 NumPy) for `target`, no data used."""
    templates, scalers, fresh = spawn_factors(learngene, target, seed, refresh)
    state = materialize(target, learngene.side, templates, scalers)
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}, fresh



def size_for_params(budget: int, like: ViTSpec, side: int, max_depth: int = 48, max_width: int = 4096) -> tuple[int, int]:
    """(depth, width) of the model nearest `budget` parameters (ties: the smaller), on the
    learngene's grid: widths that are multiples of the template side, `like`'s data shape."""
    if budget < 1:
        raise WaveError(f"a parameter budget must be at least 1, got {budget}")
    best = None
    for width in range(side, max_width + 1, side):
        for depth in range(1, max_depth + 1):
            count = like.replace(depth=depth, width=width, heads=max(1, width // 64)).num_params()
            key = (abs(count - budget), count)
            if best is None or key < best[0]:
                best = (key, (depth, width))
    return best[1]
