"""The Kronecker math of WAVE, on any array-API library (NumPy, PyTorch, CuPy, JAX, ...).

A weight is a sum of Kronecker products of size-specific *scalers* with shared *templates*:

    W = sum_t kron(S[t], T[t])        S: (N, a, b), T: (N, p, q), W: (a*p, b*q)

so W is an (a x b) grid of (p x q) blocks, block (i, j) being sum_t S[t, i, j] * T[t]. Every
function here takes arrays of one library and returns arrays of the same library, dtype and
device, using only the array API standard (plus `linalg.svd` for `nearest_kron`).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, is_numpy_namespace
from array_api_compat import device as device_of

from .configs import KRON_ORDERS
from .errors import WaveError

Array = Any  # any array-API array


def kron_expand(scalers: Array, templates: Array, order: str = "st") -> Array:
    """Build weights from scalers and templates: `sum_t kron(scalers[..., t, :, :], templates[t])`
    (order "ts": `sum_t kron(templates[t], scalers[..., t, :, :])`).

    Matrix form: scalers (..., N, a, b), templates (N, p, q) -> (..., a*p, b*q).
    Vector form: scalers (..., N, a),    templates (N, p)    -> (..., a*p).
    Leading dimensions of `scalers` (e.g. one scaler set per layer) are batch dimensions.
    Differentiable wherever the array library is (torch autograd included).
    """
    xp = array_namespace(scalers, templates)
    n, *template_shape = _check_factors(scalers, templates)
    batch = tuple(scalers.shape[:-len(template_shape) - 1])
    if order != "st":
        return _kron_expand_ts(xp, scalers, templates, order, batch)
    if len(template_shape) == 1:
        (p,) = template_shape
        a = scalers.shape[-1]
        # (..., a, N) @ (N, p) -> (..., a, p): already the output's memory layout.
        return xp.reshape(xp.matmul(xp.matrix_transpose(scalers), templates), (*batch, a * p))
    p, q = template_shape
    a, b = scalers.shape[-2:]
    if is_numpy_namespace(xp):
        # One (b, N) @ (N, q) product per output row (i, k) writes straight into the final
        # layout (a, p, b, q): no transpose pass. NumPy's batched matmul does this well
        # (fc1 of ViT-B, float64, N=4: 2.1 ms against 14.8 ms for the GEMM + transpose below).
        nb = len(batch)
        rows = xp.permute_dims(scalers, (*range(nb), nb + 1, nb + 2, nb))[..., None, :, :]  # (..., a, 1, b, N)
        cols = xp.permute_dims(templates, (1, 0, 2))  # (p, N, q)
        return xp.reshape(xp.matmul(rows, cols), (*batch, a * p, b * q))  # (..., a, p, b, q)
    # Elsewhere (torch, CuPy, JAX) one GEMM over all blocks and one transpose is faster than
    # many tiny batched products (torch CPU, same case: 2.7 ms against 4.1 ms).
    flat = xp.reshape(scalers, (*batch, n, a * b))
    blocks = xp.matmul(xp.matrix_transpose(flat), xp.reshape(templates, (n, p * q)))  # (..., a*b, p*q)
    blocks = xp.reshape(blocks, (*batch, a, b, p, q))
    nb = len(batch)
    grid = xp.permute_dims(blocks, (*range(nb), nb, nb + 2, nb + 1, nb + 3))  # (..., a, p, b, q)
    return xp.reshape(grid, (*batch, a * p, b * q))


def _kron_expand_ts(xp, scalers: Array, templates: Array, order: str, batch: tuple) -> Array:
    """`kron_expand` in the order kron(T, S): entry (i*a + k, j*b + l) is sum_t T[t,i,j] S[t,k,l]."""
    if order not in KRON_ORDERS:
        raise WaveError(f"Kronecker order must be one of {', '.join(KRON_ORDERS)}, got {order!r}")
    n, nb = templates.shape[0], len(batch)
    grid, block = tuple(templates.shape[1:]), tuple(scalers.shape[nb + 1:])  # (p[, q]), (a[, b])
    flat = xp.reshape(scalers, (*batch, n, math.prod(block)))
    outer = xp.matmul(xp.matrix_transpose(flat), xp.reshape(templates, (n, math.prod(grid))))  # (..., block, grid)
    if len(grid) == 1:  # (..., a, p) -> (..., p, a)
        return xp.reshape(xp.matrix_transpose(outer), (*batch, grid[0] * block[0]))
    outer = xp.reshape(outer, (*batch, *block, *grid))  # (..., a, b, p, q)
    outer = xp.permute_dims(outer, (*range(nb), nb + 2, nb, nb + 3, nb + 1))  # (..., p, a, q, b)
    return xp.reshape(outer, (*batch, grid[0] * block[0], grid[1] * block[1]))


def kron_matmul(x: Array, scalers: Array, templates: Array) -> Array:
    """`x @ W.T` for `W = kron_expand(scalers, templates)`, without building W.

    x (..., b*q), scalers (N, a, b), templates (N, p, q) -> (..., a*p).
    Uses `kron(S, T) @ vec(X) == vec(S @ X @ T.T)` with `X = x.reshape(..., b, q)`. Per row of
    x it costs 2*N*b*p*(q + a) flops against 2*a*b*p*q for the dense product: it can only pay
    when N < a*q / (a + q), and building W once per step is usually faster (see benchmarks/).
    """
    xp = array_namespace(x, scalers, templates)
    n, *template_shape = _check_factors(scalers, templates)
    if len(template_shape) != 2 or scalers.ndim != 3:
        raise WaveError(
            f"kron_matmul takes scalers (N, a, b) and templates (N, p, q), got {tuple(scalers.shape)} "
            f"and {tuple(templates.shape)}: use kron_expand for vectors and batched scalers"
        )
    p, q = template_shape
    _, a, b = scalers.shape
    if x.ndim < 1 or x.shape[-1] != b * q:
        raise WaveError(
            f"kron_matmul: x has last dimension {x.shape[-1] if x.ndim else None}, the weight "
            f"takes {b * q} inputs (b={b} blocks of q={q}): pass x of shape (..., {b * q})"
        )
    batch = tuple(x.shape[:-1])
    blocks = xp.reshape(x, (*batch, 1, b, q))  # (..., 1, b, q)
    z = xp.matmul(blocks, xp.matrix_transpose(templates))  # (..., N, b, p): X @ T[t].T
    z = xp.reshape(z, (*batch, n * b, p))
    s = xp.reshape(xp.permute_dims(scalers, (1, 0, 2)), (a, n * b))  # (a, N*b)
    y = xp.matmul(s, z)  # (..., a, p): sum_t S[t] @ X @ T[t].T
    return xp.reshape(y, (*batch, a * p))


class NearestKron(tuple):
    """`(scalers, templates)` of `nearest_kron`, with the approximation error as attributes.

    `error`: the Frobenius norm of `weight - kron_expand(scalers, templates)`;
    `relative_error`: the same divided by the Frobenius norm of `weight` (0 for a zero weight);
    `singular_values`: all singular values of the rearranged weight, largest first.
    """

    scalers: Array
    templates: Array
    error: float
    relative_error: float
    singular_values: Array

    def __new__(cls, scalers: Array, templates: Array, error: float, relative_error: float, singular_values: Array):
        self = super().__new__(cls, (scalers, templates))
        self.scalers, self.templates = scalers, templates
        self.error, self.relative_error = error, relative_error
        self.singular_values = singular_values
        return self


def nearest_kron(weight: Array, template_shape: tuple[int, int], n: int) -> NearestKron:
    """The best `n`-term approximation `sum_t kron(S[t], T[t])` of `weight` in Frobenius norm.

    weight (a*p, b*q), template_shape (p, q) -> scalers (n, a, b), templates (n, p, q).
    Van Loan & Pitsianis: rearranging each (p, q) block of W into a row of R (a*b, p*q) turns a
    sum of n Kronecker products into a rank-n matrix, so the truncated SVD of R is optimal.
    The singular value sigma_t is split evenly, sqrt(sigma_t) into each factor. When `n`
    exceeds the rank bound min(a*b, p*q), the extra terms are zero.
    """
    xp = array_namespace(weight)
    p, q = _check_template_shape(template_shape)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise WaveError(f"nearest_kron: n must be a positive integer (number of terms), got {n!r}")
    if weight.ndim != 2:
        raise WaveError(f"nearest_kron takes a 2-D weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    if rows % p or cols % q:
        raise WaveError(
            f"nearest_kron: weight {rows}x{cols} is not a grid of {p}x{q} templates: "
            f"choose a template shape whose sides divide {rows} and {cols}"
        )
    a, b = rows // p, cols // q
    blocks = xp.permute_dims(xp.reshape(weight, (a, p, b, q)), (0, 2, 1, 3))  # (a, b, p, q)
    rearranged = xp.reshape(blocks, (a * b, p * q))  # R: one block per row
    u, sigma, vt = xp.linalg.svd(rearranged, full_matrices=False)  # u (ab, k), vt (k, pq)
    k = min(n, sigma.shape[0])
    root = xp.sqrt(sigma[:k])
    scalers = xp.reshape(xp.matrix_transpose(u[:, :k] * root), (k, a, b))
    templates = xp.reshape(vt[:k, :] * root[:, None], (k, p, q))
    if k < n:  # the rank bound leaves nothing more to take: pad with zero terms
        scalers = xp.concat([scalers, xp.zeros((n - k, a, b), dtype=scalers.dtype, device=device_of(weight))])
        templates = xp.concat([templates, xp.zeros((n - k, p, q), dtype=templates.dtype, device=device_of(weight))])
    error = math.sqrt(max(float(xp.sum(sigma[k:] ** 2)), 0.0))
    total = math.sqrt(float(xp.sum(sigma**2)))
    return NearestKron(scalers, templates, error, error / total if total > 0 else 0.0, sigma)


def _check_template_shape(template_shape) -> tuple[int, int]:
    shape = tuple(template_shape) if isinstance(template_shape, (tuple, list)) else None
    if (
        shape is None
        or len(shape) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise WaveError(f"template_shape must be two positive integers (p, q), got {template_shape!r}")
    return shape


def _check_factors(scalers: Array, templates: Array) -> tuple[int, ...]:
    """Validate a (scalers, templates) pair; return the templates' shape (N, p[, q])."""
    if templates.ndim not in (2, 3):
        raise WaveError(
            f"templates must be (N, p) vectors or (N, p, q) matrices, got shape {tuple(templates.shape)}"
        )
    form = templates.ndim - 1  # 1 for vectors, 2 for matrices
    n = templates.shape[0]
    if scalers.ndim < form + 1:
        raise WaveError(
            f"scalers of shape {tuple(scalers.shape)} do not fit templates of shape "
            f"{tuple(templates.shape)}: expected (..., {n}, {'a, b' if form == 2 else 'a'})"
        )
    if scalers.shape[-form - 1] != n:
        raise WaveError(
            f"scalers hold {scalers.shape[-form - 1]} terms (axis -{form + 1} of {tuple(scalers.shape)}) "
            f"but there are {n} templates: give one scaler per template"
        )
    if any(s == 0 for s in (*scalers.shape, *templates.shape)):
        raise WaveError(
            f"empty factor: scalers {tuple(scalers.shape)}, templates {tuple(templates.shape)}: every size must be >= 1"
        )
    return tuple(templates.shape)
