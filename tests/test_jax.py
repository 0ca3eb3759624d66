"""The array-API core on JAX (CPU): kron_expand, kron_matmul, nearest_kron and materialize
against the NumPy reference (loops over `np.kron`), plus jax.grad, jax.jit and jax.vmap
through them. Every result must be a JAX array: the core answers in its input's library.

jax is a test dependency (the `test` extra): it is imported plainly, so a missing jax fails
here, never skips.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from conftest import random_factors, reference_expand
from waveinit import ROLE_NAMES, kron_expand, kron_matmul, materialize, nearest_kron, state_dict_keys
from waveinit.backends import numpy as ref
from waveinit.backends.numpy import kron_sum

# float64 throughout: the NumPy reference is float64, and in float64 the comparisons keep the
# tolerances of test_kron.py (1e-12 for the exact products), so a wrong index or transpose can
# not hide in float32 round-off. JAX computes in float32 unless x64 is on; the flag is global
# to the process, which is harmless here since no other test module uses JAX. float32 has its
# own test below (float32 in, float32 out, even with x64 on).
jax.config.update("jax_enable_x64", True)

# Every new shape costs JAX a compilation per operation (0.1-0.3 s an example on CPU, against
# microseconds for NumPy), so the properties run on fewer examples than test_kron.py's.
small = st.integers(min_value=1, max_value=4)
batch_shapes = st.lists(st.integers(min_value=1, max_value=3), min_size=0, max_size=2).map(tuple)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def assert_jax(*arrays, dtype=jnp.float64):
    for a in arrays:
        assert isinstance(a, jax.Array), type(a)
        assert a.dtype == dtype, a.dtype


# --- (1) kron_expand ---------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds)
def test_kron_expand_matrix_form_equals_np_kron(n, a, b, p, q, batch, seed):
    rng = np.random.default_rng(seed)
    scalers, templates = rng.standard_normal((*batch, n, a, b)), rng.standard_normal((n, p, q))
    out = kron_expand(jnp.asarray(scalers), jnp.asarray(templates))
    assert_jax(out)
    assert out.shape == (*batch, a * p, b * q)
    np.testing.assert_allclose(np.asarray(out), reference_expand(scalers, templates), rtol=1e-12, atol=1e-12)


@settings(max_examples=8, deadline=None)
@given(n=small, a=small, p=small, batch=batch_shapes, seed=seeds)
def test_kron_expand_vector_form_equals_np_kron(n, a, p, batch, seed):
    rng = np.random.default_rng(seed)
    scalers, templates = rng.standard_normal((*batch, n, a)), rng.standard_normal((n, p))
    out = kron_expand(jnp.asarray(scalers), jnp.asarray(templates))
    assert_jax(out)
    assert out.shape == (*batch, a * p)
    np.testing.assert_allclose(np.asarray(out), reference_expand(scalers, templates), rtol=1e-12, atol=1e-12)


def test_float32_in_float32_out():
    # x64 being on must not promote: the result keeps the inputs' dtype.
    rng = np.random.default_rng(3)
    s, t = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((2, 5, 2)).astype(np.float32)
    x = rng.standard_normal((7, 4 * 2)).astype(np.float32)
    out = kron_expand(jnp.asarray(s), jnp.asarray(t))
    y = kron_matmul(jnp.asarray(x), jnp.asarray(s), jnp.asarray(t))
    assert_jax(out, y, dtype=jnp.float32)
    # float32 round-off on sums of at most a few products of O(1) numbers
    np.testing.assert_allclose(np.asarray(out), kron_sum(s.astype(np.float64), t.astype(np.float64)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y), x.astype(np.float64) @ kron_sum(s.astype(np.float64), t.astype(np.float64)).T, rtol=1e-4, atol=1e-4)


# --- (2) kron_matmul ---------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds)
def test_kron_matmul_equals_dense_product(n, a, b, p, q, batch, seed):
    rng = np.random.default_rng(seed)
    scalers, templates = rng.standard_normal((n, a, b)), rng.standard_normal((n, p, q))
    x = rng.standard_normal((*batch, b * q))
    out = kron_matmul(jnp.asarray(x), jnp.asarray(scalers), jnp.asarray(templates))
    assert_jax(out)
    assert out.shape == (*batch, a * p)
    # the dense product on the NumPy path of kron_expand, itself checked against np.kron above
    np.testing.assert_allclose(np.asarray(out), x @ kron_expand(scalers, templates).T, rtol=1e-10, atol=1e-10)


# --- (3) nearest_kron --------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, seed=seeds)
def test_nearest_kron_recovers_an_exact_n_term_sum(n, a, b, p, q, seed):
    rng = np.random.default_rng(seed)
    weight = kron_sum(rng.standard_normal((n, a, b)), rng.standard_normal((n, p, q)))
    result = nearest_kron(jnp.asarray(weight), (p, q), n)
    assert_jax(result.scalers, result.templates, result.singular_values)
    # past the rank bound min(a*b, p*q) the extra terms are zeros: JAX arrays too
    assert result.scalers.shape == (n, a, b) and result.templates.shape == (n, p, q)
    assert result.relative_error < 1e-9
    rebuilt = kron_sum(np.asarray(result.scalers), np.asarray(result.templates))  # in NumPy: no more compiling
    np.testing.assert_allclose(rebuilt, weight, rtol=1e-8, atol=1e-8)
    # SVD signs (and rotations within equal singular values) differ between libraries: only the
    # rebuilt matrix and the singular values are unique, so those are what is compared.
    expected = nearest_kron(weight, (p, q), n)
    np.testing.assert_allclose(rebuilt, kron_sum(expected.scalers, expected.templates), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.asarray(result.singular_values), expected.singular_values, rtol=1e-9, atol=1e-9)


def test_nearest_kron_truncation_matches_numpy():
    # A random weight is not an exact sum: the truncated fit and its error must still agree with
    # NumPy's (a fixed seed, whose singular values are well separated at the cut).
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((3 * 4, 2 * 5))
    result = nearest_kron(jnp.asarray(weight), (4, 5), 2)
    expected = nearest_kron(weight, (4, 5), 2)
    sigma = expected.singular_values
    assert sigma[1] - sigma[2] > 0.1 * sigma[0]  # the fit is unique
    assert_jax(result.scalers, result.templates)
    np.testing.assert_allclose(np.asarray(kron_expand(result.scalers, result.templates)),
                               kron_expand(expected.scalers, expected.templates), rtol=1e-9, atol=1e-9)
    assert abs(result.error - expected.error) < 1e-9
    assert abs(result.relative_error - expected.relative_error) < 1e-12


# --- (4) materialize ---------------------------------------------------------------------------


def test_materialize_equals_the_np_kron_reference(small_spec):
    templates, scalers = random_factors(small_spec, 8, 3)
    state = materialize(small_spec, 8, {k: jnp.asarray(v) for k, v in templates.items()}, {k: jnp.asarray(v) for k, v in scalers.items()})
    expected = ref.state_dict(small_spec, 8, templates, scalers)
    assert list(state) == list(expected) == state_dict_keys(small_spec)
    for key, value in expected.items():
        assert_jax(state[key])
        assert state[key].shape == value.shape, key
        np.testing.assert_allclose(np.asarray(state[key]), value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_materialize_under_jit_with_per_role_counts(small_spec):
    counts = {name: 1 + i % 3 for i, name in enumerate(ROLE_NAMES)}  # 1, 2 or 3 templates per role
    templates, scalers = random_factors(small_spec, 4, counts, seed=5)
    build = jax.jit(lambda t, s: materialize(small_spec, 4, t, s))
    state = build({k: jnp.asarray(v) for k, v in templates.items()}, {k: jnp.asarray(v) for k, v in scalers.items()})
    expected = ref.state_dict(small_spec, 4, templates, scalers)
    assert sorted(state) == sorted(expected)  # jit returns dicts with sorted keys (JAX pytrees)
    for key, value in expected.items():
        assert_jax(state[key])
        np.testing.assert_allclose(np.asarray(state[key]), value, rtol=1e-12, atol=1e-12, err_msg=key)


# --- (5) jax.grad ------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds)
def test_grad_of_kron_expand_is_the_analytic_gradient(n, a, b, p, q, batch, seed):
    # L = sum(W * G) with W[..., i*p+k, j*q+l] = sum_t S[..., t, i, j] T[t, k, l], so
    # dL/dS[..., t, i, j] = sum_kl G[..., i, k, j, l] T[t, k, l] and
    # dL/dT[t, k, l] = sum_(...)ij G[..., i, k, j, l] S[..., t, i, j].
    rng = np.random.default_rng(seed)
    s, t = rng.standard_normal((*batch, n, a, b)), rng.standard_normal((n, p, q))
    g = rng.standard_normal((*batch, a * p, b * q))
    loss = lambda s, t, g: jnp.sum(kron_expand(s, t) * g)
    # jitted: one compilation per example instead of one per operation (eager grad is checked
    # in the two tests below)
    ds, dt = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(s), jnp.asarray(t), jnp.asarray(g))
    assert_jax(ds, dt)
    blocks = g.reshape(-1, a, p, b, q)  # the batch flattened to one axis z
    expected_ds = np.einsum("zikjl,tkl->ztij", blocks, t).reshape(s.shape)
    expected_dt = np.einsum("zikjl,ztij->tkl", blocks, s.reshape(-1, n, a, b))
    np.testing.assert_allclose(np.asarray(ds), expected_ds, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dt), expected_dt, rtol=1e-10, atol=1e-10)


def test_grad_of_vector_form_is_the_analytic_gradient():
    rng = np.random.default_rng(11)
    s, t, g = rng.standard_normal((3, 2, 4)), rng.standard_normal((2, 5)), rng.standard_normal((3, 4 * 5))
    ds, dt = jax.grad(lambda s, t: jnp.sum(kron_expand(s, t) * jnp.asarray(g)), argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
    blocks = g.reshape(3, 4, 5)
    np.testing.assert_allclose(np.asarray(ds), np.einsum("lik,tk->lti", blocks, t), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dt), np.einsum("lik,lti->tk", blocks, s), rtol=1e-10, atol=1e-10)


def test_grads_match_finite_differences():
    # jax's own check: forward and reverse mode against finite differences (float64, so the
    # default tolerances of check_grads apply), to second order for kron_expand.
    rng = np.random.default_rng(2)
    s, t = jnp.asarray(rng.standard_normal((2, 3, 2))), jnp.asarray(rng.standard_normal((2, 4, 5)))
    x = jnp.asarray(rng.standard_normal((3, 2 * 5)))
    # check_grads feeds some evaluations NumPy arrays (its random tangents), and the core
    # rightly refuses to mix NumPy with the JAX arrays closed over: convert on the way in.
    expand = lambda s, t: kron_expand(jnp.asarray(s), jnp.asarray(t))
    matmul = lambda x, s, t: kron_matmul(jnp.asarray(x), jnp.asarray(s), jnp.asarray(t))
    check_grads(expand, (s, t), order=2, modes=("fwd", "rev"))
    check_grads(matmul, (x, s, t), order=1, modes=("fwd", "rev"))  # order 2 would add seconds of compiling


# --- (6) jax.jit (and vmap) --------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(n=small, a=small, b=small, p=small, q=small, batch=batch_shapes, seed=seeds)
def test_jit_gives_the_eager_result(n, a, b, p, q, batch, seed):
    rng = np.random.default_rng(seed)
    s, t = rng.standard_normal((*batch, n, a, b)), rng.standard_normal((n, p, q))
    s0, x = rng.standard_normal((n, a, b)), rng.standard_normal((2, b * q))
    args = tuple(map(jnp.asarray, (s, t, s0, x)))

    def step(s, t, s0, x):  # a function that calls the core, as a training step would
        return jnp.tanh(kron_expand(s, t)), kron_matmul(x, s0, t)

    eager, jitted = step(*args), jax.jit(step)(*args)
    assert_jax(*jitted)
    for e, j in zip(eager, jitted):
        assert j.shape == e.shape
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jitted[0]), np.tanh(reference_expand(s, t)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jitted[1]), x @ kron_sum(s0, t).T, rtol=1e-10, atol=1e-10)


def test_vmap_over_scalers_equals_batch_dimensions():
    rng = np.random.default_rng(4)
    s, t = rng.standard_normal((5, 3, 2, 4)), rng.standard_normal((3, 2, 3))
    mapped = jax.vmap(kron_expand, in_axes=(0, None))(jnp.asarray(s), jnp.asarray(t))
    assert_jax(mapped)
    np.testing.assert_allclose(np.asarray(mapped), reference_expand(s, t), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(kron_expand(jnp.asarray(s), jnp.asarray(t))), rtol=1e-12, atol=1e-12)
