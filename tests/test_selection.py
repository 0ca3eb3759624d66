"""Weight selection (Xu et al. 2024) and nearest-Kronecker learngenes, both from an ancestry's
weights without data: index rules, whole heads, not-applicable sizes, exact reconstruction."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import random_factors
from waveinit import ViTSpec, WaveError, learngene_from_weights, materialize, state_dict_keys, weight_selection
from waveinit.backends import numpy as ref
from waveinit.keys import split_key
from waveinit.selection import uniform_indices
from waveinit.spec import ROLES_BY_NAME

SOURCE = ViTSpec(depth=4, width=64, heads=4, patch_size=2, image_size=4, channels=1, num_classes=3)  # heads of 16


def random_state(spec: ViTSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(ROLES_BY_NAME[split_key(k)[0]].param_shape(spec)) for k in state_dict_keys(spec)}


# --- the index rule ---------------------------------------------------------------------------


@given(n=st.integers(1, 400), data=st.data())
def test_uniform_indices_are_evenly_spaced_distinct_and_start_at_zero(n, data):
    m = data.draw(st.integers(1, n))
    idx = uniform_indices(n, m)
    assert len(idx) == m and idx[0] == 0 and idx[-1] <= n - 1
    gaps = np.diff(idx)
    assert (gaps >= 1).all()  # distinct and increasing
    assert m == 1 or gaps.max() - gaps.min() <= 1  # as even as integers allow
    if n % m == 0:
        np.testing.assert_array_equal(idx, np.arange(m) * (n // m))  # every (n/m)-th entry


def test_uniform_indices_worked_examples():
    np.testing.assert_array_equal(uniform_indices(8, 4), [0, 2, 4, 6])
    np.testing.assert_array_equal(uniform_indices(5, 3), [0, 2, 4])  # round(linspace(0, 4, 3))
    np.testing.assert_array_equal(uniform_indices(6, 4), [0, 2, 3, 5])  # round([0, 1.67, 3.33, 5])


# --- selection --------------------------------------------------------------------------------

targets = st.builds(
    lambda depth, heads, head_dim: SOURCE.replace(depth=depth, width=heads * head_dim, heads=heads),
    depth=st.integers(1, 4), heads=st.integers(1, 4), head_dim=st.sampled_from([4, 8, 16]),
)


@settings(max_examples=30, deadline=None)
@given(target=targets)
def test_selection_gives_the_target_keys_and_shapes(target):
    out = weight_selection(random_state(SOURCE), SOURCE, target)
    assert list(out) == state_dict_keys(target)
    for key, value in out.items():
        assert value.shape == ROLES_BY_NAME[split_key(key)[0]].param_shape(target), key


def test_same_size_is_a_copy_and_fewer_layers_are_the_first_layers():
    state = random_state(SOURCE)
    same = weight_selection(state, SOURCE, SOURCE)
    assert all(np.array_equal(same[k], state[k]) for k in state)
    shallow = weight_selection(state, SOURCE, SOURCE.replace(depth=2))
    assert sorted({split_key(k)[1] for k in shallow if k.startswith("blocks.")}) == [0, 1]
    assert all(np.array_equal(shallow[k], state[k]) for k in shallow)  # blocks 0 and 1, and every global


def test_every_width_axis_keeps_the_same_evenly_spaced_entries():
    # Entries that carry their own residual index: the selection reads them back.
    target = SOURCE.replace(width=48, heads=3)
    state = random_state(SOURCE)
    coordinate = np.arange(SOURCE.width, dtype=float)
    for key in ("cls_token", "pos_embed", "norm.weight", "blocks.1.norm2.bias", "blocks.0.attn.proj.bias"):
        state[key] = np.broadcast_to(coordinate, state[key].shape).copy()
    state["blocks.0.mlp.fc1.weight"] = np.broadcast_to(coordinate, state["blocks.0.mlp.fc1.weight"].shape).copy()  # (mlp, w): columns
    state["head.weight"] = np.broadcast_to(coordinate, state["head.weight"].shape).copy()
    out = weight_selection(state, SOURCE, target)
    want = uniform_indices(64, 48)
    for key in ("cls_token", "pos_embed", "norm.weight", "blocks.1.norm2.bias", "blocks.0.attn.proj.bias", "blocks.0.mlp.fc1.weight", "head.weight"):
        assert (out[key] == want).all(), key
    assert out["pos_embed"].shape[1] == SOURCE.tokens  # every token kept
    assert out["head.weight"].shape[0] == SOURCE.num_classes  # every class kept


def test_attention_heads_are_kept_whole_in_q_k_v_and_the_projection():
    target = SOURCE.replace(width=32, heads=2)  # 2 of 4 heads of 16: heads 0 and 2
    state = random_state(SOURCE)
    rows = np.arange(3 * 64, dtype=float)[:, None]
    state["blocks.0.attn.qkv.weight"] = np.broadcast_to(rows, (192, 64)).copy()
    state["blocks.0.attn.proj.weight"] = np.broadcast_to(np.arange(64.0), (64, 64)).copy()
    out = weight_selection(state, SOURCE, target)
    head0, head2 = np.arange(0, 16), np.arange(32, 48)
    attention = np.concatenate([head0, head2])
    np.testing.assert_array_equal(out["blocks.0.attn.qkv.weight"][:, 0], np.concatenate([attention, 64 + attention, 128 + attention]))
    np.testing.assert_array_equal(out["blocks.0.attn.proj.weight"][0], attention)  # the projection reads the same heads


def _widen(state: dict, spec: ViTSpec, k: int) -> tuple[dict, ViTSpec]:
    """Each residual coordinate, head and hidden unit repeated k times in place (no rescaling)."""
    wide = spec.replace(width=k * spec.width, heads=k * spec.heads)

    def repeat(x, axis, kind):
        if kind in ("width", "mlp"):
            return np.repeat(x, k, axis=axis)
        parts = 3 if kind == "qkv" else 1  # heads: (parts, H, hd) -> each head k times
        moved = np.moveaxis(x, axis, 0)
        grid = moved.reshape(parts, spec.heads, spec.head_dim, *moved.shape[1:])
        return np.moveaxis(np.repeat(grid, k, axis=1).reshape(-1, *moved.shape[1:]), 0, axis)

    out = {}
    for key, x in state.items():
        for axis, kind in enumerate(ROLES_BY_NAME[split_key(key)[0]].selected()):
            if kind is not None:
                x = repeat(x, axis, kind)
        out[key] = x
    return out, wide


@pytest.mark.parametrize("k", [2, 3])
def test_selection_undoes_widening_by_repetition(k):
    # Evenly spaced entries, whole heads: from a model whose every coordinate, head and hidden
    # unit is repeated k times, selection keeps exactly one copy of each: the narrow model.
    narrow = SOURCE.replace(depth=2, width=32, heads=2)
    state = random_state(narrow, seed=k)
    wide_state, wide = _widen(state, narrow, k)
    out = weight_selection(wide_state, wide, narrow)
    for key in state:
        np.testing.assert_array_equal(out[key], state[key], err_msg=key)


@pytest.mark.parametrize(
    "change, what",
    [({"depth": 5}, "depth 5 exceeds the source's 4"), ({"width": 80, "heads": 5}, "width 80 exceeds"),
     ({"width": 64, "heads": 8}, "heads 8 exceeds"), ({"width": 64, "heads": 2}, "head width 32 exceeds"),
     ({"num_classes": 7}, "needs the source's data shape")],
)
def test_larger_targets_are_not_applicable(change, what):
    with pytest.raises(WaveError, match="does not apply|data shape") as e:
        weight_selection(random_state(SOURCE), SOURCE, SOURCE.replace(**change))
    assert what in str(e.value) and "\n" not in str(e.value)


def test_a_missing_or_misshapen_source_tensor_is_named():
    state = random_state(SOURCE)
    del state["blocks.3.mlp.fc2.bias"]
    with pytest.raises(WaveError, match="missing tensor blocks.3.mlp.fc2.bias"):
        weight_selection(state, SOURCE, SOURCE.replace(depth=1))


def test_selection_runs_on_torch_tensors_and_gives_numpys_numbers():
    state = random_state(SOURCE)
    target = SOURCE.replace(depth=3, width=48, heads=3)
    on_numpy = weight_selection(state, SOURCE, target)
    on_torch = weight_selection({k: torch.from_numpy(v) for k, v in state.items()}, SOURCE, target)
    for key in on_numpy:
        assert isinstance(on_torch[key], torch.Tensor)
        np.testing.assert_array_equal(on_torch[key].numpy(), on_numpy[key])


def test_a_selected_half_width_model_trains_far_better_than_random_init(ancestry, one_thread):
    # The 2x64 ancestry trained on digits (conftest) cut to 2x32 (its one head narrowed to 32),
    # against random init of that size: the same epoch, rate and data order for both.
    from waveinit import load_model
    from waveinit.backends.torch import ViT, load_state_dict
    from waveinit.configs import TrainConfig
    from waveinit.io.datasets import load_dataset
    from waveinit.tasks import random_vit
    from waveinit.training.engine import train
    from waveinit.training.evaluation import evaluate

    source = load_model(ancestry)
    target = source.spec.replace(width=32, heads=1)
    state = weight_selection(source.state_dict, source.spec, target)
    data = load_dataset("digits")
    assert np.isfinite(ref.forward(state, target, data.test_images[:8])).all()
    accuracy = {}
    for name, model in (("selected", load_state_dict(ViT(target), state)), ("random", random_vit(target, 0))):
        train(model, data.train_images, data.train_labels, TrainConfig(epochs=1, batch_size=64, lr=3e-3), device="cpu")
        accuracy[name] = evaluate(model, data.test_images, data.test_labels, 256, "cpu")["accuracy"]
    assert accuracy["selected"] > accuracy["random"] + 0.15, accuracy


# --- learngene_from_weights -------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(depth=st.integers(1, 3), blocks=st.integers(1, 3), heads_per_block=st.integers(1, 2), side=st.sampled_from([4, 8]),
       n=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_weights_of_n_term_kronecker_form_are_reconstructed_exactly(depth, blocks, heads_per_block, side, n, seed):
    spec = SOURCE.replace(depth=depth, width=side * blocks, heads=blocks * heads_per_block)
    templates, scalers = random_factors(spec, side, n, seed=seed)
    weights = materialize(spec, side, templates, scalers)
    gene = learngene_from_weights(weights, spec, side, n)
    assert gene.counts == {k: n for k in templates}  # shared templates per role; Learngene checked every shape
    again = materialize(spec, side, gene.templates, gene.scalers)
    for key in weights:
        np.testing.assert_allclose(again[key], weights[key], rtol=1e-9, atol=1e-9, err_msg=key)
    assert max(gene.provenance["relative_error"].values()) < 1e-9


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 4))
def test_the_reported_error_is_the_reconstruction_error_of_any_weights(seed, n):
    spec = SOURCE.replace(depth=2, width=32, heads=2)
    weights = random_state(spec, seed)  # dense, far from Kronecker form
    gene = learngene_from_weights(weights, spec, 16, n)
    again = materialize(spec, 16, gene.templates, gene.scalers)
    w = np.concatenate([weights[f"blocks.{i}.attn.qkv.weight"] for i in range(2)])  # the stack of all layers
    a = np.concatenate([again[f"blocks.{i}.attn.qkv.weight"] for i in range(2)])
    error = np.linalg.norm(w - a) / np.linalg.norm(w)
    assert error == pytest.approx(gene.provenance["relative_error"]["attn.qkv.weight"], rel=1e-6)
    assert 0 < error < 1


def test_more_templates_never_fit_worse():
    spec = SOURCE.replace(depth=2, width=32, heads=2)
    weights = random_state(spec, 1)
    errors = [learngene_from_weights(weights, spec, 16, n).provenance["relative_error"]["mlp.fc1.weight"] for n in (1, 2, 4, 8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]
