"""Embedding the core math in another framework.

A learngene file is plain safetensors (templates.<role>, scalers.<role>), and every weight of a
spawned ViT is a Kronecker sum W = sum_i kron(S_i, T_i). This script reads a learngene without
waveinit, writes that sum in a few lines of NumPy, checks it against `np.kron` and against
`waveinit.kron_expand`, then builds a whole spawned model's state dict on another array library
(`array_api_strict`, the array API standard with nothing extra; and PyTorch when installed)
and checks it against the NumPy reference.

    python examples/array_api_embedding.py                                    # a learngene made here
    python examples/array_api_embedding.py --learngene runs/learngene.safetensors   # yours
    python examples/array_api_embedding.py --depth 6 --width 384
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

import waveinit
from waveinit.spawning import fresh_factors, spawn_factors, target_spec


def kron_sum(scalers: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """sum_i kron(S_i, T_i) for scalers (n, a, b) and templates (n, s, t): block (p, q) of the
    (a*s, b*t) result is sum_i S_i[p, q] * T_i. One einsum, no loop over blocks."""
    n, a, b = scalers.shape
    _, s, t = templates.shape
    return np.einsum("npq,nij->piqj", scalers, templates).reshape(a * s, b * t)


def a_learngene(path: Path) -> Path:
    """A freshly initialised learngene (ViT 4x128, templates 64x64, 2 per role), for a run with none given."""
    spec = waveinit.ViTSpec(depth=4, width=128, heads=2, image_size=28, patch_size=7, channels=1, num_classes=10)
    templates, scalers = fresh_factors(spec, 64, 2, seed=0)
    waveinit.save_learngene(path, waveinit.Learngene(templates, scalers, spec, 64, {"made_by": "examples/array_api_embedding.py"}))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learngene", type=Path, help="a learngene file (default: a random one made here)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.learngene or a_learngene(Path(tmp) / "learngene.safetensors")
        run(path, args.depth, args.width)


def run(path: Path, depth: int, width: int):
    # 1. The file, read with safetensors alone: arrays plus a JSON header in the metadata.
    tensors = load_file(path)
    with safe_open(path, "np") as f:
        header = json.loads(f.metadata()["waveinit"])
    role = "mlp.fc1.weight"
    scalers, templates = tensors[f"scalers.{role}"], tensors[f"templates.{role}"]
    print(f"{path.name}: {len(tensors)} arrays; auxiliary model {header['spec']['depth']}x{header['spec']['width']}; "
          f"{role}: templates {templates.shape}, scalers {scalers.shape} (layer, term, block row, block column)")

    # 2. One layer's weight, three ways, in float64.
    s0, t = scalers[0].astype(np.float64), templates.astype(np.float64)
    by_loop = sum(np.kron(s0[i], t[i]) for i in range(len(t)))
    ours = kron_sum(s0, t)
    print(f"layer 0 {role} {ours.shape}: einsum vs np.kron loop max |diff| {np.abs(ours - by_loop).max():.1e}, "
          f"vs waveinit.kron_expand {np.abs(ours - waveinit.kron_expand(s0, t)).max():.1e}")

    # 3. A new size: waveinit picks the scalers (data-free rule), any array library builds the weights.
    gene = waveinit.load_learngene(path)
    target = target_spec(gene, depth, width)
    templates64, scalers64 = spawn_factors(gene, target)[:2]
    templates64 = {r: np.asarray(a, dtype=np.float64) for r, a in templates64.items()}
    scalers64 = {r: np.asarray(a, dtype=np.float64) for r, a in scalers64.items()}
    reference = waveinit.materialize(target, gene.side, templates64, scalers64)
    print(f"spawned {target.depth}x{target.width}: {len(reference)} tensors, {target.num_params():,} parameters "
          f"from {sum(a.size for a in templates64.values()):,} template numbers")
    for name, xp, to_numpy in libraries():
        state = waveinit.materialize(target, gene.side, {r: xp.asarray(a) for r, a in templates64.items()},
                                     {r: xp.asarray(a) for r, a in scalers64.items()})
        worst = max(np.abs(to_numpy(state[k]) - reference[k]).max() for k in reference)
        print(f"{name}: the same {len(state)} tensors, max |diff| against NumPy {worst:.1e}")


def libraries():
    """(name, namespace, to NumPy) of the array libraries installed, NumPy's strict standard first."""
    import array_api_strict

    found = [("array_api_strict", array_api_strict, lambda a: np.asarray(a))]
    try:
        import torch
    except ImportError:
        return found
    return found + [("torch", torch, lambda a: a.numpy())]


if __name__ == "__main__":
    main()
