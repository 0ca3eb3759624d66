"""safetensors primitives: open and read with clear errors, atomic writes, and our header.

Every file waveinit writes is a safetensors file whose metadata (string -> string) carries
`format` (one of FORMATS), `format_version` and `waveinit`, a JSON object with the rest of the
description. Files of other writers (timm and `safetensors.torch` put {"format": "pt"}) have
no such header and read as plain state dicts. Nothing here ever unpickles anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save as _safetensors_bytes

from ..errors import WaveError, reason

LEARNGENE_FORMAT = "waveinit.learngene"
MODEL_FORMAT = "waveinit.model"
CHECKPOINT_FORMAT = "waveinit.checkpoint"
TLEG_FORMAT = "waveinit.tleg"  # a TLEG learngene (`tleg.py`): A, B and the shared parameters
# Our formats and the newest version of each that this code reads. Bump a version on any change
# that an older reader would misread.
FORMATS = {LEARNGENE_FORMAT: 1, MODEL_FORMAT: 1, CHECKPOINT_FORMAT: 1, TLEG_FORMAT: 1}


@contextmanager
def open_safetensors(path: str | os.PathLike, framework: str = "np", fix: str = "it may be truncated; write it again") -> Iterator:
    """`safe_open(path)`, with a missing or damaged file as one WaveError line naming it and `fix`."""
    path = Path(path)
    if not path.is_file():
        raise WaveError(f"{path}: no such file: check the path{_hint(path)}")
    try:
        handle = safe_open(str(path), framework=framework, device="cpu")
        f = handle.__enter__()
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise WaveError(f"{path} is not a readable safetensors file ({reason(e)}): {fix}") from None
    try:
        yield f
    except WaveError:
        raise
    except Exception as e:  # a tensor whose bytes are damaged fails only when it is read
        raise WaveError(f"{path} is not a readable safetensors file ({reason(e)}): {fix}") from None
    finally:
        handle.__exit__(None, None, None)


def _hint(path: Path) -> str:
    if path.name == "learngene.safetensors":
        return " or make one with `wave distill`"
    return ""


def read_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, tensors as NumPy arrays) of any safetensors file; WaveError if missing or damaged."""
    with open_safetensors(path) as f:
        return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}


def check_finite(path, tensors: dict, what: str = "file", fix: str | None = None) -> None:
    """WaveError naming `path` and the first tensor holding NaN or infinity (one pass over each
    floating-point tensor). Weights like these spawn, train or score nothing but NaN."""
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = "NaN" if np.isnan(array).any() else "infinity"
            raise WaveError(f"{path}: tensor {name} holds {bad}: the {what} is damaged or comes from a diverged run; "
                            f"{fix or f'use another {what} or make it again'}")


def refuse_unexpected(path, names, expected, what: str, fix: str) -> None:
    """WaveError naming `path` and the first of `names` (a file's tensors) not in `expected`;
    `what` says whose tensors the file should hold ("a 2x64 ViT's learngene"). A reader that
    skipped them would take a file another tool wrote, or a damaged one, for a whole file of ours."""
    extra = sorted(set(names) - set(expected))
    if extra:
        shown = ", ".join(repr(name) for name in extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise WaveError(f"{path}: unexpected tensor{'s' if len(extra) > 1 else ''} {shown} (not part of {what}): "
                        f"the file was written by another tool or damaged; {fix}")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file, its tensors unread."""
    with open_safetensors(path) as f:
        return f.metadata() or {}


def tensor_dtypes(path: str | os.PathLike) -> dict[str, tuple[list[int], str]]:
    """Name -> (shape, safetensors dtype such as "F32" or "BF16"), tensors unread."""
    with open_safetensors(path) as f:
        return {k: (list(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def header_metadata(fmt: str, fields: dict) -> dict[str, str]:
    """The safetensors metadata of one of our files: format, its current version, JSON fields."""
    return {"format": fmt, "format_version": str(FORMATS[fmt]), "waveinit": json.dumps(fields)}


def read_header(path: str | os.PathLike, metadata: dict[str, str] | None = None) -> dict:
    """{format, format_version, **fields} of one of our files; {} for a plain safetensors file.

    `metadata`: the file's, if already read. WaveError for a damaged header, or a version newer
    than this code reads.
    """
    if metadata is None:
        metadata = read_metadata(path)
    fmt = metadata.get("format", "")
    if not fmt.startswith("waveinit."):
        return {}
    try:
        version = int(metadata.get("format_version", ""))
        fields = json.loads(metadata.get("waveinit", "{}"))
    except (ValueError, json.JSONDecodeError):
        raise WaveError(f"{path}: damaged waveinit header in the file's metadata: write the file again") from None
    if not isinstance(fields, dict):
        raise WaveError(f"{path}: damaged waveinit header in the file's metadata: write the file again")
    newest = FORMATS.get(fmt)
    if newest is not None and version > newest:
        raise WaveError(
            f"{path} is a {fmt} file of format version {version}, this waveinit reads up to version "
            f"{newest}: upgrade waveinit (pip install -U waveinit)"
        )
    return {"format": fmt, "format_version": version, **fields}


def expect_format(path, header: dict, fmt: str, want: str) -> None:
    """WaveError unless `header` (from read_header) is of format `fmt`; `want` says what was expected."""
    got = header.get("format")
    if got != fmt:
        what = f"a {got} file" if got else "a safetensors file without a waveinit header"
        raise WaveError(f"{path} is {what}, expected {want}")


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write NumPy tensors and metadata as a safetensors file, atomically; the same tensors and
    metadata give the same bytes in any process (`canonical_safetensors`)."""
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """NumPy tensors and metadata as the bytes of a safetensors file (`canonical_safetensors`)."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    return canonical_safetensors(_safetensors_bytes(arrays, metadata=metadata))


def canonical_safetensors(raw: bytes) -> bytes:
    """The safetensors file `raw` with its metadata's keys sorted: the same tensors and metadata
    give the same bytes in any process.

    The safetensors library writes the metadata in its hash map's order, which changes from one
    process to the next, so the same model would give files of different bytes (and digests).
    The header is rewritten with sorted metadata and padded to 8 bytes like the library's; the
    tensors' offsets count from the end of the header, so the data after it is unchanged."""
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + size:]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    A reader (or a crash) never sees a half-written file, and a failed write leaves nothing.
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WaveError(f"cannot write {path} ({e.strerror or e}): choose another output path") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a saved model is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WaveError(f"cannot write {path} ({e.strerror or e}): choose another output path") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike) -> Path:
    """WaveError unless a file can be written at `path` (checked before long jobs, not after)."""
    path = Path(path)
    if path.is_dir():
        raise WaveError(f"{path} is a folder: give a file path for the output")
    existing = path.parent
    while not existing.exists():  # the folders still to make must go into a writable one
        existing = existing.parent
    if not existing.is_dir():
        raise WaveError(f"{existing} is a file, so {path} cannot be written: choose another output path")
    if not os.access(existing, os.W_OK):
        raise WaveError(f"cannot write into {existing} (permission denied): choose another output path")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
