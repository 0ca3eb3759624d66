"""Mimetic initialisation of self-attention (Trockman & Kolter 2023): the products it sets, in
timm's orientation, their diagonals against the paper's betas, and everything else left alone.

Tolerances. The factors are stored in float32, each entry within a relative 2^-24 of the
float64 factor. An entry of a product of two factor blocks, sum_l a_li b_lj, is then off by at
most 2^-23 * |a_:i| |b_:j| <= 2^-23 * s_max (every column of S^1/2 U^T or S^1/2 V^T has a norm of
at most sqrt(s_max), s_max the target's largest singular value), so entries are compared with
`atol = 2^-20 * s_max` (8x margin), and traces and Frobenius norms with `width` times that.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waveinit import ViTSpec, WaveError, state_dict_keys
from waveinit.backends.numpy import attention
from waveinit.keys import split_key
from waveinit.mimetic import ALPHA1, ALPHA2, BETA1, BETA2, mimetic, mimetic_targets
from waveinit.spec import ROLES_BY_NAME

REPLACED = ("attn.qkv.weight", "attn.proj.weight")


def make_spec(depth: int, heads: int, head_dim: int) -> ViTSpec:
    return ViTSpec(depth=depth, width=heads * head_dim, heads=heads, patch_size=2, image_size=4, channels=1, num_classes=3)


def random_state(spec: ViTSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Every entry random (biases and LayerNorms too), so that an entry left alone is told from one reset."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(ROLES_BY_NAME[split_key(k)[0]].param_shape(spec)).astype(np.float32) for k in state_dict_keys(spec)}


def products(out: dict[str, np.ndarray], spec: ViTSpec, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """(Wq_h^T @ Wk_h for every head h, (H, w, w); W_proj @ W_v, (w, w)), in float64, read off timm's
    [q; k; v] rows of attn.qkv.weight (head h: rows h*hd.. of each third)."""
    w, hd = spec.width, spec.head_dim
    qkv = out[f"blocks.{layer}.attn.qkv.weight"].astype(np.float64)
    q, k, v = qkv[:w], qkv[w:2 * w], qkv[2 * w:]
    qk = np.stack([q[h * hd:(h + 1) * hd].T @ k[h * hd:(h + 1) * hd] for h in range(spec.heads)])
    return qk, out[f"blocks.{layer}.attn.proj.weight"].astype(np.float64) @ v


def atol(target: np.ndarray) -> float:
    """The entry tolerance derived in the module docstring, for a product factorised from `target`."""
    return 2.0**-20 * np.linalg.norm(target, 2)


def truncated(a: np.ndarray, k: int) -> np.ndarray:
    """The best rank-k approximation of `a` (Eckart-Young: the top k singular triplets)."""
    u, s, vt = np.linalg.svd(a)
    return (u[:, :k] * s[:k]) @ vt[:k]


specs = st.builds(make_spec, depth=st.integers(1, 3), heads=st.integers(1, 4), head_dim=st.sampled_from([8, 16, 32]))
seeds = st.integers(0, 2**32 - 1)
alphas = st.floats(0.05, 1.5)  # no tiny non-zero constants: their square roots would underflow in float32
betas = st.builds(lambda magnitude, sign: sign * magnitude, st.floats(0.05, 1.5), st.sampled_from([-1.0, 1.0]))


# --- the products, in timm's orientation -------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=seeds, alpha=alphas, beta=betas)
def test_query_key_product_is_the_best_rank_head_dim_approximation_of_the_target(spec, seed, alpha, beta):
    out = mimetic(random_state(spec), spec, seed, alpha1=alpha, beta1=beta)
    k, w = spec.head_dim, spec.width
    for layer, (qk_targets, _) in enumerate(mimetic_targets(spec, seed, alpha1=alpha, beta1=beta)):
        qk, _ = products(out, spec, layer)
        for h in range(spec.heads):
            target = qk_targets[h]
            np.testing.assert_allclose(qk[h], truncated(target, k), rtol=0, atol=atol(target))
            s = np.linalg.svd(target, compute_uv=False)  # Eckart-Young: no rank-k matrix is closer
            assert abs(np.linalg.norm(target - qk[h]) - np.sqrt(np.sum(s[k:] ** 2))) <= w * atol(target)


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=seeds, alpha=alphas, beta=betas)
def test_projection_times_value_is_the_target(spec, seed, alpha, beta):
    out = mimetic(random_state(spec), spec, seed, alpha2=alpha, beta2=beta)
    for layer, (_, vo_target) in enumerate(mimetic_targets(spec, seed, alpha2=alpha, beta2=beta)):
        _, vo = products(out, spec, layer)
        np.testing.assert_allclose(vo, vo_target, rtol=0, atol=atol(vo_target))


def test_targets_are_the_papers_random_part_plus_a_scaled_identity():
    """Z = (target -/+ beta I) / alpha has i.i.d. N(0, 1/w) entries: mean and variance within 6
    standard errors (w^2 entries per matrix: the mean's is 1/w^1.5, the variance's sqrt(2/w^2)/w)."""
    spec = make_spec(depth=2, heads=2, head_dim=64)  # width 128: 16384 entries per matrix
    w = spec.width
    for qk, vo in mimetic_targets(spec, seed=7, alpha1=0.5, beta1=0.3, alpha2=0.25, beta2=0.6):
        zs = [(a - 0.3 * np.eye(w)) / 0.5 for a in qk] + [(vo + 0.6 * np.eye(w)) / 0.25]
        for z in zs:
            assert abs(z.mean()) <= 6 / w**1.5
            assert abs(z.var() * w - 1) <= 6 * np.sqrt(2) / w
        assert not np.allclose(zs[0], zs[1])  # a fresh Z1 for every head


def test_the_products_are_those_timm_computes():
    """Through timm's layout: the logits of head h are x Wq_h^T Wk_h x^T, and a lone token (softmax
    of one logit: it attends to itself) leaves attention (without biases) as x @ (W_proj W_v)^T."""
    spec = make_spec(depth=1, heads=3, head_dim=8)
    w, hd = spec.width, spec.head_dim
    out = mimetic(random_state(spec), spec, seed=3)
    no_bias = {**out, "blocks.0.attn.qkv.bias": np.zeros(3 * w), "blocks.0.attn.proj.bias": np.zeros(w)}
    qk_targets, vo_target = mimetic_targets(spec, seed=3)[0]
    x = np.random.default_rng(1).standard_normal((5, w))  # 5 tokens
    qkv = (x @ out["blocks.0.attn.qkv.weight"].astype(np.float64).T).reshape(5, 3, spec.heads, hd)  # as timm and backends/numpy split it
    l1 = np.abs(x).sum(1)  # an entry error e of a product moves x_i M x_j by at most |x_i|_1 |x_j|_1 e
    for h in range(spec.heads):
        logits = qkv[:, 0, h] @ qkv[:, 1, h].T
        assert np.all(np.abs(logits - x @ truncated(qk_targets[h], hd) @ x.T) <= np.outer(l1, l1) * atol(qk_targets[h]))
    lone = attention(x[:1, None, :], no_bias, "blocks.0.attn.", spec.heads)[0, 0]  # (w,)
    assert np.all(np.abs(lone - vo_target @ x[0]) <= l1[0] * atol(vo_target))


def test_the_checks_tell_the_orientations_apart():
    """The transposed products (q and k swapped, or value and projection multiplied the other way
    round) miss the targets by far more than the tolerance the tests above allow."""
    spec = make_spec(depth=1, heads=1, head_dim=16)  # one head: the query-key product is exact, so its transpose is the only error
    out = mimetic(random_state(spec), spec, seed=5)
    [(qk_targets, vo_target)] = mimetic_targets(spec, seed=5)
    qk, vo = products(out, spec, 0)
    w = spec.width
    qkv = out["blocks.0.attn.qkv.weight"].astype(np.float64)
    swapped_vo = qkv[2 * w:] @ out["blocks.0.attn.proj.weight"].astype(np.float64)  # W_v @ W_proj
    assert np.abs(qk[0] - qk_targets[0]).max() <= atol(qk_targets[0])
    assert np.abs(qk[0].T - qk_targets[0]).max() > 1000 * atol(qk_targets[0])
    assert np.abs(vo - vo_target).max() <= atol(vo_target)
    assert np.abs(swapped_vo - vo_target).max() > 1000 * atol(vo_target)


# --- the diagonals against the paper's betas ---------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=seeds, beta1=st.floats(0.05, 1.5), beta2=betas)
def test_without_the_random_part_the_products_are_scaled_projectors_and_minus_identity(spec, seed, beta1, beta2):
    """alpha = 0: each head's product is a best rank-k approximation of beta1 I, i.e. beta1 times
    a rank-k orthogonal projector (symmetric, M^2 = beta1 M, trace beta1 k, distance
    beta1 sqrt(w - k) from beta1 I); their sum has diagonal mean beta1 (H k = w); W_proj W_v is
    -beta2 I (beta2 of either sign)."""
    out = mimetic(random_state(spec), spec, seed, alpha1=0, beta1=beta1, alpha2=0, beta2=beta2)
    w, k = spec.width, spec.head_dim
    eye = np.eye(w)
    for layer in range(spec.depth):
        qk, vo = products(out, spec, layer)
        tol = atol(beta1 * eye)
        for m in qk:
            np.testing.assert_allclose(m, m.T, rtol=0, atol=tol)
            # m = beta1 P + E (|E_ij| <= tol): m m - beta1 m = beta1 (P E + E P - E) + E E, entries <= beta1 (2 sqrt(w) + 1) tol + w tol^2
            np.testing.assert_allclose(m @ m, beta1 * m, rtol=0, atol=beta1 * (2 * np.sqrt(w) + 1) * tol + w * tol**2)
            assert abs(np.trace(m) - beta1 * k) <= w * tol
            assert abs(np.linalg.norm(beta1 * eye - m) - beta1 * np.sqrt(w - k)) <= w * tol
        assert abs(np.trace(qk.sum(0)) / w - beta1) <= w * tol
        np.testing.assert_allclose(vo, -beta2 * eye, rtol=0, atol=atol(beta2 * eye))


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=seeds)
def test_at_the_papers_values_query_key_diagonals_are_positive_and_value_projection_ones_near_minus_beta2(spec, seed):
    """Normalised diagonal means (trace / rank) against the paper's betas, with derived tolerances.

    Value-projection: W_proj W_v = alpha2 Z2 - beta2 I exactly, so its diagonal mean is
    -beta2 + alpha2 tr(Z2) / w, where tr(Z2) ~ N(0, 1): within 6 alpha2 / w of -beta2
    (6 sigma), which for w >= 8 keeps it below -0.1.

    Query-key, each head: M = U_k U_k^T A for the target A = alpha1 Z1 + beta1 I, so
    tr(M) / k = beta1 + (1/k) sum_i u_i^T (A - beta1 I) u_i, within |sym(A - beta1 I)|_2 of beta1
    (sym: the symmetric part; exact for any k orthonormal u_i). With one head (k = w) M = A, and
    the mean is beta1 + alpha1 tr(Z1) / w: within 6 alpha1 / w of beta1, as above. With more
    heads the truncation keeps the largest singular directions, which lean towards the identity:
    the summed product's diagonal mean measured 1.06 to 1.26 (std <= 0.04) for 2 to 4 heads at
    the paper's values, so it is asserted positive only.
    """
    out = mimetic(random_state(spec), spec, seed)
    w, k = spec.width, spec.head_dim
    for layer, (qk_targets, vo_target) in enumerate(mimetic_targets(spec, seed)):
        qk, vo = products(out, spec, layer)
        vo_mean = np.trace(vo) / w
        assert vo_mean < 0
        assert abs(vo_mean + BETA2) <= 6 * ALPHA2 / w + w * atol(vo_target)
        for m, target in zip(qk, qk_targets):
            spread = np.linalg.norm((target + target.T) / 2 - BETA1 * np.eye(w), 2)
            assert abs(np.trace(m) / k - BETA1) <= spread + w * atol(target)
        qk_mean = np.trace(qk.sum(0)) / w
        assert qk_mean > 0
        if spec.heads == 1:
            assert abs(qk_mean - BETA1) <= 6 * ALPHA1 / w + w * atol(qk_targets[0])


def test_the_paper_values_are_the_defaults():
    assert (ALPHA1, BETA1, ALPHA2, BETA2) == (0.7, 0.7, 0.4, 0.4)
    for fn in (mimetic, mimetic_targets):
        defaults = {name: p.default for name, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}
        assert defaults == {"alpha1": ALPHA1, "beta1": BETA1, "alpha2": ALPHA2, "beta2": BETA2}


# --- everything else ---------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(spec=specs, seed=seeds)
def test_only_the_attention_weights_change_and_the_input_is_not_touched(spec, seed):
    state = random_state(spec, seed=1)
    before = {k: v.copy() for k, v in state.items()}
    out = mimetic(state, spec, seed)
    assert list(out) == list(state)
    for key, value in out.items():
        assert value.shape == state[key].shape, key
        assert not np.shares_memory(value, state[key]), key
        if split_key(key)[0] in REPLACED:
            assert value.dtype == np.float32, key
            assert not np.array_equal(value, state[key]), key
        else:
            assert value.dtype == state[key].dtype, key
            np.testing.assert_array_equal(value, state[key], err_msg=key)  # biases and every other entry bit for bit
    for key, value in state.items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_deterministic_in_the_seed_and_blocks_do_not_depend_on_the_depth():
    spec = make_spec(depth=3, heads=2, head_dim=8)
    a = mimetic(random_state(spec, seed=0), spec, seed=11)
    b = mimetic(random_state(spec, seed=4), spec, seed=11)  # other starting weights, same seed
    c = mimetic(random_state(spec, seed=0), spec, seed=12)
    shallow = make_spec(depth=2, heads=2, head_dim=8)
    d = mimetic(random_state(shallow), shallow, seed=11)
    for layer in range(spec.depth):
        for name in REPLACED:
            key = f"blocks.{layer}.{name}"
            np.testing.assert_array_equal(a[key], b[key])
            assert not np.allclose(a[key], c[key])
            if layer < shallow.depth:
                np.testing.assert_array_equal(a[key], d[key])
    assert not np.allclose(a["blocks.0.attn.qkv.weight"], a["blocks.1.attn.qkv.weight"])  # a fresh draw per block


def test_a_state_dict_that_does_not_fit_is_a_wave_error():
    spec = make_spec(depth=2, heads=2, head_dim=8)
    state = random_state(spec)
    missing = {k: v for k, v in state.items() if k != "blocks.1.attn.proj.weight"}
    with pytest.raises(WaveError, match=r"missing tensor blocks\.1\.attn\.proj\.weight"):
        mimetic(missing, spec, seed=0)
    with pytest.raises(WaveError, match=r"blocks\.0\.attn\.qkv\.weight has shape \(48, 8\), expected \(48, 16\)"):
        mimetic({**state, "blocks.0.attn.qkv.weight": np.zeros((48, 8), np.float32)}, spec, seed=0)
    with pytest.raises(WaveError, match="missing tensor blocks.2"):
        mimetic(state, make_spec(depth=3, heads=2, head_dim=8), seed=0)  # a deeper spec than the state dict


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_a_bad_seed_is_a_wave_error(seed):
    spec = make_spec(depth=1, heads=1, head_dim=8)
    with pytest.raises(WaveError, match="seed must be a non-negative integer"):
        mimetic(random_state(spec), spec, seed)


@pytest.mark.parametrize("name", ["alpha1", "beta1", "alpha2", "beta2"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.7", None])
def test_a_bad_constant_is_a_wave_error(name, value):
    spec = make_spec(depth=1, heads=1, head_dim=8)
    with pytest.raises(WaveError, match=f"mimetic {name} must be a finite number"):
        mimetic(random_state(spec), spec, 0, **{name: value})
