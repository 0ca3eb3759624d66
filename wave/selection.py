"""Weight selection (Xu et al., ICLR 2024, "Initializing Models with Larger Ones"): a smaller ViT
initialised with a subset of a larger pre-trained ViT's weights, on any array-API library.

The rule, as in the paper and its code for isotropic networks such as ViTs:

1. Layers: the target's `depth` blocks are the source's *first* `depth` blocks ("first-N").
2. Elements: every axis that shrinks keeps evenly spaced entries, the same entries wherever the
   axis appears (so the residual stream stays consistent across layers): `uniform_indices(n, m)`
   is `arange(m) * (n // m)` when m divides n, else `round(linspace(0, n - 1, m))`.
3. Attention heads are kept whole, which the paper's element-wise rule does not do: the
   target's heads are evenly spaced source heads, and each keeps all its `head_dim` entries in
   q, k, v and in the projection's input. A narrower head (smaller head_dim) keeps evenly
   spaced entries of its source head instead.
4. Axes fixed by the data (tokens, patch pixels, classes) are kept whole: all position
   embeddings, all classifier rows. Weights are copied, never rescaled.

Weight selection cannot grow a model: a target deeper or wider than the source (or with more
heads, wider heads or a wider MLP) is a WaveError saying it does not apply.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from .errors import WaveError
from .keys import check_state_dict, split_key, state_dict_keys
from .learngene import Array
from .spec import ROLES_BY_NAME, ViTSpec


def uniform_indices(n: int, m: int) -> np.ndarray:
    """`m` evenly spaced indices into `range(n)`, increasing and distinct (m <= n)."""
    if not 1 <= m <= n:
        raise WaveError(f"cannot select {m} of {n} entries: need 1 <= {m} <= {n}")
    if n % m == 0:
        return np.arange(m) * (n // m)
    return np.round(np.linspace(0, n - 1, m)).astype(np.int64)


def check_applicable(source: ViTSpec, target: ViTSpec) -> None:
    """WaveError unless weight selection can make `target` from `source` (it only shrinks)."""
    grows = [
        (name, getattr(target, attr), getattr(source, attr))
        for name, attr in (("depth", "depth"), ("width", "width"), ("heads", "heads"), ("head width", "head_dim"), ("MLP width", "mlp_width"))
        if getattr(target, attr) > getattr(source, attr)
    ]
    if grows:
        name, want, have = grows[0]
        raise WaveError(
            f"weight selection does not apply: the target's {name} {want} exceeds the source's {have} "
            f"(it selects a subset of a larger model and cannot grow one)"
        )
    data = ("image_size", "patch_size", "channels", "num_classes", "dist_token", "head_dist")
    if any(getattr(target, k) != getattr(source, k) for k in data):
        raise WaveError(
            f"weight selection needs the source's data shape: target {_data_shape(target)}, source {_data_shape(source)}"
        )


def _data_shape(spec: ViTSpec) -> str:
    deit = ", DeiT's distillation token" + (" and head" if spec.head_dist else "") if spec.dist_token else ""
    return f"{spec.channels}x{spec.image_size}x{spec.image_size} images, patch {spec.patch_size}, {spec.num_classes} classes{deit}"


def selected_indices(source: ViTSpec, target: ViTSpec) -> dict[str, np.ndarray]:
    """The entries kept along each kind of axis, as source indices:

    `width` (the residual stream), `attention` (one of q, k, v, or the projection's input:
    whole heads), `qkv` (q, k and v stacked, as the rows of attn.qkv) and `mlp` (hidden units).
    """
    check_applicable(source, target)
    heads = uniform_indices(source.heads, target.heads)  # (H_t,) source heads
    within = uniform_indices(source.head_dim, target.head_dim)  # (hd_t,) entries of each head
    attention = (heads[:, None] * source.head_dim + within[None, :]).reshape(-1)  # (w_t,)
    return {
        "width": uniform_indices(source.width, target.width),
        "attention": attention,
        "qkv": np.concatenate([part * source.width + attention for part in range(3)]),  # (3 w_t,)
        "mlp": uniform_indices(source.mlp_width, target.mlp_width),
    }


def weight_selection(state_dict: Mapping[str, Array], source: ViTSpec, target: ViTSpec) -> dict[str, Array]:
    """The state dict (timm keys, in timm's order) of the ViT `target`, selected from the
    weights of the larger ViT `source` (see the module docstring). Arrays of the input's library.
    """
    indices = selected_indices(source, target)
    check_state_dict("the source state dict", state_dict, source)
    out = {}
    for key in state_dict_keys(target):  # blocks 0..depth-1 of the target are the source's first blocks
        name, _ = split_key(key)
        x = state_dict[key]
        xp = array_namespace(x)
        for axis, kind in enumerate(ROLES_BY_NAME[name].selected()):
            if kind is not None:
                x = xp.take(x, xp.asarray(indices[kind], device=device_of(x)), axis=axis)
        out[key] = x
    return out
