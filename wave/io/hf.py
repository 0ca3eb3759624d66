"""Hugging Face interoperability: our ViT <-> `transformers.ViTForImageClassification`, and a ViT
with DeiT's distillation token <-> `DeiTForImageClassification[WithTeacher]`.

A Hugging Face model folder holds `config.json` and `model.safetensors`; this module reads and
writes such folders with NumPy alone (no torch, no transformers), so any WAVE model can be
handed to the Hugging Face ecosystem and any HF ViT classifier can be an ancestry.

The two networks compute the same function; only names differ (timm keys on the left, the
names `save_pretrained` writes on the right, `{i}` the block index):

| ours (timm)                | Hugging Face                                                     |
| -------------------------- | ---------------------------------------------------------------- |
| cls_token (1, 1, w)        | vit.embeddings.cls_token                                         |
| pos_embed (1, tokens, w)   | vit.embeddings.position_embeddings                               |
| patch_embed.proj.*         | vit.embeddings.patch_embeddings.projection.*                     |
| blocks.{i}.norm1.*         | vit.encoder.layer.{i}.layernorm_before.*                         |
| blocks.{i}.attn.qkv.*      | vit.encoder.layer.{i}.attention.attention.{query,key,value}.*    |
| blocks.{i}.attn.proj.*     | vit.encoder.layer.{i}.attention.output.dense.*                   |
| blocks.{i}.norm2.*         | vit.encoder.layer.{i}.layernorm_after.*                          |
| blocks.{i}.mlp.fc1.*       | vit.encoder.layer.{i}.intermediate.dense.*                       |
| blocks.{i}.mlp.fc2.*       | vit.encoder.layer.{i}.output.dense.*                             |
| norm.*                     | vit.layernorm.*                                                  |
| head.*                     | classifier.*                                                     |

A DeiT's names start with `deit.` instead of `vit.`; its `dist_token` is
`deit.embeddings.distillation_token`, and `DeiTForImageClassificationWithTeacher` calls its
heads `cls_classifier` (our `head`) and `distillation_classifier` (our `head_dist`).

`qkv` (3w, w) is the row-wise concatenation [query; key; value], each (w, w), heads contiguous
within each, exactly as both attention implementations reshape it. transformers 5 renamed its
modules in memory (`vit.layers.{i}.attention.q_proj`, `o_proj`, `mlp.fc1`, ...) but still
saves the names above; both spellings are read.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

import numpy as np

from ..errors import WaveError, reason
from ..keys import ModelFile, check_state_dict, grey_as_rgb, rgb_as_grey, state_dict_keys
from ..spec import SCHEMA, ViTSpec, roles_of
from .storage import read_file, safetensors_bytes, tensor_dtypes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SHARD_INDEX_FILE = "model.safetensors.index.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
_EXPORT_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE, "learngene.safetensors", "README.md"})  # and a learngene's
# Formats HF folders may hold that we never load: pickles run code when read.
_UNSAFE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")

# The classifiers' HF names (`Role.hf`'s {head}), by the class that holds them.
# DeiTForImageClassification reads only the class token (its distillation token takes part in
# attention, and no head reads it); DeiTForImageClassificationWithTeacher averages the two heads,
# as our head and head_dist do.
_CLASSIFIER = {
    "ViTForImageClassification": "classifier",
    "DeiTForImageClassification": "classifier",
    "DeiTForImageClassificationWithTeacher": "cls_classifier",
}
_QKV = (("query", "q"), ("key", "k"), ("value", "v"))  # the three thirds of our qkv, in order: (checkpoint, transformers 5)
_LAYER_PREFIX = "{m}.encoder.layer.{i}."
_V5_LAYER = re.compile(r"^(vit|deit)\.layers\.(\d+)\.(.*)$")
# Tensors the classifiers themselves ignore: a pooler (ViTModel's) and a masking token (SimMIM's).
_IGNORED = re.compile(r"^(vit|deit)\.(pooler\.|embeddings\.mask_token$)")

# transformers' ViTConfig defaults, for fields a config.json leaves out.
_CONFIG_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
}


# ----------------------------------------------------------------------------- state dicts


def architecture(spec: ViTSpec) -> str:
    """The transformers class that computes what our ViT `spec` does."""
    if spec.global_pool != "token":
        raise WaveError("transformers' ViT classifies from the class token and has no average pooling: "
                        "export this model with --format timm")
    if not spec.dist_token:
        return "ViTForImageClassification"
    return "DeiTForImageClassificationWithTeacher" if spec.head_dist else "DeiTForImageClassification"


def _backbone(spec: ViTSpec) -> str:
    return "deit" if spec.dist_token else "vit"


def _single_names(spec: ViTSpec) -> list[tuple[str, str]]:
    """(our key, HF name) of every tensor outside the blocks."""
    names = {"m": _backbone(spec), "head": _CLASSIFIER[architecture(spec)]}
    return [(r.name, r.hf.format(**names)) for r in roles_of(spec) if not r.per_layer]


def _layer_names(spec: ViTSpec, i: int) -> list[tuple[str, list[str]]]:
    """(our key, HF names) of every tensor of block i; qkv has three, its thirds in order."""
    prefix = _LAYER_PREFIX.format(m=_backbone(spec), i=i)
    return [(r.key(i), [prefix + r.hf.format(qkv=qkv) for qkv, _ in _QKV] if "{qkv}" in r.hf else [prefix + r.hf])
            for r in roles_of(spec) if r.per_layer]


def _v5_to_checkpoint() -> dict[str, str]:
    """transformers 5's in-memory names within a layer -> the checkpoint's (where they differ)."""
    pairs = [(r.hf5.format(qkv5=q5), r.hf.format(qkv=q)) for r in SCHEMA if r.hf5 for q, q5 in _QKV]
    return {v5.rpartition(".")[0]: legacy.rpartition(".")[0] for v5, legacy in pairs}


def to_hf(state_dict: dict, spec: ViTSpec, labels: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(HF state dict, config.json contents) of our timm-keyed ViT `spec` (a DeiT's if it has a
    distillation token: see `architecture`).

    state_dict: timm keys -> arrays (anything `np.asarray` takes), shapes as in `spec.py`.
    labels: class names for `id2label` [default: LABEL_0, LABEL_1, ... as transformers names them].
    The HF tensors are NumPy views or copies, same dtypes; qkv (3w, w) is split into three (w, w).
    """
    check_state_dict("state dict", state_dict, spec)
    state = {k: np.asarray(v) for k, v in state_dict.items()}
    hf = {theirs: state[ours] for ours, theirs in _single_names(spec)}
    for i in range(spec.depth):
        for ours, theirs in _layer_names(spec, i):
            parts = np.split(state[ours], len(theirs))  # qkv (3w, w) or (3w,): three thirds; others whole
            hf.update(zip(theirs, parts))
    return hf, hf_config(spec, labels, dtype=str(state["head.weight"].dtype))


def hf_config(spec: ViTSpec, labels: list[str] | None = None, dtype: str = "float32") -> dict:
    """The config.json of the transformers class (`architecture(spec)`) for our ViT `spec`."""
    labels = list(labels) if labels is not None else [f"LABEL_{c}" for c in range(spec.num_classes)]
    if len(labels) != spec.num_classes:
        raise WaveError(f"{len(labels)} class names given for a model of {spec.num_classes} classes: give one name per class")
    if len(set(labels)) != len(labels):
        raise WaveError("class names must be distinct: label2id maps each name to one class")
    return {
        "architectures": [architecture(spec)],
        "model_type": _backbone(spec),
        "hidden_size": spec.width,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.heads,
        "intermediate_size": spec.mlp_width,
        "hidden_act": "gelu",  # exact (erf) GELU, as torch.nn.GELU()
        "hidden_dropout_prob": 0.0,  # our ViT has no dropout
        "attention_probs_dropout_prob": 0.0,
        "layer_norm_eps": spec.layer_norm_eps,  # ours (timm's 1e-6 unless the model came with another)
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "num_channels": spec.channels,
        "qkv_bias": True,
        "encoder_stride": spec.patch_size,  # only used by masked image modelling heads
        "initializer_range": 0.02,
        "id2label": {str(c): name for c, name in enumerate(labels)},
        "label2id": {name: c for c, name in enumerate(labels)},
        "dtype": dtype,
    }


def preprocessor_config(spec: ViTSpec, pixel_max: float = 255.0) -> dict:
    """The preprocessor_config.json of `transformers.ViTImageProcessor` that scales images as our
    datasets do: resized to the model's side (bilinear), each value v mapped to 2 v / pixel_max - 1
    in [-1, 1] (rescale by 1 / pixel_max, then mean 0.5 and std 0.5 per channel). `pixel_max` is
    255 for 8-bit images, 16 for scikit-learn's digits. Our image folders take the central square
    before resizing; give this processor square images for the same pixels."""
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": spec.image_size, "width": spec.image_size},
        "resample": 2,  # PIL's bilinear
        "do_rescale": True,
        "rescale_factor": 1.0 / pixel_max,
        "do_normalize": True,
        "image_mean": [0.5] * spec.channels,
        "image_std": [0.5] * spec.channels,
    }


def from_hf(hf_state_dict: dict, config: dict, source: str = "Hugging Face model") -> tuple[dict[str, np.ndarray], ViTSpec]:
    """(timm-keyed state dict, ViTSpec) of a `ViTForImageClassification`, a `DeiTForImageClassification`
    or a `DeiTForImageClassificationWithTeacher`: the inverse of `to_hf`. A DeiT keeps its
    distillation token, and the second head (as `head_dist`) where it has one.

    hf_state_dict: HF names (as `save_pretrained` writes them, or transformers 5's in-memory
    names) -> arrays; config: the parsed config.json. query/key/value (w, w) are concatenated
    into qkv (3w, w). WaveError (one line, naming `source`) for anything our ViT cannot
    represent exactly: another model type or activation, a missing classifier,
    missing or unexpected tensors, wrong shapes.
    """
    spec = spec_from_config(config, source)
    state = _legacy_names({k: np.asarray(v) for k, v in hf_state_dict.items()})
    if spec.dist_token and "distillation_classifier.weight" in state:
        spec = spec.replace(head_dist=True)
    head = _CLASSIFIER[architecture(spec)] + ".weight"
    if head not in state:
        raise WaveError(
            f"{source} has no classifier ({head}): it is a backbone ({'DeiT' if spec.dist_token else 'ViT'}Model) "
            f"checkpoint; only image classifiers can be loaded: give it a classification head first"
        )
    n_classes = int(state[head].shape[0])
    if n_classes != spec.num_classes:
        spec = spec.replace(num_classes=n_classes)  # the tensors decide; a config may omit id2label

    used = set()

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise WaveError(f"{source} lacks tensor {name} that a {spec.depth}-layer {architecture(spec)} has: "
                            f"the checkpoint is incomplete or of another architecture")
        used.add(name)
        return state[name]

    ours = {mine: take(theirs) for mine, theirs in _single_names(spec)}
    for i in range(spec.depth):
        for mine, theirs in _layer_names(spec, i):
            parts = [take(name) for name in theirs]  # qkv: 3 x (w, w) or (w,)
            if len({t.shape for t in parts}) != 1:
                raise WaveError(f"{source}: query, key and value of layer {i} differ in shape ({', '.join(str(t.shape) for t in parts)}): not a standard ViT")
            ours[mine] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    extra = sorted(k for k in state if k not in used and not _IGNORED.match(k))
    if extra:
        raise WaveError(
            f"{source} has tensors a {spec.depth}-layer {architecture(spec)} does not ({', '.join(extra[:3])}): "
            f"check num_hidden_layers in its config.json; other architectures are not supported"
        )
    ours = {k: ours[k] for k in state_dict_keys(spec)}  # timm's order
    check_state_dict(source, ours, spec)
    return ours, spec


def _legacy_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename transformers 5's in-memory names (`vit.layers.{i}.attention.q_proj...`) to the
    checkpoint names `save_pretrained` writes; other keys are kept."""
    v5_to_legacy = _v5_to_checkpoint()
    renamed = {}
    for key, value in state.items():
        m = _V5_LAYER.match(key)
        if m:
            backbone, layer, rest = m.groups()
            module, _, param = rest.rpartition(".")
            key = f"{_LAYER_PREFIX.format(m=backbone, i=layer)}{v5_to_legacy.get(module, module)}.{param}"
        renamed[key] = value
    return renamed


def spec_from_config(config: dict, source: str = "Hugging Face model") -> ViTSpec:
    """The ViTSpec of a ViT config.json; WaveError for what our plain ViT does not compute."""
    if not isinstance(config, dict):
        raise WaveError(f"{source}: config.json is not a JSON object: write it again with save_pretrained")
    model_type = config.get("model_type")
    if model_type not in ("vit", "deit"):
        raise WaveError(f"{source} is a {model_type!r} model, not a ViT or DeiT (model_type 'vit' or 'deit'): "
                        f"only ViTForImageClassification and DeiTForImageClassification[WithTeacher] are supported")
    c = {**_CONFIG_DEFAULTS, **config}
    if c["hidden_act"] != "gelu":
        raise WaveError(f"{source} uses activation {c['hidden_act']!r}, our ViT uses exact GELU ('gelu'): only such ViTs can be loaded")
    eps = c["layer_norm_eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise WaveError(f"{source}: layer_norm_eps {eps!r} in its config.json is not a number in (0, 1): write the config again")
    if not c["qkv_bias"]:
        raise WaveError(f"{source} has no query/key/value biases (qkv_bias false): our ViT always has them")
    image_size, patch_size = _square(c["image_size"], "image_size", source), _square(c["patch_size"], "patch_size", source)
    width, heads, mlp = c["hidden_size"], c["num_attention_heads"], c["intermediate_size"]
    if not all(isinstance(v, int) and v > 0 for v in (width, heads, mlp)):
        raise WaveError(f"{source}: hidden_size, num_attention_heads and intermediate_size must be positive integers, got {width}, {heads}, {mlp}")
    if "head_dim" in config and config["head_dim"] * heads != width:
        raise WaveError(f"{source}: head_dim {config['head_dim']} x {heads} heads is not hidden_size {width}: our ViT needs heads x head_dim == width")
    if mlp % width:
        raise WaveError(f"{source}: intermediate_size {mlp} is not a multiple of hidden_size {width}: our ViT needs an integer MLP ratio")
    id2label = config.get("id2label") or {}
    return ViTSpec(
        depth=c["num_hidden_layers"],
        width=width,
        heads=heads,
        patch_size=patch_size,
        image_size=image_size,
        channels=c["num_channels"],
        num_classes=config.get("num_labels", len(id2label) or 2),  # transformers' default is 2 labels
        mlp_ratio=mlp // width,
        layer_norm_eps=float(eps),
        dist_token=model_type == "deit",  # every DeiT has one; whether a head reads it, the tensors say
    )


def _square(value, name: str, source: str) -> int:
    """An int from `224` or `[224, 224]`; our ViT takes square images and patches only."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise WaveError(f"{source}: {name} {list(value)} is not square: our ViT takes square images and patches only")
        value = value[0]
    return value


# ----------------------------------------------------------------------------- folders

def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with a config.json (the mark of a Hugging Face model folder)."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()


def save_hf(folder: str | os.PathLike, state_dict: dict, spec: ViTSpec, provenance: dict | None = None,
            labels: list[str] | None = None, pixel_max: float = 255.0, rgb: bool = False) -> None:
    """Write our ViT as a Hugging Face model folder (`config.json` with `labels` as id2label,
    `model.safetensors`, and `preprocessor_config.json`: `preprocessor_config`).

    `transformers.ViTForImageClassification.from_pretrained(folder)` then computes what our ViT
    does. `rgb` (`wave export`'s default): a grey model gets three input channels for RGB clients
    (`keys.grey_as_rgb`, noted in the provenance; `load_hf_model` folds it back). Atomic (`write_folder`).
    """
    if rgb and spec.channels == 1:
        state_dict, spec = grey_as_rgb(state_dict, spec)
        provenance = {**(provenance or {}), "grey_as_rgb": True}
    hf_state, config = to_hf(state_dict, spec, labels)
    write_folder(folder, {
        CONFIG_FILE: json_bytes(config),
        WEIGHTS_FILE: weights_bytes(hf_state, spec, provenance),
        PREPROCESSOR_FILE: json_bytes(preprocessor_config(spec, pixel_max)),
    })


def json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def weights_bytes(tensors: dict, spec: ViTSpec, provenance: dict | None) -> bytes:
    """model.safetensors for a model folder. "format": "pt" is what transformers and timm expect
    of a safetensors checkpoint; "waveinit" keeps our spec and provenance, which they ignore."""
    metadata = {"format": "pt", "waveinit": json.dumps({"spec": spec.to_dict(), "provenance": provenance or {}})}
    return safetensors_bytes(tensors, metadata)


def write_folder(folder: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write a model folder of `files` (name -> bytes) atomically: into a temporary folder next
    to `folder`, then renamed into place. A previous export there (only export files) is
    replaced, anything else is refused; a crash or error never leaves a half-written folder."""
    folder = Path(folder)
    _check_replaceable(folder)
    tmp = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.tmp"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()  # mkdir, not mkdtemp: the folder gets the user's usual permissions, not 0700
        for name, data in files.items():
            _write_synced(tmp / name, data)
        _fsync_dir(tmp)
        _swap_in(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise WaveError(f"cannot write {folder} ({e.strerror or e}): check the folder's permissions and free space") from None
        raise


def _check_replaceable(folder: Path) -> None:
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise WaveError(f"{folder} exists and is not a folder: choose another --out path for the Hugging Face folder")
    try:
        others = sorted(p.name for p in folder.iterdir() if p.name not in _EXPORT_FILES)
    except OSError as e:
        raise WaveError(f"cannot read {folder} ({e.strerror or e}): check its permissions or choose another --out folder") from None
    if others:
        raise WaveError(
            f"{folder} holds files other than a previous export ({', '.join(others[:3])}): "
            f"choose another --out folder or empty this one"
        )


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename `tmp` to `folder`; a previous export there is moved aside first and deleted after."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    old = folder.parent / f".{folder.name}.{secrets.token_hex(4)}.old"
    os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except BaseException:
        os.rename(old, folder)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_hf(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], ViTSpec]:
    """(timm-keyed state dict, ViTSpec) of a Hugging Face ViTForImageClassification folder."""
    model = load_hf_model(folder)
    return model.state_dict, model.spec


def load_hf_model(folder: str | os.PathLike) -> ModelFile:
    """A Hugging Face ViTForImageClassification folder as a ModelFile (timm keys).

    Reads `config.json` and `model.safetensors` (or shards listed in `model.safetensors.index.json`);
    a folder with only pickled weights (`pytorch_model.bin`) is refused, never unpickled.
    Provenance is what `save_hf` stored, else {"source": folder}; a grey model exported for RGB is grey again."""
    folder = Path(folder)
    config = read_config(folder)
    tensors, provenance = read_folder_weights(folder)
    state, spec = from_hf(tensors, config, source=str(folder))
    if provenance.pop("grey_as_rgb", False) and spec.channels == 3:  # our export of a grey model: the grey model it was
        state, spec = rgb_as_grey(state, spec)
    return ModelFile(state, spec, provenance)


def read_folder_weights(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, provenance) of a model folder's safetensors files (a Hugging Face or timm
    folder): the provenance our own exports stored, else {"source": folder}."""
    tensors, provenance = {}, {"source": str(folder)}
    for path in weight_files(folder):
        metadata, part = read_weights(path)
        tensors.update(part)
        if "waveinit" in metadata:
            try:
                provenance = json.loads(metadata["waveinit"]).get("provenance") or provenance
            except (json.JSONDecodeError, AttributeError):
                pass  # our own note only: the weights and config are what count
    return tensors, provenance


def read_config(folder: str | os.PathLike) -> dict:
    """The parsed config.json of a model folder; WaveError if missing or not JSON."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WaveError(f"{folder}: no such folder: check the path")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise WaveError(f"{folder} is a folder without {CONFIG_FILE}, not a Hugging Face model folder: "
                        f"pass a model file or a folder written by save_pretrained")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WaveError(f"{path} is not valid JSON ({reason(e)}): write the model again with save_pretrained") from None
    if not isinstance(config, dict):
        raise WaveError(f"{path} is not a JSON object: write the model again with save_pretrained")
    return config


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The safetensors files of a model folder: model.safetensors, or the shards of its index."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    index = folder / SHARD_INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise WaveError(f"{index} is damaged (no readable weight_map): write the model again with save_pretrained") from None
    unsafe = [name for name in _UNSAFE_FILES if (folder / name).is_file()]
    if unsafe:
        raise WaveError(
            f"{folder} holds {unsafe[0]}, a pickle that waveinit never loads (it can run code): "
            f"re-save the model with save_pretrained(folder, safe_serialization=True) to write {WEIGHTS_FILE}"
        )
    raise WaveError(f"{folder} has a {CONFIG_FILE} but no {WEIGHTS_FILE}: the export is incomplete; write it again")


def read_weights(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors) of one safetensors file of a model folder; bfloat16 is refused by name."""
    bf16 = [name for name, (_, dtype) in tensor_dtypes(path).items() if dtype == "BF16"]
    if bf16:
        raise WaveError(
            f"{path} stores bfloat16 tensors ({bf16[0]}, ...), which NumPy cannot hold: "
            f"save the model in float32 first (model.float().save_pretrained(folder))"
        )
    return read_file(path)
