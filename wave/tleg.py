"""TLEG (Xia et al., "Transformer as Linear Expansion of Learngene", AAAI 2024), a peer method of
WAVE, on any array-API library: every block parameter of a ViT is a linear function of depth.

The learngene holds two parameter sets per block role, `A` and `B`, and one shared copy of every
non-block parameter (patch embedding, class token, position embedding, final norm, classifier).
Block `l` (0-based) of an `L`-block model is

    W[l] = A + (l / (L - 1)) * B        (L = 1: the coefficient is 0, so W[0] = A)

so the first block is `A` and the last `A + B` whatever the depth: the auxiliary model learns
both ends of the line, and a model of any other depth samples it more or less densely. Only the
depth can change. A and B have the ancestry's width, and TLEG has no rule for another one: a
target of another width (or heads, MLP ratio, image, patch, channels or classes) is a WaveError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import array_namespace

from .errors import WaveError
from .keys import split_key, state_dict_keys
from .spec import ROLES, ViTSpec

Array = Any  # any array-API array

BLOCK_ROLES: tuple[str, ...] = tuple(r.name for r in ROLES if r.per_layer)  # the keys of `a` and `b`
SHARED_ROLES: tuple[str, ...] = tuple(r.name for r in ROLES if not r.per_layer)  # the keys of `shared`
_ROLES = {r.name: r for r in ROLES}
# What a TLEG target must share with the learngene; the width is checked first, with its own message.
_KEPT = ("heads", "mlp_ratio", "image_size", "patch_size", "channels", "num_classes", "layer_norm_eps")


def coefficient(layer: int, depth: int) -> float:
    """The weight of B in block `layer` (0-based) of a `depth`-block model: layer / (depth - 1),
    0 for a one-block model (its only block is A)."""
    for name, value in (("depth", depth), ("layer", layer)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise WaveError(f"TLEG {name} must be an integer, got {value!r}")
    if depth < 1:
        raise WaveError(f"TLEG depth must be at least 1, got {depth}")
    if not 0 <= layer < depth:
        raise WaveError(f"layer {layer} is not a block of a {depth}-block model: choose 0 to {depth - 1}")
    return 0.0 if depth == 1 else layer / (depth - 1)


def check_parts(spec: ViTSpec, a: Mapping[str, Array], b: Mapping[str, Array], shared: Mapping[str, Array]) -> None:
    """WaveError unless `a`, `b` (block role -> array) and `shared` (key -> array) hold exactly the
    parameters of a TLEG learngene of `spec`'s width, each of its timm shape."""
    if not spec.is_plain:
        raise WaveError("TLEG describes plain ViTs (a class token read by the head, no DeiT distillation token), and this one is not: "
                        "use a plain ViT")
    for kind, arrays, names in (("A", a, BLOCK_ROLES), ("B", b, BLOCK_ROLES), ("shared", shared, SHARED_ROLES)):
        missing = [n for n in names if n not in arrays]
        extra = [n for n in arrays if n not in names]
        if missing or extra:
            raise WaveError(f"TLEG {kind} must hold exactly {', '.join(names)}; missing {missing or 'none'}, unexpected {extra or 'none'}")
        for name in names:
            want = _ROLES[name].param_shape(spec)
            if tuple(arrays[name].shape) != want:
                raise WaveError(f"TLEG {kind} {name} has shape {tuple(arrays[name].shape)}, a ViT of width {spec.width} needs {want}")


def expand(a: Mapping[str, Array], b: Mapping[str, Array], shared: Mapping[str, Array], spec: ViTSpec, depth: int) -> dict[str, Array]:
    """The dense state dict (timm keys, in timm's order) of the `depth`-block ViT of `spec`'s width:
    block l's parameter is `a[role] + coefficient(l, depth) * b[role]`, the rest `shared` as it is.

    `a`, `b`: block role ("attn.qkv.weight", "norm1.bias", ...) -> array; `shared`: key
    ("pos_embed", "head.weight", ...) -> array; `spec`: the learngene's shape (its depth is the
    auxiliary model's, not the output's). Arrays of any one array-API library; the output is of
    the same library, dtype and device, and differentiable where it is (torch autograd). Shared
    arrays are returned as they are, not copied.
    """
    check_parts(spec, a, b, shared)
    return expand_unchecked(a, b, shared, spec.replace(depth=depth))  # replace checks the depth and keeps the heads


def expand_unchecked(a: Mapping[str, Array], b: Mapping[str, Array], shared: Mapping[str, Array], target: ViTSpec) -> dict[str, Array]:
    """`expand` to the ViT `target` without checking the parts, for parts checked once already:
    a model's parameters, expanded every forward pass (`backends/torch.py`)."""
    xp = array_namespace(*a.values(), *b.values(), *shared.values())
    state = {}
    for key in state_dict_keys(target):
        name, layer = split_key(key)
        if layer is None:
            state[key] = shared[name]
        else:
            state[key] = xp.add(a[name], coefficient(layer, target.depth) * b[name])
    return state


def check_target(spec: ViTSpec, target: ViTSpec) -> None:
    """WaveError unless a TLEG learngene of `spec` can initialise `target`: any depth, but
    everything else (width first) as the learngene's."""
    if target.width != spec.width:
        raise WaveError(f"TLEG cannot change width: its learngene has width {spec.width}, the target {target.width}; "
                        f"TLEG initialises models of any depth at width {spec.width} only (use WAVE for other widths)")
    if not target.is_plain:
        raise WaveError("TLEG initialises plain ViTs (a class token read by the head, no DeiT distillation token), and the target is not: "
                        "use a plain ViT")
    changed = [k for k in _KEPT if getattr(target, k) != getattr(spec, k)]
    if changed:
        k = changed[0]
        raise WaveError(f"TLEG cannot change {k.replace('_', ' ')}: its learngene has {getattr(spec, k)}, the target {getattr(target, k)}; "
                        f"only the depth may differ")


@dataclass
class TLEGGene:
    """A TLEG learngene: A and B (block role -> array, the block's timm shape), the shared
    non-block parameters (key -> array), the auxiliary model's spec and the provenance."""

    a: dict[str, Array]
    b: dict[str, Array]
    shared: dict[str, Array]
    spec: ViTSpec  # the auxiliary model: the ancestry's depth and width
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        check_parts(self.spec, self.a, self.b, self.shared)

    def arrays(self) -> list[Array]:
        return [*self.a.values(), *self.b.values(), *self.shared.values()]

    def num_params(self) -> int:
        """Stored parameters: two blocks' worth plus the shared ones, whatever the depth spawned."""
        total = 0
        for x in self.arrays():
            n = 1
            for s in x.shape:
                n *= int(s)
            total += n
        return total

    def nbytes(self) -> int:
        return sum(int(x.nbytes) for x in self.arrays())

    def expand(self, depth: int | None = None) -> dict[str, Array]:
        """The dense state dict of `depth` blocks (default: the auxiliary model's)."""
        return expand(self.a, self.b, self.shared, self.spec, self.spec.depth if depth is None else depth)

    def initialise(self, target: ViTSpec) -> dict[str, Array]:
        """The dense state dict of the ViT `target` (any depth, this learngene's width and data)."""
        check_target(self.spec, target)
        return self.expand(target.depth)
