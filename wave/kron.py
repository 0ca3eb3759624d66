"""The Kronecker math of WAVE, on any array-API library (NumPy, PyTorch, CuPy, JAX, ...).

A weight is a sum of Kronecker products of size-specific *scalers* with shared *templates*:

    W = sum_t kron(S[t], T[t])        S: (N, a, b), T: (N, p, q), W: (a*p, b*q)

so W is an (a x b) grid of (p x q) blocks, block (i, j) being sum_t S[t, i, j] * T[t]: the
order "st". In the order "ts", W = sum_t kron(T[t], S[t]) is a (p x q) grid of (a x b) blocks.
This module owns the orders (`KRON_ORDERS`, `check_order`) and the inverse of both layouts
(`kron_blocks`). Every function here takes arrays of one library and returns arrays of the same
library, dtype and device, using only the array API standard (plus `linalg.svd` for
`nearest_kron`).
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, is_numpy_namespace
from array_api_compat import device as device_of

from .errors import WaveError

Array = Any  # any array-API array

# The order of each Kronecker product: "st" is kron(S, T), an (a x b) grid of template-shaped
# blocks (a template is one attention head's block); "ts" is kron(T, S), a (p x q) grid of
# scaler-shaped blocks (the order one public summary of the paper writes). Which one `wave
# distill` uses is `DistillConfig.order` (docs/bench/ablations.md compares them).
KRON_ORDERS = ("st", "ts")


def check_order(order: str) -> str:
    """`order` if it is one of `KRON_ORDERS`; else a WaveError naming them."""
    if order not in KRON_ORDERS:
        raise WaveError(f"Kronecker order must be one of {', '.join(KRON_ORDERS)}, got {order!r}")
    return order


def kron_blocks(weight: Array, grid: tuple[int, ...], block: tuple[int, ...]) -> Array:
    """The inverse of a Kronecker layout: a weight of `grid` x `block` blocks, one block per row.

    Matrix: weight (g0*h0, g1*h1), grid (g0, g1), block (h0, h1) -> (g0*g1, h0*h1), row i*g1 + j
    being block (i, j) flattened. Vector: weight (g0*h0,), grid (g0,), block (h0,) -> (g0, h0).
    A sum of n Kronecker products of a grid-shaped and a block-shaped factor is rank n here:
    for kron(S, T) ("st") the grid is the scaler's shape, for kron(T, S) ("ts") the template's.
    """
    xp = array_namespace(weight)
    if len(grid) == 1:
        return xp.reshape(weight, (grid[0], block[0]))
    four = xp.reshape(weight, (grid[0], block[0], grid[1], block[1]))
    return xp.reshape(xp.permute_dims(four, (0, 2, 1, 3)), (grid[0] * grid[1], block[0] * block[1]))


def kron_expand(scalers: Array, templates: Array, order: str = "st") -> Array:
    """Build weights from scalers and templates: `sum_t kron(scalers[..., t, :, :], templates[t])`
    (order "ts": `sum_t kron(templates[t], scalers[..., t, :, :])`).

    Matrix form: scalers (..., N, a, b), templates (N, p, q) -> (..., a*p, b*q).
    Vector form: scalers (..., N, a),    templates (N, p)    -> (..., a*p).
    Leading dimensions of `scalers` (e.g. one scaler set per layer) are batch dimensions.
    Differentiable wherever the array library is (torch autograd included).
    """
    _check_factors(scalers, templates)
    return kron_expand_unchecked(scalers, templates, check_order(order))


def kron_expand_unchecked(scalers: Array, templates: Array, order: str) -> Array:
    """`kron_expand` of factors whose shapes and order were checked once already: a templated
    model's weights, rebuilt on every forward pass (`learngene.materialize_unchecked`)."""
    xp = array_namespace(scalers, templates)
    n, *template_shape = templates.shape
    batch = tuple(scalers.shape[:-len(template_shape) - 1])
    if order == "ts":
        return _kron_expand_ts(xp, scalers, templates, batch)
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


def _kron_expand_ts(xp, scalers: Array, templates: Array, batch: tuple) -> Array:
    """`kron_expand` in the order kron(T, S): entry (i*a + k, j*b + l) is sum_t T[t,i,j] S[t,k,l]."""
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


def nearest_kron(weight: Array, template_shape: tuple[int, int], n: int, order: str = "st") -> NearestKron:
    """The best `n`-term approximation `sum_t kron(S[t], T[t])` of `weight` in Frobenius norm
    (order "ts": `sum_t kron(T[t], S[t])`).

    weight (a*p, b*q), template_shape (p, q) -> scalers (n, a, b), templates (n, p, q).
    Van Loan & Pitsianis: rearranging each block of W into a row of R (`kron_blocks`: a*b rows
    of p*q for "st", p*q rows of a*b for "ts") turns a sum of n Kronecker products into a rank-n
    matrix, so the truncated SVD of R is optimal. The singular value sigma_t is split evenly,
    sqrt(sigma_t) into each factor. When `n` exceeds the rank bound min(a*b, p*q), the extra
    terms are zero.
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
    st = check_order(order) == "st"
    grid, block = ((a, b), (p, q)) if st else ((p, q), (a, b))  # kron(grid-shaped, block-shaped)
    left, right, error, relative, sigma = rank_n_factors(kron_blocks(weight, grid, block), n)
    scalers, templates = (left, right) if st else (right, left)
    return NearestKron(xp.reshape(scalers, (n, a, b)), xp.reshape(templates, (n, p, q)), error, relative, sigma)


def rank_n_factors(rearranged: Array, n: int) -> tuple[Array, Array, float, float, Array]:
    """The best rank-`n` factors of a matrix R (r, c) in Frobenius norm: left (n, r) and right
    (n, c) with R ~ left.T @ right, each singular value split evenly (sqrt into each side); zero
    terms beyond R's rank. Also the error, the error relative to R's norm (0 for R = 0), and all
    singular values, largest first: what a Kronecker sum rearranged by `kron_blocks` needs."""
    xp = array_namespace(rearranged)
    u, sigma, vt = xp.linalg.svd(rearranged, full_matrices=False)  # u (r, k), vt (k, c)
    k = min(n, sigma.shape[0])
    root = xp.sqrt(sigma[:k])
    left, right = xp.matrix_transpose(u[:, :k] * root), vt[:k, :] * root[:, None]
    if k < n:  # the rank bound leaves nothing more to take: pad with zero terms
        dev = device_of(rearranged)
        left = xp.concat([left, xp.zeros((n - k, left.shape[1]), dtype=left.dtype, device=dev)])
        right = xp.concat([right, xp.zeros((n - k, right.shape[1]), dtype=right.dtype, device=dev)])
    error = math.sqrt(max(float(xp.sum(sigma[k:] ** 2)), 0.0))
    total = math.sqrt(float(xp.sum(sigma**2)))
    return left, right, error, error / total if total > 0 else 0.0, sigma


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
