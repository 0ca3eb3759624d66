"""The learngene (templates shared by all sizes) and the scalers of one model size.

`materialize` turns templates + scalers into the dense state dict of a plain ViT with timm's
key names, on any array-API library: this is the step every spawned model ends with.
`learngene_from_weights` goes the other way, data-free: the nearest templates and scalers of
a dense ViT's weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import array_namespace

from .errors import WaveError
from .keys import split_key, state_dict_keys
from .kron import check_order, kron_blocks, kron_expand_unchecked, rank_n_factors
from .spec import ROLE_NAMES, ROLES, ROLES_BY_NAME, ViTSpec, scaler_shapes, template_counts, template_shapes

Array = Any


@dataclass
class Learngene:
    """Templates shared by every model size, plus the auxiliary model they were distilled in.

    templates: role -> (N_r, *template_shape), see `spec.py` for the shapes.
    scalers: role -> the auxiliary model's scalers, (depth, N_r, ...) or (N_r, ...).
    spec: the auxiliary model's shape (its data-dependent sizes fix the global templates).
    side: the template side s (width axes of every template are s long).
    provenance: where it came from (teacher, data, epochs, accuracy): JSON-serialisable.
    order: "st", each weight a sum of kron(S, T) (the default), or "ts", of kron(T, S) (`kron.KRON_ORDERS`).
    dense: role -> the auxiliary model's own parameter, (depth, *param_shape) or param_shape, for
        the roles that are not templated (none by default; "matrices": all but the four block
        matrices). templates and scalers hold the other roles.
    auxiliaries: the other sizes the templates were distilled through (`wave distill --sizes`),
        "DxW" -> (spec, scalers): the same templates, each size's own learned scalers. `spec` and
        `scalers` above are the largest size's; `source_for` picks the one a target starts from.
    """

    templates: dict[str, Array]
    scalers: dict[str, Array]
    spec: ViTSpec
    side: int
    provenance: dict = field(default_factory=dict)
    order: str = "st"
    dense: dict[str, Array] = field(default_factory=dict)
    auxiliaries: dict[str, tuple[ViTSpec, dict[str, Array]]] = field(default_factory=dict)

    def __post_init__(self):
        check_order(self.order)
        check_shapes(self.spec, self.side, self.templates, self.scalers, self.dense)
        if self.auxiliaries and self.dense:
            raise WaveError("a learngene distilled through several sizes has every role templated: its dense roles would need one copy per size")
        for name, (spec, scalers) in self.auxiliaries.items():
            if name != size_name(spec) or name == size_name(self.spec):
                raise WaveError(f"auxiliary {name!r} must be named DEPTHxWIDTH after its own spec, once each, got {size_name(spec)}")
            check_shapes(spec, self.side, self.templates, scalers)

    @property
    def sizes(self) -> dict[str, ViTSpec]:
        """Every size the templates were distilled through, "DxW" -> its auxiliary's spec (the largest first)."""
        return {size_name(self.spec): self.spec, **{name: spec for name, (spec, _) in self.auxiliaries.items()}}

    def source_for(self, target: ViTSpec) -> Learngene:
        """The learngene as one auxiliary, the one a model of `target` starts from: a size it was
        distilled through (same depth and width), else the nearest by parameters (ties to the
        larger). Itself when it has one size."""
        if not self.auxiliaries:
            return self
        specs = self.sizes
        same = size_name(target)
        name = same if same in specs else min(specs, key=lambda n: (abs(specs[n].num_params() - target.num_params()), -specs[n].num_params()))
        if name == size_name(self.spec):
            return Learngene(self.templates, self.scalers, self.spec, self.side, self.provenance, self.order)
        spec, scalers = self.auxiliaries[name]
        return Learngene(self.templates, scalers, spec, self.side, self.provenance, self.order)

    @property
    def counts(self) -> dict[str, int]:
        """Number of templates per role."""
        return {name: int(t.shape[0]) for name, t in self.templates.items()}

    def num_template_params(self) -> int:
        return sum(_numel(t) for t in self.templates.values())

    def num_scaler_params(self) -> int:
        """Every size's scalers."""
        return sum(_numel(s) for scalers in (self.scalers, *(sc for _, sc in self.auxiliaries.values())) for s in scalers.values())

    def num_dense_params(self) -> int:
        return sum(_numel(d) for d in self.dense.values())


def size_name(spec: ViTSpec) -> str:
    """"DxW": how a learngene names the sizes it was distilled through."""
    return f"{spec.depth}x{spec.width}"


def _numel(x: Array) -> int:
    n = 1
    for s in x.shape:
        n *= int(s)
    return n


def check_shapes(spec: ViTSpec, side: int, templates: Mapping[str, Array], scalers: Mapping[str, Array],
                 dense: Mapping[str, Array] | None = None) -> None:
    """Raise WaveError unless templates and scalers (and the `dense` roles' parameters) have
    exactly the shapes `spec` needs, every role held once."""
    dense = dense or {}
    unknown = [r for r in dense if r not in ROLE_NAMES]
    if unknown:
        raise WaveError(f"dense parameters of unknown role(s) {unknown}: valid roles are {', '.join(ROLE_NAMES)}")
    templated = [r for r in ROLE_NAMES if r not in dense]
    for kind, arrays in (("templates", templates), ("scalers", scalers)):
        missing = [r for r in templated if r not in arrays]
        extra = [r for r in arrays if r not in templated]
        if missing or extra:
            raise WaveError(
                f"{kind} must hold exactly the templated roles {', '.join(templated)}; "
                f"missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
    for name, x in dense.items():
        want = dense_shape(ROLES_BY_NAME[name], spec)
        if tuple(x.shape) != want:
            raise WaveError(f"the dense {name} has shape {tuple(x.shape)}, a {spec.depth}x{spec.width} model needs {want}")
    counts = {name: int(templates[name].shape[0]) if templates[name].ndim else 0 for name in templated}
    if counts and min(counts.values()) < 1:
        raise WaveError(f"every role needs at least one template, got counts {counts}")
    full = {name: counts.get(name, 1) for name in ROLE_NAMES}
    want_t = template_shapes(spec, side, full)
    want_s = scaler_shapes(spec, side, full)
    for name in templated:
        for kind, got, want in (("template", templates[name], want_t[name]), ("scaler", scalers[name], want_s[name])):
            if tuple(got.shape) != want:
                raise WaveError(
                    f"{kind}s of {name} have shape {tuple(got.shape)}, a {spec.depth}x{spec.width} model "
                    f"with template side {side} needs {want}"
                )


def materialize(spec: ViTSpec, side: int, templates: Mapping[str, Array], scalers: Mapping[str, Array], order: str = "st",
                dense: Mapping[str, Array] | None = None) -> dict[str, Array]:
    """The dense state dict (timm keys, in timm's order) of the ViT `spec` built from the factors.

    Each parameter is `kron_expand(scalers[role], templates[role], order)`, reshaped to its timm shape;
    per-layer roles are expanded for all blocks at once and then split by block. Roles in
    `dense` are taken as they are (per-layer ones split by block).
    """
    check_shapes(spec, side, templates, scalers, dense)
    return materialize_unchecked(spec, templates, scalers, check_order(order), dense)


def dense_shape(role, spec: ViTSpec) -> tuple[int, ...]:
    """How a learngene stores a role that is not templated: its timm shape, with a leading layer axis for per-layer roles."""
    return (spec.depth, *role.param_shape(spec)) if role.per_layer else role.param_shape(spec)


def materialize_unchecked(spec: ViTSpec, templates: Mapping[str, Array], scalers: Mapping[str, Array], order: str,
                          dense: Mapping[str, Array] | None = None) -> dict[str, Array]:
    """`materialize` without its shape check, for factors checked once already: a model's
    parameters, rebuilt into a state dict every forward pass (`backends/torch.py`)."""
    dense = dense or {}
    xp = array_namespace(*templates.values(), *scalers.values(), *dense.values())
    expanded = {}
    for role in ROLES:
        if role.name in dense:
            expanded[role.name] = xp.unstack(dense[role.name], axis=0) if role.per_layer else dense[role.name]
            continue
        weight = kron_expand_unchecked(scalers[role.name], templates[role.name], order)  # ([depth,] *kron_shape)
        if role.per_layer:
            # unstack, not indexing: under autograd, indexing each layer would scatter a
            # full-size zero gradient per layer (quadratic in depth); unstack's is one stack.
            expanded[role.name] = xp.unstack(xp.reshape(weight, (spec.depth, *role.param_shape(spec))), axis=0)
        else:
            expanded[role.name] = xp.reshape(weight, role.param_shape(spec))
    state = {}
    for key in state_dict_keys(spec):
        name, layer = split_key(key)
        state[key] = expanded[name] if layer is None else expanded[name][layer]
    return state


def learngene_from_weights(state_dict: Mapping[str, Array], spec: ViTSpec, side: int, n: int | Mapping[str, int],
                           order: str = "st") -> Learngene:
    """The learngene whose Kronecker sums (in `order`) are nearest to the weights of the dense ViT
    `spec` (timm keys), with `n` templates per role (or a mapping role -> count). No data, no
    training.

    Per role, each layer's weight is rearranged one block per row (`kron.kron_blocks`), which
    makes its Kronecker sum a rank-n matrix: for kron(S, T) ("st") the rows index the scaler's
    entries, for kron(T, S) ("ts") the template's. With the templates shared by the layers, the
    layers' rearrangements stacked along the scalers' axis (rows for "st", columns for "ts") are
    one rank-n matrix, so its truncated SVD (`kron.rank_n_factors`) gives the best shared
    templates and every layer's scalers at once. Global roles are one "layer". Where the weights
    are such sums, `materialize` gives them back exactly (up to rounding). Extra terms beyond a
    role's rank are zero (both template and scalers).
    `provenance["relative_error"]`: role -> Frobenius error / norm of the approximation.
    """
    counts, st = template_counts(n), check_order(order) == "st"
    xp = array_namespace(*state_dict.values())
    want_scalers, want_templates = scaler_shapes(spec, side, counts), template_shapes(spec, side, counts)  # role -> final shape
    templates, scalers, errors = {}, {}, {}
    for role in ROLES:
        layers = [state_dict[role.key(layer)] for layer in range(spec.depth)] if role.per_layer else [state_dict[role.key()]]
        template_shape = tuple(role.template_shape(spec, side))  # (p, q) or (p,)
        scaler_shape = tuple(m // t for m, t in zip(role.kron_shape(spec), template_shape))  # (a, b) or (a,)
        grid, block = (scaler_shape, template_shape) if st else (template_shape, scaler_shape)
        parts = [kron_blocks(xp.reshape(w, role.kron_shape(spec)), grid, block) for w in layers]
        left, right, _, errors[role.name], _ = rank_n_factors(xp.concat(parts, axis=0 if st else 1), counts[role.name])
        per_layer, shared = (left, right) if st else (right, left)  # (N, L * scaler cells), (N, template cells)
        s = xp.reshape(per_layer, (counts[role.name], len(layers), math.prod(scaler_shape)))
        scalers[role.name] = xp.reshape(xp.permute_dims(s, (1, 0, 2)), want_scalers[role.name])  # drops the layer axis of global roles
        templates[role.name] = xp.reshape(shared, want_templates[role.name])
    return Learngene(templates, scalers, spec, side, {"made_by": "nearest-kron", "relative_error": errors}, order)

