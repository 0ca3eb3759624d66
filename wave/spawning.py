"""Starting points for a model of any size: fresh factors, and the data-free spawn rule
(pure array-API math; `api.py` adds the data and the scaler fit).

The data-free rule (what `wave spawn --no-fit` uses, and where the scaler fit starts):

1. Balance: S_t * T_t == (S_t / c_t) * (T_t * c_t), so each term's scale is moved into its
   template, leaving every scaler term with RMS 1 (over layers and grid). This changes no weight.
2. Depth (`DEPTH_RULES`; `layer_positions`): target layer l starts from an auxiliary layer, or
   a blend of two neighbouring ones. "relative": the layer at the same relative depth,
   floor((l + 1/2) * L_aux / L), so layers repeat when deeper and are spread out when
   shallower; "first": the first L layers (when deeper, as "relative"); "even": evenly spaced
   layers including the first and the last, round(l * (L_aux - 1) / (L - 1)); "interpolate":
   the scalers at the fractional position l * (L_aux - 1) / (L - 1), linearly interpolated
   between the two neighbouring layers.
3. Width (`WIDTH_RULES`): each scaler grid axis that grows with the width is resampled. Wider:
   target block i <- auxiliary block floor(i * g_aux / g), whatever the rule. Narrower:
   "pick" keeps evenly spaced blocks the same way; "mean" averages the auxiliary blocks that
   fall into each target block; "project" applies weight selection (`selection.py`) to the
   auxiliary model's dense weights and gives the narrow model the scalers whose Kronecker sums
   with the (frozen) templates are nearest to the selected weights, by least squares. For
   "pick" and "mean", on the input (fan-in) axis of a linear weight the scalers are multiplied
   by g_aux / g. For a width k times the auxiliary one (same depth, same head width), every
   block is duplicated k times and the spawned network computes exactly the auxiliary
   network's function (each head copied k times, each fan-in sum divided by k). Roles a
   learngene stores densely (`Learngene.dense`, when only the four block matrices are
   templated) follow the same depth rule and, along width axes, the same rule applied to
   side-long blocks (weight selection's elements under "project"): `spawn_dense`.
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
from array_api_compat import device as device_of

from .configs import DEPTH_RULES, WIDTH_RULES, SpawnConfig
from .errors import WaveError
from .kron import kron_blocks
from .learngene import Array, Learngene, dense_shape, materialize
from .selection import selected_indices, weight_selection
from .spec import (
    HEAD_ROLES,
    ROLE_NAMES,
    ROLES,
    ROLES_BY_NAME,
    ViTSpec,
    check_side,
    data_fields,
    init_target,
    resized,
    scaler_shapes,
    template_counts,
    template_shapes,
)

_DEFAULT = SpawnConfig()  # the rules' defaults, chosen by the spawn-rule study (docs/bench/ablations.md)


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
    """Freshly initialised (templates, scalers) for `spec`, for every role or only `roles` (a
    mapping `n` may leave out roles that are not drawn for: they count one template)."""
    rng = np.random.default_rng(seed)
    counts = template_counts({name: n.get(name, 1) for name in ROLE_NAMES} if isinstance(n, Mapping) else n)
    t_shapes, s_shapes = template_shapes(spec, side, counts), scaler_shapes(spec, side, counts)
    templates, scalers = {}, {}
    for role in ROLES:  # always draw in the same order, so a role's factors do not depend on `roles`
        t, s = init_factors(init_target(role.name, spec), t_shapes[role.name], s_shapes[role.name], rng)
        if roles is None or role.name in roles:
            templates[role.name], scalers[role.name] = t, s
    return templates, scalers


def fresh_dense(spec: ViTSpec, roles, seed: int = 0) -> dict:
    """timm-like random parameters (float32, `learngene.dense_shape`) for the given roles that
    are not templated. Each role draws from its own stream (of `seed` and its place in the
    schema), so a role's draw does not depend on which others are drawn."""
    out = {}
    for index, role in enumerate(ROLES):
        if role.name in roles:
            mean, std = init_target(role.name, spec)
            rng = np.random.default_rng((seed, 7919, index))  # 7919: apart from fresh_factors' stream
            out[role.name] = (mean + std * rng.standard_normal(dense_shape(role, spec))).astype(np.float32)
    return out


def balance(templates: Mapping[str, Array], scalers: Mapping[str, Array]) -> tuple[dict, dict]:
    """Move each term's scale into its template: scalers[role][..., t, ...] get RMS 1.

    The weights `kron_expand(scalers, templates)` are unchanged (up to rounding). A term whose
    scalers are all zero is left as it is (nothing to divide by).
    """
    out_t, out_s = {}, {}
    for role in (ROLES_BY_NAME[name] for name in scalers):
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


def layer_positions(source_depth: int, target_depth: int, rule: str) -> list[float]:
    """Where each target layer starts among the auxiliary's layers (module docstring, step 2):
    whole numbers pick a layer, a fraction blends the two neighbours ("interpolate")."""
    if rule not in DEPTH_RULES:
        raise WaveError(f"depth rule must be one of {', '.join(DEPTH_RULES)}, got {rule!r}")
    source, target = source_depth, target_depth
    if rule == "first" and target <= source:
        return [float(layer) for layer in range(target)]
    if rule in ("relative", "first"):
        return [float(min(source - 1, (2 * layer + 1) * source // (2 * target))) for layer in range(target)]
    if target == 1:
        return [0.0]
    if rule == "even":  # round half up, in integers
        return [float((2 * layer * (source - 1) + target - 1) // (2 * (target - 1))) for layer in range(target)]
    return [layer * (source - 1) / (target - 1) for layer in range(target)]


def layer_map(source_depth: int, target_depth: int, rule: str) -> list[int]:
    """The auxiliary layer each target layer starts from, for the rules that pick whole layers."""
    if rule == "interpolate":
        raise WaveError("the interpolate rule blends layers; use layer_positions")
    return [int(p) for p in layer_positions(source_depth, target_depth, rule)]


def depth_mixing(source_depth: int, target_depth: int, rule: str) -> np.ndarray:
    """(target_depth, source_depth) weights: target layer l's scalers are row l's blend of the
    auxiliary layers' (one 1 per row for the rules that pick, two weights for "interpolate")."""
    mixing = np.zeros((target_depth, source_depth))
    for layer, position in enumerate(layer_positions(source_depth, target_depth, rule)):
        low = min(int(math.floor(position)), source_depth - 1)
        frac = position - low
        mixing[layer, low] += 1.0 - frac
        if frac > 0:
            mixing[layer, low + 1] += frac
    return mixing


def width_pooling(source_blocks: int, target_blocks: int, rule: str) -> np.ndarray:
    """(target_blocks, source_blocks) weights along one scaler grid axis (module docstring, step
    3), before the fan-in factor: duplication when wider, else "pick" or "mean" ("project" pools
    nothing: it is `project_scalers`; where it does not apply it picks)."""
    if rule not in WIDTH_RULES:
        raise WaveError(f"width rule must be one of {', '.join(WIDTH_RULES)}, got {rule!r}")
    pooling = np.zeros((target_blocks, source_blocks))
    if rule == "mean" and target_blocks < source_blocks:
        for i in range(source_blocks):
            pooling[i * target_blocks // source_blocks, i] = 1.0
        return pooling / pooling.sum(axis=1, keepdims=True)
    pooling[np.arange(target_blocks), [i * source_blocks // target_blocks for i in range(target_blocks)]] = 1.0
    return pooling


def resample_scalers(scalers: Mapping[str, Array], source: ViTSpec, target: ViTSpec, side: int, depth_rule: str = _DEFAULT.depth_rule,
                     width_rule: str = _DEFAULT.width_rule) -> dict:
    """The data-free rule's steps 2 and 3: the auxiliary scalers mapped to `target`'s shapes
    (for the roles present in `scalers`), "project" picking (see `project_scalers`)."""
    check_side(target, side)
    return {name: _resample(s, ROLES_BY_NAME[name], source, target, side, depth_rule, width_rule) for name, s in scalers.items()}


def _resample(s: Array, role, source: ViTSpec, target: ViTSpec, side: int, depth_rule: str, width_rule: str) -> Array:
    s = _map_layers(s, role, source, target, depth_rule)
    first_grid_axis = s.ndim - len(role.axes)
    return _pool_grid(s, role, source, target, side, width_rule, lambda k: first_grid_axis + k)


def _map_layers(x: Array, role, source: ViTSpec, target: ViTSpec, depth_rule: str) -> Array:
    """A per-layer role's layers (axis 0) mapped from the source's depth to the target's by `depth_rule`."""
    return _mix(x, depth_mixing(source.depth, target.depth, depth_rule), axis=0) if role.per_layer else x


def _pool_grid(x: Array, role, source: ViTSpec, target: ViTSpec, side: int, width_rule: str, axis_of) -> Array:
    """Each grid axis k of `role` (axis `axis_of(k)` of `x`) pooled from the source's count of
    side-long blocks to the target's by `width_rule` ("project" picks here)."""
    for k, (g_s, g_t) in enumerate(zip(role.scaler_shape(source, side), role.scaler_shape(target, side))):
        if g_s == g_t:
            continue
        x = _mix(x, width_pooling(g_s, g_t, "pick" if width_rule == "project" else width_rule), axis=axis_of(k))
        if k == role.fan_in:  # a linear layer sums over this axis: keep the sum's scale
            x = x * (g_s / g_t)
    return x


def _mix(s: Array, weights: np.ndarray, axis: int) -> Array:
    """`s` with its `axis` replaced by `weights @` that axis: a take where each row is one 1."""
    xp = array_namespace(s)
    rows = [np.flatnonzero(row) for row in weights]
    if all(len(r) == 1 and row[r[0]] == 1.0 for r, row in zip(rows, weights)):
        return xp.take(s, xp.asarray([int(r[0]) for r in rows], device=device_of(s)), axis=axis)
    mixed = xp.tensordot(s, xp.asarray(weights.T, dtype=s.dtype, device=device_of(s)), axes=([axis], [0]))
    return xp.moveaxis(mixed, -1, axis)


def project_scalers(templates: Mapping[str, Array], scalers: Mapping[str, Array], source: ViTSpec, target: ViTSpec, side: int,
                    depth_rule: str = _DEFAULT.depth_rule, *, order: str, dense: Mapping[str, Array] | None = None) -> dict:
    """The "project" width rule: the auxiliary's dense weights (its layers mapped to the target's
    depth by `depth_rule`), weight-selected to `target`'s width, and each role's scalers for
    `target` by least squares against the frozen `templates` (the minimum-norm solution where
    templates are linearly dependent). Roles absent from `scalers` are skipped. Applies when the
    target is not wider than the source in any way (`selection.check_applicable`)."""
    xp = array_namespace(*templates.values())
    deep = resized(source, depth=target.depth)
    mapped = resample_scalers(scalers, source, deep, side, depth_rule)
    missing = [name for name in templates if name not in mapped]
    # Roles to be started afresh are not projected: any factors of their shapes complete the model.
    filler = fresh_factors(deep, side, {name: t.shape[0] for name, t in templates.items()}, roles=missing)[1]
    stored = {name: _resample_dense(x, ROLES_BY_NAME[name], source, deep, side, depth_rule, "pick") for name, x in (dense or {}).items()}
    weights = materialize(deep, side, templates, {**mapped, **{k: xp.asarray(v) for k, v in filler.items()}}, order, stored)
    like = resized(target, **data_fields(deep))
    selected = weight_selection(weights, deep, like)
    return {name: _least_squares(selected, ROLES_BY_NAME[name], like, side, templates[name], order) for name in scalers}


def _least_squares(state: Mapping[str, Array], role, spec: ViTSpec, side: int, templates: Array, order: str) -> Array:
    """Scalers (role's shape for `spec`) whose Kronecker sums with `templates` are nearest to the
    role's weights in `state`: per scaler entry, the least-squares coefficients of the templates
    on the entries that scaler multiplies (a block under "st"; every block's same entry under "ts")."""
    xp = array_namespace(templates)
    layers = [state[role.key(layer)] for layer in range(spec.depth)] if role.per_layer else [state[role.key()]]
    grid, block = role.scaler_shape(spec, side), role.template_shape(spec, side)
    n = templates.shape[0]
    basis = xp.reshape(templates, (n, math.prod(block)))  # (N, block)
    inverse = xp.linalg.pinv(basis)  # (block, N)
    out = []
    for w in layers:
        w = xp.reshape(w, role.kron_shape(spec))
        # one row per scaler entry, holding the weight entries it multiplies (kron.kron_blocks)
        blocks = kron_blocks(w, grid, block) if order == "st" else xp.matrix_transpose(kron_blocks(w, block, grid))
        coefficients = xp.matmul(blocks, inverse)  # (grid, N)
        out.append(xp.reshape(xp.matrix_transpose(coefficients), (n, *grid)))
    return xp.stack(out, axis=0) if role.per_layer else out[0]


def fresh_roles(source: ViTSpec, target: ViTSpec, other_data: bool = False, source_name: str = "the learngene") -> dict[str, str]:
    """Role -> why a model of `target` starts it afresh instead of inheriting it from a model or
    learngene made on `source`'s data (in timm's order): the roles whose shape follows the data
    and differs, compared at the target's own depth and width (so a narrower or deeper model
    inherits everything else), and with `other_data` the classifier too, since other data's
    classes mean other things even when there are as many. The one rule for the spawn, the
    notes it prints and the bench's head warm-up."""
    same_size = target.replace(**data_fields(source))  # the target's own size, on the source's data
    reasons = {}
    for role in ROLES:
        if role.depends_on_data and role.param_shape(target) != role.param_shape(same_size):
            reasons[role.name] = _why_fresh(role, source, target, source_name)
        elif other_data and role.name in HEAD_ROLES:
            reasons[role.name] = f"the data is not {source_name}'s, so its classes mean other things"
    return reasons


def _why_fresh(role, source: ViTSpec, target: ViTSpec, source_name: str) -> str:
    if "classes" in role.axes:
        return f"the data's {target.num_classes} classes differ from {source_name}'s {source.num_classes}"
    changes = []
    if "tokens" in role.axes and source.image_size != target.image_size:
        changes.append(f"the data's {target.image_size}x{target.image_size} images differ from {source_name}'s "
                       f"{source.image_size}x{source.image_size}")
    if source.patch_size != target.patch_size:
        changes.append(f"patch {target.patch_size} differs from {source_name}'s {source.patch_size}")
    if "patch" in role.axes and source.channels != target.channels:
        changes.append(f"the data's {target.channels} channel(s) differ from {source_name}'s {source.channels}")
    return "; ".join(changes)


def spawn_factors(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset(), depth_rule: str = _DEFAULT.depth_rule,
                  width_rule: str = _DEFAULT.width_rule) -> tuple[dict, dict, set[str]]:
    """Data-free (templates, scalers) for a `target` model, and the set of roles given fresh
    factors: those whose shapes differ with the target's data, and `refresh` (e.g. HEAD_ROLES
    for other classes of the same count). See the module docstring for the rules; a learngene
    distilled through several sizes starts from the one `Learngene.source_for` picks."""
    learngene = learngene.source_for(target)
    fresh = set(fresh_roles(learngene.spec, target)) | set(refresh)
    templates, scalers = balance(learngene.templates, learngene.scalers)
    kept = {name: s for name, s in scalers.items() if name not in fresh}
    if width_rule == "project" and target.width < learngene.spec.width:
        scalers = project_scalers(templates, kept, learngene.spec, target, learngene.side, depth_rule, order=learngene.order,
                                  dense=learngene.dense)
    else:
        scalers = resample_scalers(kept, learngene.spec, target, learngene.side, depth_rule, width_rule)
    new_templates, new_scalers = fresh_factors(target, learngene.side, learngene.counts, seed, roles=fresh)
    templates = {name: new_templates.get(name, t) for name, t in templates.items()}
    scalers = {name: new_scalers.get(name, scalers.get(name)) for name in templates}
    return templates, scalers, fresh


def spawn_dense(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset(), depth_rule: str = _DEFAULT.depth_rule,
                width_rule: str = _DEFAULT.width_rule) -> dict:
    """The roles a learngene stores densely (`Learngene.dense`), for `target`: layers mapped by
    `depth_rule`, width axes by the scalers' rule applied to side-long blocks ("pick", "mean",
    with the fan-in factor), or by weight selection's elements ("project"); roles whose shape
    follows the data, and `refresh`, drawn afresh."""
    learngene = learngene.source_for(target)
    fresh = (set(fresh_roles(learngene.spec, target)) | set(refresh)) & set(learngene.dense)
    out = fresh_dense(target, fresh, seed)
    for name, x in learngene.dense.items():
        if name not in fresh:
            out[name] = _resample_dense(x, ROLES_BY_NAME[name], learngene.spec, target, learngene.side, depth_rule, width_rule)
    return out


def _resample_dense(x: Array, role, source: ViTSpec, target: ViTSpec, side: int, depth_rule: str, width_rule: str) -> Array:
    xp = array_namespace(x)
    x = _map_layers(x, role, source, target, depth_rule)
    lead = 1 if role.per_layer else 0
    if width_rule == "project" and target.width < source.width:  # weight selection's elements, on the stored shape
        deep, like = resized(source, depth=target.depth), resized(target, **data_fields(source))
        indices = selected_indices(deep, like)
        for axis, kind in enumerate(role.selected()):
            if kind is not None:
                x = xp.take(x, xp.asarray(indices[kind], device=device_of(x)), axis=lead + axis)
        return x
    # each axis split into (its grid's blocks, a block's elements), the blocks pooled as scalers are
    grid = role.scaler_shape(source, side)
    blocks = [(g, n // g) for g, n in zip(grid, role.kron_shape(source))]
    x = xp.reshape(x, (*x.shape[:lead], *(d for pair in blocks for d in pair)))
    x = _pool_grid(x, role, source, target, side, width_rule, lambda k: lead + 2 * k)
    return xp.reshape(x, (*x.shape[:lead], *role.param_shape(target)))


def target_spec(learngene: Learngene, depth: int, width: int, heads: int | None = None, *, image_size: int | None = None,
                channels: int | None = None, num_classes: int | None = None, patch_size: int | None = None) -> ViTSpec:
    """The spec of a model to spawn: the learngene's data shape unless another is given, its
    head width where the width allows it, and a width that is a multiple of the template side."""
    spec = resized(learngene.spec, depth, width, heads, side=learngene.side, image_size=image_size,
                   channels=channels, num_classes=num_classes, patch_size=patch_size)
    check_side(spec, learngene.side)
    return spec


def spawn_state_dict(learngene: Learngene, target: ViTSpec, seed: int = 0, refresh=frozenset(), depth_rule: str = _DEFAULT.depth_rule,
                     width_rule: str = _DEFAULT.width_rule) -> tuple[dict, set[str]]:
    """The data-free spawn: a dense timm state dict (float32 NumPy) for `target`, no data used."""
    templates, scalers, fresh = spawn_factors(learngene, target, seed, refresh, depth_rule, width_rule)
    dense = spawn_dense(learngene, target, seed, refresh, depth_rule, width_rule)
    state = materialize(target, learngene.side, templates, scalers, learngene.order, dense)
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}, fresh



def size_for_params(budget: int, like: ViTSpec, side: int, max_depth: int = 48, max_width: int = 4096) -> tuple[int, int]:
    """(depth, width) of the model nearest `budget` parameters (ties: the smaller), on the
    learngene's grid: widths that are multiples of the template side, `like`'s data shape."""
    if budget < 1:
        raise WaveError(f"a parameter budget must be at least 1, got {budget}")
    best = None
    for width in range(side, max_width + 1, side):
        for depth in range(1, max_depth + 1):
            count = like.params_at(depth, width)
            key = (abs(count - budget), count)
            if best is None or key < best[0]:
                best = (key, (depth, width))
    return best[1]
