"""Mimetic initialisation of self-attention (Trockman & Kolter, ICML 2023, "Mimetic Initialization
of Self-Attention Layers", arXiv:2305.09828): a data-free peer of WAVE that needs no ancestry.

Pre-trained ViTs have attention weights whose products look like scaled identities: the
query-key product has a positive diagonal, the value-projection product a negative one. The
method writes those products down in closed form and factorises them by SVD:

    W_q W_k^T ~= alpha1 * Z1 + beta1 * I     (per head; rank head_dim)
    W_v W_proj ~= alpha2 * Z2 - beta2 * I     (the whole layer; full rank)

with Z1, Z2 random, entries i.i.d. N(0, 1/d) (d: the width), a fresh Z1 for every head and
layer and a fresh Z2 for every layer. A product A = U S V^T is split as U S^(1/2) and
V S^(1/2); for the query-key product both factors are truncated to the head's `head_dim`
columns, which makes W_q W_k^T the best rank-`head_dim` approximation of A (Eckart-Young).

Orientation. The paper writes the row-vector form (q = x W_q, W_q of shape (d, head_dim)).
timm stores torch Linear weights, which compute x @ W.T, so the paper's W_q is the transpose of
the head's rows of attn.qkv.weight. With Wq_h, Wk_h the (head_dim, w) row blocks of head h
(rows h*hd.. of the q, k and v thirds of attn.qkv.weight, which is [q; k; v]):

- the logit between tokens x_i and x_j is q_i . k_j = x_i Wq_h^T Wk_h x_j^T, so the (w, w)
  matrix made ~= alpha1 Z1 + beta1 I is Wq_h^T @ Wk_h (exactly the paper's W_q W_k^T; timm
  then scales the logits by head_dim^-1/2, as for any initialisation);
- a token that attends only to itself leaves the attention as
  x @ W_v.T @ W_proj.T = x @ (W_proj @ W_v).T: the matrix the residual stream sees (acting on
  column vectors) is W_proj @ W_v = sum_h W_proj[:, head h's columns] @ W_v[head h's rows, :],
  and that is what is made equal to alpha2 Z2 - beta2 I. The paper's W_v W_proj is its
  transpose, alpha2 Z2^T - beta2 I, which has the same distribution.

Only attn.qkv.weight and attn.proj.weight change; biases and every other parameter are kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .errors import WaveError
from .keys import check_state_dict
from .spec import ViTSpec

# The constants for ViTs. The recipe (query-key ~ +identity, value-projection ~ -identity, SVD
# factors) is confirmed by the paper's abstract and by summaries of it. The four values are NOT
# verified against the paper's text, which could not be read past its abstract when this was
# written: they are those of public re-implementations found by code search (two hard-code
# alpha = beta = 0.7 for query-key and alpha = beta = 0.4 for value-projection, one of them citing
# the paper; osiriszjq/impulse_init uses 0.4, 0.4 for value-projection and takes the query-key
# pair as a setting). Those re-implementations draw Z uniform with variance 1/d by default; we
# follow the normal N(0, I/d) of the paper's equations. Check the paper before quoting the values
# as its own.
ALPHA1 = 0.7  # query-key: weight of the random part Z1
BETA1 = 0.7  # query-key: weight of the identity
ALPHA2 = 0.4  # value-projection: weight of the random part Z2
BETA2 = 0.4  # value-projection: weight of the (negative) identity


def _check_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise WaveError(f"mimetic {name} must be a finite number, got {value!r} (the paper's ViT values: alpha1 = beta1 = {ALPHA1}, "
                        f"alpha2 = beta2 = {ALPHA2})")
    return float(value)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WaveError(f"the mimetic seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _layer_targets(rng: np.random.Generator, width: int, heads: int, alpha1: float, beta1: float, alpha2: float,
                   beta2: float) -> tuple[np.ndarray, np.ndarray]:
    """One block's products, float64: query-key (heads, w, w), one per head, then value-projection (w, w)."""
    eye = np.eye(width)
    qk = np.stack([alpha1 * rng.standard_normal((width, width)) / math.sqrt(width) + beta1 * eye for _ in range(heads)])
    vo = alpha2 * rng.standard_normal((width, width)) / math.sqrt(width) - beta2 * eye
    return qk, vo


def _layer_rngs(seed: int, depth: int) -> list[np.random.Generator]:
    """One independent stream per block: block l's draws depend on (seed, l) only, not on the depth."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(depth)]


def mimetic_targets(spec: ViTSpec, seed: int, *, alpha1: float = ALPHA1, beta1: float = BETA1, alpha2: float = ALPHA2,
                    beta2: float = BETA2) -> list[tuple[np.ndarray, np.ndarray]]:
    """The products `mimetic` factorises, per block, in float64: (qk, vo) with qk[h] (w, w) the
    target of Wq_h^T @ Wk_h (alpha1 Z1 + beta1 I) and vo (w, w) that of W_proj @ W_v
    (alpha2 Z2 - beta2 I). The same draws as `mimetic` with the same arguments."""
    seed = _check_seed(seed)
    a1, b1, a2, b2 = (_check_number(n, v) for n, v in (("alpha1", alpha1), ("beta1", beta1), ("alpha2", alpha2), ("beta2", beta2)))
    return [_layer_targets(rng, spec.width, spec.heads, a1, b1, a2, b2) for rng in _layer_rngs(seed, spec.depth)]


def mimetic(state: Mapping[str, np.ndarray], spec: ViTSpec, seed: int, *, alpha1: float = ALPHA1, beta1: float = BETA1,
            alpha2: float = ALPHA2, beta2: float = BETA2) -> dict[str, np.ndarray]:
    """A copy of the ViT state dict `state` (timm keys, e.g. a random initialisation of `spec`)
    with mimetic attention: in every block, per head h, Wq_h^T @ Wk_h is the best rank-head_dim
    approximation of alpha1 Z1 + beta1 I, and W_proj @ W_v equals alpha2 Z2 - beta2 I
    (module docstring: orientation, source). attn.qkv.weight and attn.proj.weight are new
    float32 arrays; every other entry (biases included) is an unchanged copy. Deterministic in
    `seed` (a NumPy Generator per block; block l does not depend on the depth; another LAPACK
    build may flip the signs of singular-vector pairs, which leaves every product as is). With
    alpha1 = 0 every head gets the same rank-head_dim projector times beta1 (the SVD of beta1 I
    is degenerate): the random part is what makes heads differ.
    """
    targets = mimetic_targets(spec, seed, alpha1=alpha1, beta1=beta1, alpha2=alpha2, beta2=beta2)  # checks the numbers first
    check_state_dict("the state dict to initialise", state, spec)
    w, hd = spec.width, spec.head_dim
    out = {key: np.array(value, copy=True) for key, value in state.items()}
    for layer, (qk, vo) in enumerate(targets):
        qkv = np.empty((3 * w, w), dtype=np.float64)
        for h in range(spec.heads):
            u, s, vt = np.linalg.svd(qk[h])  # qk[h] = u diag(s) vt
            root = np.sqrt(s[:hd])[:, None]  # (hd, 1)
            qkv[h * hd:(h + 1) * hd] = root * u[:, :hd].T  # Wq_h (hd, w) = (U_k S_k^1/2)^T
            qkv[w + h * hd:w + (h + 1) * hd] = root * vt[:hd]  # Wk_h (hd, w) = (V_k S_k^1/2)^T, so Wq_h^T Wk_h = U_k S_k V_k^T
        u, s, vt = np.linalg.svd(vo)
        root = np.sqrt(s)
        qkv[2 * w:] = root[:, None] * vt  # W_v (w, w) = S^1/2 V^T
        out[f"blocks.{layer}.attn.qkv.weight"] = qkv.astype(np.float32)
        out[f"blocks.{layer}.attn.proj.weight"] = (u * root[None, :]).astype(np.float32)  # W_proj = U S^1/2, so W_proj W_v = vo
    return out
