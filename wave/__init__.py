"""waveinit: WAVE weight templates that initialise Vision Transformers of any depth and width.

The core (the modules at this package's top level but `api.py` and `family.py`; not `tasks/`) is pure
array-API math: it runs on NumPy, PyTorch, CuPy, JAX or array-api-strict arrays and imports no
deep-learning framework and no file I/O. docs/design.md gives the layers above it.

The names below load on first use, so that `import waveinit.errors` (all the `wave` command
needs before it parses its arguments) does not pay for NumPy and safetensors.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "WaveError": "errors",
    "load_learngene": "io.files",
    "load_model": "io.files",
    "save_learngene": "io.files",
    "save_model": "io.files",
    "ModelFile": "keys",
    "NearestKron": "kron",
    "kron_expand": "kron",
    "kron_matmul": "kron",
    "nearest_kron": "kron",
    "Learngene": "learngene",
    "learngene_from_weights": "learngene",
    "materialize": "learngene",
    "state_dict_keys": "keys",
    "weight_selection": "selection",
    "spawn": "api",
    "spawn_family": "family",
    "DEFAULT_TEMPLATE_SIDE": "configs",
    "DistillConfig": "configs",
    "SpawnConfig": "configs",
    "TrainConfig": "configs",
    "MATRIX_ROLES": "spec",
    "ROLE_NAMES": "spec",
    "ROLES": "spec",
    "Role": "spec",
    "ViTSpec": "spec",
    "scaler_shapes": "spec",
    "template_shapes": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'waveinit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
