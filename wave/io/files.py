"""Learngene, model and checkpoint files: safetensors with our JSON header (`storage.py`);
written atomically, never pickled.

- A learngene file holds tensors `templates.{role}` and `scalers.{role}` (the auxiliary model's);
  its header has the model spec, the template side, the roles and the provenance.
- A model file is a plain ViT state dict with timm's key names, loadable by any ViT code; its
  header has the spec and the provenance. `load_model` also reads timm-keyed state dicts of other
  writers and Hugging Face folders (`hf.py`).
- A TLEG learngene file holds tensors `a.{role}` and `b.{role}` (one per block role) and
  `shared.{key}` (the non-block parameters); its header has the auxiliary model's spec, the
  expansion rule and the provenance.
- A training checkpoint's header (position, history, fingerprint) is read here without torch;
  the engine writes and restores its tensors.

Reading is strict: a file lacking a tensor its format holds, or holding one it does not (the
names come from the same functions the writers use), is refused by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import WaveError
from ..keys import ModelFile, check_state_dict, spec_from_state_dict, state_dict_keys
from ..learngene import Learngene
from ..spec import ROLES, ViTSpec
from ..tleg import BLOCK_ROLES, SHARED_ROLES, TLEGGene
from .storage import (
    CHECKPOINT_FORMAT,
    LEARNGENE_FORMAT,
    MODEL_FORMAT,
    TLEG_FORMAT,
    check_finite,
    expect_format,
    header_metadata,
    open_safetensors,
    read_file,
    read_header,
    read_metadata,
    refuse_unexpected,
    write_safetensors,
)

_WANT = {
    LEARNGENE_FORMAT: "a learngene (made by `wave distill`)",
    MODEL_FORMAT: "a model file (made by `wave train` or `wave spawn`)",
    TLEG_FORMAT: "a TLEG learngene (made by `waveinit.tasks.distill_tleg`)",
}


def _learngene_tensors(dense_roles=()) -> dict[str, tuple[str, str]]:
    """Tensor name -> (part, role) of a learngene file: `templates.{role}` and `scalers.{role}`
    of every templated role, `dense.{role}` of the others (`dense_roles`). The writer and the
    reader both use it, so nothing else is read."""
    return {**{f"{part}.{r.name}": (part, r.name) for r in ROLES if r.name not in dense_roles for part in ("templates", "scalers")},
            **{f"dense.{r.name}": ("dense", r.name) for r in ROLES if r.name in dense_roles}}


def _auxiliary_tensors(names) -> dict[str, tuple[str, str]]:
    """Tensor name -> (size, role) of the other sizes' scalers (`Learngene.auxiliaries`):
    `auxiliaries.{DxW}.scalers.{role}`."""
    return {f"auxiliaries.{size}.scalers.{r.name}": (size, r.name) for size in names for r in ROLES}


def save_learngene(path: str | os.PathLike, learngene: Learngene) -> None:
    tensors = {name: np.asarray(getattr(learngene, part)[role]) for name, (part, role) in _learngene_tensors(learngene.dense).items()}
    tensors.update({name: np.asarray(learngene.auxiliaries[size][1][role]) for name, (size, role) in _auxiliary_tensors(learngene.auxiliaries).items()})
    header = {
        "spec": learngene.spec.to_dict(),
        "side": learngene.side,
        "kron_order": learngene.order,
        "dense_roles": [r.name for r in ROLES if r.name in learngene.dense],
        "roles": {
            r.name: {"axes": list(r.axes), "per_layer": r.per_layer, "dense": list(learngene.dense[r.name].shape)} if r.name in learngene.dense
            else {
                "axes": list(r.axes),
                "per_layer": r.per_layer,
                "templates": list(learngene.templates[r.name].shape),
                "scalers": list(learngene.scalers[r.name].shape),
            }
            for r in ROLES
        },
        "provenance": learngene.provenance,
        **({"auxiliaries": {size: spec.to_dict() for size, (spec, _) in learngene.auxiliaries.items()}} if learngene.auxiliaries else {}),
    }
    write_safetensors(path, tensors, header_metadata(LEARNGENE_FORMAT, header))


def shipped_learngenes() -> dict[str, Path]:
    """Name -> file of the learngenes that come with the package (`wave/learngenes/`)."""
    folder = Path(__file__).resolve().parent.parent / "learngenes"
    return {p.name.removesuffix(".safetensors"): p for p in sorted(folder.glob("*.safetensors"))}


def learngene_path(name_or_path: str | os.PathLike) -> Path:
    """A learngene file: the path itself if it exists or looks like a path; the file of a
    learngene's Hub folder (`share.py`), local or on the Hub by id (`ORG/NAME`,
    `hf-hub:ORG/NAME[@REV]`, resolved through the Hugging Face cache, offline included); else the
    shipped learngene of that name (`fashion-mnist`); WaveError naming the shipped ones otherwise."""
    from .hub import folder_file, hub_reference, is_learngene_folder, resolve

    reference = hub_reference(name_or_path)
    if reference is not None:
        folder, _ = resolve(*reference)
        if not is_learngene_folder(folder):
            raise WaveError(f"{name_or_path} on the Hub is not a learngene (its config.json has no kind {'waveinit.learngene'!r}): "
                            f"give a learngene made by wave export --format hub")
        return folder_file(folder)
    path = Path(name_or_path)
    if path.is_dir() and is_learngene_folder(path):
        return folder_file(path)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    shipped = shipped_learngenes()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise WaveError(f"{name_or_path}: no such file, and no learngene of that name comes with waveinit: give a file path "
                    f"or one of {', '.join(shipped) or '(none shipped)'}")


def load_learngene(path: str | os.PathLike) -> Learngene:
    """A learngene file, or a shipped learngene by name (see `learngene_path`)."""
    path = learngene_path(path)
    try:
        header = read_header(path, read_metadata(path))
        dense_roles = tuple(header.get("dense_roles", ()))  # files before it: every role templated
        sizes = {size: ViTSpec.from_dict(spec) for size, spec in header.get("auxiliaries", {}).items()}  # one size: none
    except WaveError:
        raise  # the file itself: missing, not safetensors
    except (AttributeError, TypeError, ValueError, KeyError):
        raise WaveError(f"{path}: damaged learngene header (dense_roles, auxiliaries): distil it again") from None
    names = {**_learngene_tensors(dense_roles), **{name: ("auxiliaries", name) for name in _auxiliary_tensors(sizes)}}
    header, spec, parts, tensors = _read_parts(path, LEARNGENE_FORMAT, names, "learngene")
    auxiliaries = {size: (aux, {}) for size, aux in sizes.items()}
    for name, (size, role) in _auxiliary_tensors(sizes).items():
        auxiliaries[size][1][role] = tensors[name]
    try:
        gene = Learngene(parts["templates"], parts["scalers"], spec, int(header["side"]), header.get("provenance", {}),
                         header.get("kron_order", "st"), parts.get("dense", {}), auxiliaries)  # files written before the order existed are "st"
    except (KeyError, TypeError, ValueError) as e:  # WaveError too: a ValueError
        raise WaveError(f"{path}: not a learngene this waveinit can use ({e})") from None
    check_finite(path, tensors, "learngene")
    return gene


def _read_parts(path, file_format: str, names: dict[str, tuple[str, str]], what: str) -> tuple[dict, ViTSpec, dict, dict]:
    """(header, spec, part -> key -> array, all tensors) of a `file_format` file whose tensors
    are `names` (tensor name -> (part, key)), exactly: one missing or one more is refused."""
    metadata, tensors = read_file(path)
    header = read_header(path, metadata)
    expect_format(path, header, file_format, _WANT[file_format])
    parts: dict[str, dict] = {part: {} for part, _ in names.values()}
    try:
        spec = ViTSpec.from_dict(header["spec"])
        for name, (part, key) in names.items():
            parts[part][key] = tensors[name]
    except KeyError as e:
        raise WaveError(f"{path}: {what} file lacks {e.args[0]}: the file is damaged; distil it again") from None
    except (TypeError, ValueError) as e:
        raise WaveError(f"{path}: damaged {what} header ({e}): distil it again") from None
    refuse_unexpected(path, tensors, names, f"a {spec.depth}x{spec.width} ViT's {what}", "distil it again")
    return header, spec, parts, tensors


def _tleg_tensors() -> dict[str, tuple[str, str]]:
    """Tensor name -> (part, key) of a TLEG learngene file: `a.{role}` and `b.{role}` of every
    block role, `shared.{key}` of every other parameter. Used by the writer and the reader alike."""
    return {
        **{f"a.{r}": ("a", r) for r in BLOCK_ROLES},
        **{f"b.{r}": ("b", r) for r in BLOCK_ROLES},
        **{f"shared.{k}": ("shared", k) for k in SHARED_ROLES},
    }


def save_tleg(path: str | os.PathLike, gene: TLEGGene) -> None:
    """Write a TLEG learngene: tensors `a.{role}`, `b.{role}` and `shared.{key}`, the spec and the
    provenance in the header (format `waveinit.tleg`), atomically."""
    tensors = {name: np.asarray(getattr(gene, part)[key]) for name, (part, key) in _tleg_tensors().items()}
    header = {
        "spec": gene.spec.to_dict(),
        "expansion": "blocks.{l}.{role} = a.{role} + l / (depth - 1) * b.{role} (depth 1: a.{role})",
        "provenance": gene.provenance,
    }
    write_safetensors(path, tensors, header_metadata(TLEG_FORMAT, header))


def load_tleg(path: str | os.PathLike) -> TLEGGene:
    """A TLEG learngene file (`save_tleg`); a one-line WaveError for any other file."""
    header, spec, parts, tensors = _read_parts(path, TLEG_FORMAT, _tleg_tensors(), "TLEG learngene")
    try:
        gene = TLEGGene(parts["a"], parts["b"], parts["shared"], spec, header.get("provenance", {}))
    except WaveError as e:
        raise WaveError(f"{path}: not a TLEG learngene this waveinit can use ({e})") from None
    check_finite(path, tensors, "TLEG learngene")
    return gene


def save_model(path: str | os.PathLike, state_dict: dict[str, np.ndarray], spec: ViTSpec, provenance: dict | None = None) -> None:
    expected = state_dict_keys(spec)
    if sorted(state_dict) != sorted(expected):
        missing = sorted(set(expected) - set(state_dict))
        extra = sorted(set(state_dict) - set(expected))
        raise WaveError(f"state dict does not match a {spec.depth}x{spec.width} ViT: missing {missing[:5]}, unexpected {extra[:5]}")
    tensors = {k: np.asarray(state_dict[k]) for k in expected}
    write_safetensors(path, tensors, header_metadata(MODEL_FORMAT, {"spec": spec.to_dict(), "provenance": provenance or {}}))


def load_model(path: str | os.PathLike, heads: int | None = None, revision: str | None = None) -> ModelFile:
    """A model file of this project, any safetensors ViT state dict with timm's key names
    (its spec is then read off the tensor shapes; `heads` defaults to width / 64), a Hugging
    Face ViTForImageClassification folder (see `hf.py`; its config gives the heads), a timm
    folder (`timm.py`), or a model on the Hugging Face Hub by name (`hub.py`: `ORG/NAME`,
    `hf-hub:ORG/NAME`, `@REVISION` or `revision`; its provenance's "hub" is `hf:ORG/NAME@COMMIT`).
    WaveError for a tensor holding NaN or infinity."""
    from .hub import describe, hub_reference, resolve

    reference = hub_reference(path, revision)
    if reference is not None:
        folder, commit = resolve(*reference)
        model = load_model(folder, heads)
        return ModelFile(model.state_dict, model.spec, {**model.provenance, "hub": describe(reference[0], commit)})
    if revision is not None:
        raise WaveError(f"--revision applies to Hub model names, and {path} is a local path: drop --revision")
    if Path(path).is_dir():
        from .hf import load_hf_model, read_config
        from .timm import is_timm_config, load_timm_model

        model = load_timm_model(path) if is_timm_config(read_config(path)) else load_hf_model(path)
        check_finite(path, model.state_dict, "model")
        if heads is not None and heads != model.spec.heads:
            raise WaveError(f"heads {heads} contradicts {path}, whose config.json says {model.spec.heads}: drop the heads option")
        return model
    metadata, tensors = read_file(path)
    header = read_header(path, metadata)
    if not header:
        spec = spec_from_state_dict(tensors, heads, source=str(path))
        check_state_dict(path, tensors, spec)
        refuse_unexpected(path, tensors, state_dict_keys(spec), f"a {spec.depth}x{spec.width} ViT's state dict",
                          "keep only the ViT's own tensors in it")
        check_finite(path, tensors, "model")
        return ModelFile(tensors, spec, {"source": str(path)})
    expect_format(path, header, MODEL_FORMAT, _WANT[MODEL_FORMAT])
    try:
        spec = ViTSpec.from_dict(header["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise WaveError(f"{path}: model file has no valid spec in its header ({e}): the file is damaged; write it again") from None
    check_state_dict(path, tensors, spec)
    refuse_unexpected(path, tensors, state_dict_keys(spec), f"a {spec.depth}x{spec.width} ViT's model file", "write it again")
    check_finite(path, tensors, "model")
    return ModelFile(tensors, spec, header.get("provenance", {}))


def read_checkpoint_header(path: str | os.PathLike, metadata: dict[str, str] | None = None) -> dict:
    """The JSON header of a training checkpoint (position, history, fingerprint, ...), tensors
    unread and without torch; WaveError unless it is a checkpoint of a version this code reads.
    The engine (`training/checkpoint.py`) writes and restores the tensors."""
    if metadata is None:
        with open_safetensors(path, fix="delete it or pass another checkpoint path") as f:
            metadata = f.metadata() or {}
    header = read_header(path, metadata)
    if header.get("format") != CHECKPOINT_FORMAT:
        what = f"a {metadata['format']} file" if "format" in metadata else "a safetensors file without a waveinit header"
        raise WaveError(f"{path} is {what}, not a training checkpoint: pass another checkpoint path")
    return header
