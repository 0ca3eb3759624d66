"""What a file holds, for `wave inspect`: its kind (learngene, TLEG learngene, model, training
checkpoint, plain safetensors state dict, Hugging Face folder), format and version, model spec, tensors and
provenance, as one JSON-able dict. Headers and shapes only: no tensor data is read where none
is needed, and nothing here needs torch.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from ..errors import WaveError
from ..keys import check_state_dict, spec_from_state_dict
from ..spec import ROLES, ViTSpec
from . import hf, timm
from .files import learngene_path, load_learngene, load_model, load_tleg, read_checkpoint_header
from .storage import CHECKPOINT_FORMAT, LEARNGENE_FORMAT, MODEL_FORMAT, TLEG_FORMAT, read_file, read_header, read_metadata, tensor_dtypes


def describe(path: str | os.PathLike, revision: str | None = None) -> dict:
    """A JSON-able description of a WAVE file or Hugging Face folder (what `wave inspect` shows).

    Keys: path, kind (learngene | tleg | model | checkpoint | safetensors | huggingface), format,
    format_version, spec (or None), parameters, tensors [{name, shape, dtype, bytes}],
    tensor_bytes, provenance; a learngene adds side, kron_order, roles, template_params, scaler_params, dense_params;
    a TLEG learngene's parameters are those it stores (A, B and the shared ones);
    a checkpoint adds checkpoint (task, position, history); a folder adds config; anything
    that is not a ViT we can load adds note (why); a Hub model (`ORG/NAME`, `hf-hub:ORG/NAME`)
    is described from its cached snapshot, with hub `hf:ORG/NAME@COMMIT`.
    """
    from .hub import describe as hub_name
    from .hub import folder_file, hub_reference, is_learngene_folder, resolve

    reference = hub_reference(path, revision)
    if reference is not None:
        folder, commit = resolve(*reference)
        info = describe(folder_file(folder)) if is_learngene_folder(folder) else _describe_folder(folder)
        return {**info, "hub": hub_name(reference[0], commit)}
    path = learngene_path(path)  # a shipped learngene's name, a learngene's Hub folder, or the path as it is
    if path.is_dir():
        return _describe_folder(path)
    tensors = _tensor_list(path)
    metadata = read_metadata(path)
    fmt = metadata.get("format")
    info = {"path": str(path), "kind": "safetensors", "format": fmt, "format_version": None, "spec": None,
            "provenance": {}, "tensors": tensors, "tensor_bytes": sum(t["bytes"] for t in tensors)}
    if fmt == LEARNGENE_FORMAT:
        learngene = load_learngene(path)
        info.update(kind="learngene", format_version=read_header(path, metadata)["format_version"],
                    spec=learngene.spec.to_dict(), side=learngene.side, kron_order=learngene.order, provenance=learngene.provenance,
                    roles=_roles(learngene), template_params=learngene.num_template_params(),
                    scaler_params=learngene.num_scaler_params(), dense_params=learngene.num_dense_params())
    elif fmt == TLEG_FORMAT:
        gene = load_tleg(path)
        info.update(kind="tleg", format_version=read_header(path, metadata)["format_version"],
                    spec=gene.spec.to_dict(), provenance=gene.provenance, parameters=gene.num_params())
    elif fmt == MODEL_FORMAT:
        model = load_model(path)
        info.update(kind="model", format_version=read_header(path, metadata)["format_version"],
                    spec=model.spec.to_dict(), provenance=model.provenance)
    elif fmt == CHECKPOINT_FORMAT:
        header = read_checkpoint_header(path, metadata)
        meta = header.get("fingerprint", {}).get("meta", {})
        info.update(kind="checkpoint", format_version=int(metadata.get("format_version", 0)), spec=meta.get("spec"),
                    provenance={k: v for k, v in meta.items() if k != "spec"}, checkpoint=_checkpoint_summary(header))
    else:
        # Not one of ours: a timm-style state dict, perhaps ("format": "pt" is what torch writers put).
        _, arrays = read_file(path)
        try:
            spec = spec_from_state_dict(arrays, source=str(path))
            check_state_dict(path, arrays, spec)
            info.update(spec=spec.to_dict(), note="a plain ViT state dict: heads are not stored, width / 64 assumed")
        except WaveError as e:
            info["note"] = f"not a ViT waveinit can load: {e}"
    if info["spec"] is not None and info["kind"] not in ("learngene", "tleg"):
        info["parameters"] = _num_params(info["spec"])
    return info


def _describe_folder(folder: Path) -> dict:
    """A Hugging Face (transformers) or timm model folder."""
    config = hf.read_config(folder)
    tensors = [t for path in hf.weight_files(folder) for t in _tensor_list(path)]
    info = {"path": str(folder), "kind": "huggingface", "format": f"huggingface {config.get('model_type')}",
            "format_version": config.get("transformers_version"), "architectures": config.get("architectures"),
            "spec": None, "provenance": {}, "tensors": tensors, "tensor_bytes": sum(t["bytes"] for t in tensors),
            "config": config}
    if timm.is_timm_config(config):
        info.update(kind="timm", format=f"timm {config['architecture']}", format_version=None, architectures=[config["architecture"]])
    try:
        model = timm.load_timm_model(folder) if info["kind"] == "timm" else hf.load_hf_model(folder)
        info.update(spec=model.spec.to_dict(), provenance=model.provenance, parameters=model.spec.num_params())
    except WaveError as e:  # still worth showing what it holds, with the reason it does not load
        info["note"] = f"not a ViT waveinit can load: {e}"
    return info


def _num_params(spec: dict) -> int | None:
    try:
        return ViTSpec.from_dict(spec).num_params()
    except (WaveError, TypeError):
        return None


_DTYPES = {  # safetensors dtype -> (name, bytes per element)
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1), "BOOL": ("bool", 1),
}


def _tensor_list(path: Path) -> list[dict]:
    """[{name, shape, dtype, bytes}] of a safetensors file, in natural key order, data unread."""
    if not path.is_file():
        raise WaveError(f"{path}: no such file or folder: check the path")
    shapes = tensor_dtypes(path)
    rows = []
    for name in sorted(shapes, key=_natural):
        shape, dtype = shapes[name]
        dtype_name, itemsize = _DTYPES.get(dtype, (dtype.lower(), 0))
        rows.append({"name": name, "shape": shape, "dtype": dtype_name, "bytes": math.prod(shape) * itemsize})
    return rows


def _natural(name: str) -> list:
    """Sort key with numbers compared as numbers: blocks.2 before blocks.10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _roles(learngene) -> dict:
    out = {}
    for role in ROLES:
        if role.name in learngene.dense:
            out[role.name] = {"dense_shape": [int(x) for x in learngene.dense[role.name].shape], "per_layer": role.per_layer,
                              "dense_params": int(learngene.dense[role.name].size)}
            continue
        t, s = learngene.templates[role.name], learngene.scalers[role.name]
        out[role.name] = {
            "templates": int(t.shape[0]),
            "template_shape": [int(x) for x in t.shape[1:]],
            "scaler_shape": [int(x) for x in s.shape[(2 if role.per_layer else 1):]],
            "per_layer": role.per_layer,
            "template_params": int(t.size),
            "scaler_params": int(s.size),
        }
    return out


def _checkpoint_summary(header: dict) -> dict:
    meta = header.get("fingerprint", {}).get("meta", {})
    keys = ("global_step", "total_steps", "epoch", "epochs", "step", "steps_per_epoch", "complete", "world_size", "torch")
    history = header.get("history", [])
    return {"task": meta.get("task"), **{k: header.get(k) for k in keys}, "epochs_done": len(history), "history": history}
