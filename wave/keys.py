"""timm's key schema of a dense ViT state dict: its keys in timm's order, how a key splits into
role and block, the check that a state dict fits a spec, the spec read off a state dict's shapes,
and `ModelFile` (a dense ViT: state dict, spec, provenance)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import array_namespace

from .errors import WaveError
from .spec import ROLES_BY_NAME, ViTSpec, roles_of


@dataclass
class ModelFile:
    """A plain ViT: its state dict (timm keys; NumPy arrays when read from a file), spec and provenance."""

    state_dict: dict[str, Any]
    spec: ViTSpec
    provenance: dict = field(default_factory=dict)


def state_dict_keys(spec: ViTSpec) -> list[str]:
    """The keys of a ViT's state dict, in timm's order (`spec.SCHEMA`'s: stem, blocks, tail)."""
    roles = roles_of(spec)
    blocks = [r.key(layer) for layer in range(spec.depth) for r in roles if r.per_layer]
    return [r.name for r in roles if r.place == "stem"] + blocks + [r.name for r in roles if r.place == "tail"]


def split_key(key: str) -> tuple[str, int | None]:
    """`blocks.3.attn.qkv.weight` -> (`attn.qkv.weight`, 3); `pos_embed` -> (`pos_embed`, None)."""
    if key.startswith("blocks."):
        _, layer, name = key.split(".", 2)
        return name, int(layer)
    return key, None


def check_state_dict(source, state_dict: Mapping[str, Any], spec: ViTSpec) -> None:
    """WaveError (naming `source`) unless `state_dict` has the keys and shapes of the ViT `spec`."""
    for key in state_dict_keys(spec):
        if key not in state_dict:
            raise WaveError(f"{source}: missing tensor {key} for a {spec.depth}x{spec.width} ViT: the file is damaged or not a ViT")
        want = ROLES_BY_NAME[split_key(key)[0]].param_shape(spec)
        if tuple(state_dict[key].shape) != want:
            raise WaveError(f"{source}: tensor {key} has shape {tuple(state_dict[key].shape)}, expected {want}")


def spec_from_state_dict(state: Mapping[str, Any], heads: int | None = None, source: str = "state dict") -> ViTSpec:
    """The ViTSpec of a timm-keyed plain ViT (or distilled DeiT) state dict, from its tensor shapes.

    Heads cannot be read off shapes: pass them, or they default to width / 64. LayerNorm eps is
    not stored in a state dict either: timm's 1e-6.
    """
    required = ("pos_embed", "patch_embed.proj.weight", "head.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in required if k not in state]
    if missing:
        raise WaveError(f"{source} is not a plain ViT state dict with timm's key names (no {missing[0]}): pass a model file or a timm ViT")
    try:
        extra = sorted(k for k in state if split_key(k)[0] not in ROLES_BY_NAME)
        depth = len({split_key(k)[1] for k in state if k.startswith("blocks.")})
    except ValueError:
        raise WaveError(f"{source}: a blocks.* tensor name is not blocks.<layer>.<name>: pass a plain timm ViT") from None
    if extra:
        raise WaveError(f"{source} has tensors a plain ViT does not ({', '.join(extra[:3])}): "
                        f"only plain pre-LayerNorm ViTs with a class token (and DeiT's distillation token) are supported")
    dist_token, head_dist = "dist_token" in state, "head_dist.weight" in state
    class_token, avg_pool = "cls_token" in state, "fc_norm.weight" in state  # timm's global_pool "avg" has fc_norm
    if head_dist != ("head_dist.bias" in state) or (head_dist and not dist_token):
        raise WaveError(f"{source}: a distilled DeiT has dist_token, head_dist.weight and head_dist.bias together, this state dict "
                        f"has only {', '.join(k for k in ('dist_token', 'head_dist.weight', 'head_dist.bias') if k in state)}: "
                        f"pass a complete checkpoint")
    shapes = {k: tuple(state[k].shape) for k in required}
    if len(shapes["patch_embed.proj.weight"]) != 4 or len(shapes["pos_embed"]) != 3 or len(shapes["head.weight"]) != 2:
        raise WaveError(f"{source}: patch_embed.proj.weight, pos_embed or head.weight has the wrong number of axes for a ViT: "
                        f"pass a plain timm ViT")
    width, channels, patch, _ = shapes["patch_embed.proj.weight"]
    patches = shapes["pos_embed"][1] - class_token - dist_token
    grid = round(patches**0.5)
    if grid * grid != patches:
        raise WaveError(f"{source}: {patches} position embeddings (without the class{' and distillation' if dist_token else ''} token) "
                        f"do not form a square grid of patches")
    try:
        return ViTSpec(
            depth=depth,
            width=int(width),
            heads=heads,
            patch_size=int(patch),
            image_size=int(grid * patch),
            channels=int(channels),
            num_classes=int(shapes["head.weight"][0]),
            mlp_ratio=int(shapes["blocks.0.mlp.fc1.weight"][0]) // int(width),
            dist_token=dist_token,
            head_dist=head_dist,
            class_token=class_token,
            global_pool="avg" if avg_pool else "token",
        )
    except WaveError as e:
        raise WaveError(f"{source}: {e}") from None


def grey_as_rgb(state_dict: dict, spec: ViTSpec) -> tuple[dict, ViTSpec]:
    """A grey (1-channel) ViT as a 3-channel one computing the same on grey images given as RGB
    (R = G = B): each channel of the patch embedding is the weight / 3, the reverse of timm's
    `adapt_input_conv`, for clients that feed every image as RGB (transformers' pipeline)."""
    if spec.channels != 1:
        raise WaveError(f"grey_as_rgb takes a 1-channel model, this one has {spec.channels}")
    w = state_dict["patch_embed.proj.weight"]  # (width, 1, P, P)
    xp = array_namespace(w)
    return {**state_dict, "patch_embed.proj.weight": xp.concat([w / 3] * 3, axis=1)}, spec.replace(channels=3)  # (width, 3, P, P)


def rgb_as_grey(state_dict: dict, spec: ViTSpec) -> tuple[dict, ViTSpec]:
    """The inverse of `grey_as_rgb`: the patch embedding's 3 channels summed into one."""
    w = state_dict["patch_embed.proj.weight"]  # (width, 3, P, P)
    xp = array_namespace(w)
    return {**state_dict, "patch_embed.proj.weight": xp.sum(w, axis=1, keepdims=True)}, spec.replace(channels=1)  # (width, 1, P, P)
