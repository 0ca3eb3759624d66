"""timm's names and folders for the plain ViTs this package makes: the size table
(`vit_small` is 12 blocks of width 384 with 6 heads), a timm Hub folder's `config.json` read
into a `ViTSpec`, and the `config.json` that lets `timm.create_model("local-dir:DIR")` build one.

A timm folder holds `config.json` (`architecture`, `num_classes`, `pretrained_cfg` with the
input size, `model_args` with what the architecture's defaults do not say) and
`model.safetensors` (timm's keys, which are ours). No timm import: the names and defaults are
timm's `vision_transformer.py` and `deit.py`, written down here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import WaveError
from ..keys import ModelFile, check_state_dict, state_dict_keys
from ..spec import GLOBAL_POOLS, ViTSpec
from .storage import refuse_unexpected

# name -> (depth, width, heads), timm's ViT and DeiT sizes
SIZES = {
    "tiny": (12, 192, 3),
    "small": (12, 384, 6),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}
# An architecture this package can hold: timm's vit_* and deit_* (distilled or not) ViTs.
_ARCHITECTURE = re.compile(r"^(?P<family>vit|deit)_(?P<size>tiny|small|base|large)_(?P<distilled>distilled_)?patch(?P<patch>\d+)_(?P<image>\d+)$")
# model_args whose value here is the only one our ViT has (anything else is refused by name).
_FIXED_ARGS = {"qkv_bias": True, "no_embed_class": False, "reg_tokens": 0,
               "pre_norm": False, "fc_norm": None, "drop_rate": 0.0, "pos_drop_rate": 0.0, "attn_drop_rate": 0.0,
               "proj_drop_rate": 0.0, "drop_path_rate": 0.0, "init_values": None, "qk_norm": False, "dynamic_img_size": False}


def size_named(name: str) -> tuple[int, int, int]:
    """`vit_small` (or `small`, `deit_small`) -> (depth, width, heads) from timm's table."""
    key = re.sub(r"^(vit|deit)_", "", name.strip().lower())
    if key not in SIZES:
        raise WaveError(f"unknown size {name!r}: choose one of {', '.join('vit_' + s for s in SIZES)}")
    return SIZES[key]


def architecture_name(spec: ViTSpec) -> str:
    """The registered timm architecture to build `spec` from, its defaults overridden by
    `model_args` (patch and image size included): the named size nearest in width, patch 16 at 224."""
    family = "deit" if spec.dist_token else "vit"
    size = min(SIZES, key=lambda s: (abs(SIZES[s][1] - spec.width), SIZES[s][1]))
    distilled = "distilled_" if spec.dist_token else ""
    if spec.dist_token and not spec.head_dist:
        raise WaveError("timm's distilled DeiT has a second head: a model with a distillation token and no head_dist has no timm name")
    return f"{family}_{size}_{distilled}patch16_224"


def model_args(spec: ViTSpec) -> dict:
    """timm.create_model keyword arguments that build exactly `spec` from `architecture_name(spec)`."""
    args = {"depth": spec.depth, "embed_dim": spec.width, "num_heads": spec.heads, "mlp_ratio": float(spec.mlp_ratio),
            "patch_size": spec.patch_size, "img_size": spec.image_size, "in_chans": spec.channels, "num_classes": spec.num_classes}
    if spec.global_pool != "token":
        args.update(class_token=spec.class_token, global_pool=spec.global_pool)
    return args


def timm_config(spec: ViTSpec, labels: list[str] | None = None, pixel_max: float = 255.0) -> dict:
    """The `config.json` of a timm folder holding `spec`'s weights (`local-dir:` or the Hub).

    Its pretrained_cfg states our preprocessing in timm's terms, so that `resolve_data_config`
    and `create_transform` give it: timm's ToTensor maps an 8-bit value v to v / 255, and mean =
    std = pixel_max / 510 then gives (v / 255 - m) / m = 2 v / pixel_max - 1, our [-1, 1]
    scaling (0.5 for 8-bit images; `pixel_max` is also said in `waveinit_pixel_max`)."""
    if spec.layer_norm_eps != 1e-6:
        raise WaveError(f"timm's ViT uses LayerNorm eps 1e-6, this model {spec.layer_norm_eps:g}: it has no timm form; export it with --format hf")
    config = {
        "architecture": architecture_name(spec),
        "num_classes": spec.num_classes,
        "num_features": spec.width,
        "global_pool": spec.global_pool,
        "model_args": model_args(spec),
        "pretrained_cfg": {
            "input_size": [spec.channels, spec.image_size, spec.image_size],
            "fixed_input_size": True,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [pixel_max / 510] * spec.channels,
            "std": [pixel_max / 510] * spec.channels,
            "num_classes": spec.num_classes,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": ["head", "head_dist"] if spec.head_dist else "head",
        },
    }
    if labels is not None:
        config["label_names"] = list(labels)
    if pixel_max != 255.0:
        config["waveinit_pixel_max"] = pixel_max
    return config


def is_timm_config(config: dict) -> bool:
    """timm's config.json names one `architecture`; transformers' lists `architectures`."""
    return isinstance(config.get("architecture"), str)


def spec_from_timm_config(config: dict, source: str = "timm model") -> ViTSpec:
    """The ViTSpec of a timm folder's `config.json`: depth, width and heads from the
    architecture's size and `model_args`, image size and channels from `pretrained_cfg`, the
    classes from `num_classes`, eps timm's 1e-6, the class token and pooling (`class_token`,
    `global_pool` "token" or "avg") from `model_args`. Anything our ViT does not have (register
    tokens, max pooling, ...) is a one-line error naming it."""
    name = config["architecture"].split(".")[0]  # a pretrained tag (".augreg_in21k_ft_in1k") names weights, not shapes
    match = _ARCHITECTURE.match(name)
    if match is None:
        raise WaveError(f"{source}: architecture {name!r} is not a plain ViT or DeiT this package can hold "
                        f"(vit_<size>_patch<P>_<S>, deit_<size>[_distilled]_patch<P>_<S>)")
    args = dict(config.get("model_args") or {})
    if config.get("global_pool") not in (None, "token"):  # timm writes the pooling at the top level too
        args.setdefault("global_pool", config["global_pool"])
    pretrained = config.get("pretrained_cfg") or {}
    pool = args.get("global_pool", "token")
    if pool not in GLOBAL_POOLS:
        raise WaveError(f"{source}: model_args global_pool={pool!r} is not in our ViT (it pools by {' or '.join(GLOBAL_POOLS)}): "
                        f"this model cannot be a teacher here")
    for key, ours in _FIXED_ARGS.items():
        if key in args and args[key] != ours:
            raise WaveError(f"{source}: model_args {key}={args[key]!r} is not in our ViT (it has {key}={ours!r}): "
                            f"this model cannot be a teacher here")
    depth, width, heads = SIZES[match["size"]]
    input_size = pretrained.get("input_size") or [3, int(match["image"]), int(match["image"])]
    image = args.get("img_size", input_size[-1])
    image = image[0] if isinstance(image, (list, tuple)) and image[0] == image[-1] else image
    if not isinstance(image, int):
        raise WaveError(f"{source}: image size {image} is not square: our ViT takes square images only")
    distilled = match["distilled"] is not None
    return ViTSpec(
        depth=int(args.get("depth", depth)),
        width=int(args.get("embed_dim", width)),
        heads=int(args.get("num_heads", heads)),
        patch_size=int(args.get("patch_size", match["patch"])),
        image_size=int(image),
        channels=int(args.get("in_chans", input_size[0])),
        num_classes=int(config.get("num_classes", args.get("num_classes", pretrained.get("num_classes", 1000)))),
        mlp_ratio=_integral(args.get("mlp_ratio", 4), source),
        dist_token=distilled,
        head_dist=distilled,
        class_token=bool(args.get("class_token", True)),
        global_pool=pool,
    )


def _integral(ratio, source: str) -> int:
    if float(ratio) != int(ratio):
        raise WaveError(f"{source}: mlp_ratio {ratio} is not a whole number: our ViT's MLP width is a whole multiple of its width")
    return int(ratio)


def load_timm_model(folder: str | os.PathLike) -> ModelFile:
    """A timm folder (`config.json` naming an `architecture`, `model.safetensors` or shards, as
    `timm.models.save_for_hf` writes it) as a ModelFile: the spec from its config (no heads
    option needed), the tensors as they are (timm's keys are ours)."""
    from .hf import read_config, read_folder_weights

    folder = Path(folder)
    spec = spec_from_timm_config(read_config(folder), source=str(folder))
    tensors, provenance = read_folder_weights(folder)
    check_state_dict(folder, tensors, spec)
    refuse_unexpected(folder, tensors, state_dict_keys(spec), f"the {spec.depth}x{spec.width} ViT its config.json describes",
                      "check its config.json or save it again")
    return ModelFile(tensors, spec, provenance)


def save_timm(folder: str | os.PathLike, state_dict: dict, spec: ViTSpec, provenance: dict | None = None,
              labels: list[str] | None = None, pixel_max: float = 255.0) -> None:
    """Write `spec`'s weights as a timm folder, atomically (`hf.write_folder`):
    `timm.create_model("local-dir:FOLDER", pretrained=True)` builds and loads it."""
    from .hf import CONFIG_FILE, WEIGHTS_FILE, json_bytes, weights_bytes, write_folder

    check_state_dict("state dict", state_dict, spec)
    write_folder(folder, {CONFIG_FILE: json_bytes(timm_config(spec, labels, pixel_max)),
                          WEIGHTS_FILE: weights_bytes(state_dict, spec, provenance)})
