"""The Kronecker math against `np.kron` in float64, on NumPy, PyTorch and array-api-strict."""

import array_api_strict
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import reference_expand
from waveinit import WaveError, kron_expand, kron_matmul, nearest_kron

small = st.integers(min_value=1, max_value=4)
batch_shapes = st.lists(st.integers(min_value=1, max_value=3), min_size=0, max_size=2).map(tuple)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds)
def test_kron_expand_matrix_equals_sum_of_np_kron(n, a, b, p, q, batch, seed):
    rng = np.random.default_rng(seed)
    scalers, templates = rng.standard_normal((*batch, n, a, b)), rng.standard_normal((n, p, q))
    out = kron_expand(scalers, templates)
    assert out.shape == (*batch, a * p, b * q)
    np.testing.assert_allclose(out, reference_expand(scalers, templates), rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=small, a=small, p=small, batch=batch_shapes, seed=seeds)
def test_kron_expand_vector_form(n, a, p, batch, seed):
    rng = np.random.default_rng(seed)
    scalers, templates = rng.standard_normal((*batch, n, a)), rng.standard_normal((n, p))
    out = kron_expand(scalers, templates)
    assert out.shape == (*batch, a * p)
    np.testing.assert_allclose(out, reference_expand(scalers, templates), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds, vector=st.booleans(), library=st.sampled_from(["numpy", "torch"]))
def test_kron_expand_template_first_equals_np_kron_of_t_and_s(n, a, b, p, q, batch, seed, vector, library):
    rng = np.random.default_rng(seed)
    grid, block = ((a,), (p,)) if vector else ((a, b), (p, q))
    scalers, templates = rng.standard_normal((*batch, n, *grid)), rng.standard_normal((n, *block))
    flat = scalers.reshape(-1, n, *grid)
    expected = np.stack([sum(np.kron(templates[t], s[t]) for t in range(n)) for s in flat]).reshape(*batch, *np.multiply(grid, block))
    wrap = torch.from_numpy if library == "torch" else np.asarray
    out = kron_expand(wrap(scalers), wrap(templates), order="ts")
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-12, atol=1e-12)


def test_kron_expand_refuses_an_unknown_order():
    with pytest.raises(WaveError, match="Kronecker order must be one of st, ts, got 'tt'"):
        kron_expand(np.ones((1, 2, 2)), np.ones((1, 2, 2)), order="tt")


def test_kron_expand_worked_example():
    # One template, a 2x1 scaler grid: W stacks 2*T over -1*T.
    templates = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    scalers = np.array([[[2.0], [-1.0]]])
    expected = np.array([[2, 4], [6, 8], [-1, -2], [-3, -4]], dtype=float)
    np.testing.assert_array_equal(kron_expand(scalers, templates), expected)


@settings(max_examples=30, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, seed=seeds)
def test_kron_expand_is_linear_in_scalers_and_templates(n, a, b, p, q, seed):
    rng = np.random.default_rng(seed)
    s1, s2 = rng.standard_normal((2, n, a, b))
    t1, t2 = rng.standard_normal((2, n, p, q))
    alpha, beta = rng.standard_normal(2)
    np.testing.assert_allclose(
        kron_expand(alpha * s1 + beta * s2, t1),
        alpha * kron_expand(s1, t1) + beta * kron_expand(s2, t1),
        rtol=1e-10,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        kron_expand(s1, alpha * t1 + beta * t2),
        alpha * kron_expand(s1, t1) + beta * kron_expand(s1, t2),
        rtol=1e-10,
        atol=1e-10,
    )


@settings(max_examples=60, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds)
def test_kron_matmul_equals_dense_product(n, a, b, p, q, batch, seed):
    rng = np.random.default_rng(seed)
    scalers, templates = rng.standard_normal((n, a, b)), rng.standard_normal((n, p, q))
    x = rng.standard_normal((*batch, b * q))
    out = kron_matmul(x, scalers, templates)
    assert out.shape == (*batch, a * p)
    np.testing.assert_allclose(out, x @ kron_expand(scalers, templates).T, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, seed=seeds)
def test_nearest_kron_recovers_an_exact_n_term_matrix(n, a, b, p, q, seed):
    rng = np.random.default_rng(seed)
    weight = kron_expand(rng.standard_normal((n, a, b)), rng.standard_normal((n, p, q)))
    # Only the rebuilt matrix is unique: the factors have a scale (and rotation) ambiguity.
    scalers, templates = nearest_kron(weight, (p, q), n)
    assert scalers.shape == (n, a, b) and templates.shape == (n, p, q)
    np.testing.assert_allclose(kron_expand(scalers, templates), weight, rtol=1e-8, atol=1e-8)
    assert nearest_kron(weight, (p, q), n).relative_error < 1e-7


@settings(max_examples=40, deadline=None)
@given(a=small, b=small, p=small, q=small, n=st.integers(1, 20), seed=seeds)
def test_nearest_kron_error_is_the_discarded_singular_values(a, b, p, q, n, seed):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((a * p, b * q))
    result = nearest_kron(weight, (p, q), n)
    rearranged = weight.reshape(a, p, b, q).transpose(0, 2, 1, 3).reshape(a * b, p * q)
    sigma = np.linalg.svd(rearranged, compute_uv=False)
    expected = np.sqrt(np.sum(sigma[n:] ** 2))
    actual = np.linalg.norm(weight - kron_expand(result.scalers, result.templates))
    assert result.error == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert actual == pytest.approx(expected, rel=1e-7, abs=1e-9)
    assert result.relative_error == pytest.approx(expected / np.linalg.norm(weight), rel=1e-9, abs=1e-12)
    assert result.scalers.shape == (n, a, b)  # zero-padded past the rank bound


def test_nearest_kron_is_optimal_against_a_perturbed_fit():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((12, 8))
    best = nearest_kron(weight, (4, 2), 2)
    worse = kron_expand(best.scalers + 0.01 * rng.standard_normal(best.scalers.shape), best.templates)
    assert np.linalg.norm(weight - worse) > best.error


def test_nearest_kron_of_zero_weight_has_zero_error():
    result = nearest_kron(np.zeros((4, 4)), (2, 2), 3)
    assert result.error == 0 and result.relative_error == 0


# --- the same on other array libraries -------------------------------------------------------


def _libraries():
    return {
        "numpy": (lambda a: a, lambda a: a, np.ndarray),
        "torch": (torch.from_numpy, lambda t: t.numpy(), torch.Tensor),
        "array_api_strict": (array_api_strict.asarray, np.asarray, type(array_api_strict.asarray(0.0))),
    }


@pytest.mark.parametrize("library", ["numpy", "torch", "array_api_strict"])
def test_every_function_on_every_library(library):
    to, back, kind = _libraries()[library]
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((3, 5, 3))
    sv, tv = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 5))
    x = rng.standard_normal((6, 2 * 3))

    out = kron_expand(to(s), to(t))
    assert isinstance(out, kind)
    np.testing.assert_allclose(back(out), reference_expand(s, t), rtol=1e-12)
    out = kron_expand(to(sv), to(tv))
    assert isinstance(out, kind)
    np.testing.assert_allclose(back(out), reference_expand(sv, tv), rtol=1e-12)
    out = kron_matmul(to(x), to(s[0]), to(t))
    assert isinstance(out, kind)
    np.testing.assert_allclose(back(out), x @ reference_expand(s[0], t).T, rtol=1e-10)
    weight = reference_expand(s[0], t)
    result = nearest_kron(to(weight), (5, 3), 3)
    assert isinstance(result.scalers, kind) and isinstance(result.templates, kind)
    np.testing.assert_allclose(back(kron_expand(result.scalers, result.templates)), weight, atol=1e-9)
    assert result.relative_error < 1e-9


def test_float32_in_float32_out():
    s = np.ones((2, 3, 3), dtype=np.float32)
    t = np.ones((2, 4, 4), dtype=np.float32)
    assert kron_expand(s, t).dtype == np.float32
    assert kron_expand(torch.from_numpy(s), torch.from_numpy(t)).dtype == torch.float32


def test_kron_expand_is_differentiable_under_torch_autograd():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kron_expand, (s, t))
    x = torch.randn(3, 2 * 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s, t: kron_matmul(x, s, t), (s, t))


# --- invalid shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scalers, templates",
    [
        ((3, 2, 2), (2, 4, 4)),  # 3 scaler terms, 2 templates
        ((2, 2), (2, 4, 4)),  # scalers too short for the matrix form
        ((2, 2, 2), (2, 4, 4, 4)),  # templates of rank 3
        ((2,), (2,)),  # templates of rank 0 per term
        ((2, 0, 2), (2, 4, 4)),  # an empty axis
    ],
)
def test_kron_expand_rejects_mismatched_shapes(scalers, templates):
    with pytest.raises(WaveError):
        kron_expand(np.ones(scalers), np.ones(templates))


def test_kron_matmul_rejects_wrong_input_width():
    with pytest.raises(WaveError, match="inputs"):
        kron_matmul(np.ones((2, 7)), np.ones((1, 2, 2)), np.ones((1, 3, 3)))


@pytest.mark.parametrize(
    "shape, template_shape, n",
    [((6, 6), (4, 4), 1), ((6, 6), (3,), 1), ((6, 6), (3, 3), 0), ((6, 6), (3, 0), 1), ((6,), (3, 3), 1), ((6, 6), (3, 3), 1.5)],
)
def test_nearest_kron_rejects_bad_arguments(shape, template_shape, n):
    with pytest.raises(WaveError):
        nearest_kron(np.ones(shape), template_shape, n)


def _np_kron_sum(scalers, templates, order):
    """The oracle: a plain loop over np.kron in float64, in either order."""
    pairs = zip(scalers, templates) if order == "st" else zip(templates, scalers)
    return sum(np.kron(left, right) for left, right in pairs)


@settings(max_examples=60, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, seed=seeds, order=st.sampled_from(["st", "ts"]))
def test_nearest_kron_recovers_an_exact_n_term_sum_in_either_order(n, a, b, p, q, seed, order):
    rng = np.random.default_rng(seed)
    weight = _np_kron_sum(rng.standard_normal((n, a, b)), rng.standard_normal((n, p, q)), order)
    result = nearest_kron(weight, (p, q), n, order)
    assert result.scalers.shape == (n, a, b) and result.templates.shape == (n, p, q)
    np.testing.assert_allclose(_np_kron_sum(result.scalers, result.templates, order), weight, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(kron_expand(result.scalers, result.templates, order), weight, rtol=1e-8, atol=1e-8)
    assert result.relative_error < 1e-7


@settings(max_examples=40, deadline=None)
@given(a=small, b=small, p=small, q=small, n=st.integers(1, 20), seed=seeds)
def test_nearest_kron_template_first_is_optimal_its_error_the_discarded_singular_values(a, b, p, q, n, seed):
    # kron(T, S): W is a (p x q) grid of (a x b) blocks, so its rearrangement has one row per
    # template entry; Van Loan & Pitsianis make the truncated SVD of that the best n-term sum.
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((p * a, q * b))
    result = nearest_kron(weight, (p, q), n, "ts")
    rearranged = weight.reshape(p, a, q, b).transpose(0, 2, 1, 3).reshape(p * q, a * b)
    expected = np.sqrt(np.sum(np.linalg.svd(rearranged, compute_uv=False)[n:] ** 2))
    actual = np.linalg.norm(weight - _np_kron_sum(result.scalers, result.templates, "ts"))
    assert result.error == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert actual == pytest.approx(expected, rel=1e-7, abs=1e-9)
    worse = _np_kron_sum(result.scalers + 0.01 * rng.standard_normal(result.scalers.shape), result.templates, "ts")
    assert np.linalg.norm(weight - worse) >= actual - 1e-12


@settings(max_examples=30, deadline=None)
@given(grid=st.lists(small, min_size=1, max_size=2), block=st.lists(small, min_size=1, max_size=2), seed=seeds)
def test_kron_blocks_puts_one_block_per_row(grid, block, seed):
    from waveinit.kron import kron_blocks

    if len(grid) != len(block):
        block = (block * 2)[:len(grid)]
    grid, block = tuple(grid), tuple(block)
    rng = np.random.default_rng(seed)
    left, right = rng.standard_normal(grid), rng.standard_normal(block)
    rows = kron_blocks(np.kron(left, right), grid, block)  # one Kronecker product: the rank-1 outer product
    np.testing.assert_allclose(rows, np.outer(left.ravel(), right.ravel()), rtol=1e-12, atol=1e-12)


def test_an_unknown_order_is_refused_by_nearest_kron():
    with pytest.raises(WaveError, match="Kronecker order must be one of st, ts"):
        nearest_kron(np.zeros((4, 4)), (2, 2), 1, "TS")
