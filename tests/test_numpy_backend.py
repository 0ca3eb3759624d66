"""The NumPy reference: `materialize` against the np.kron loop, and the forward pass against
an independent composition of torch.nn.functional operations."""

import array_api_strict
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import random_factors
from waveinit import ViTSpec, WaveError, materialize, state_dict_keys
from waveinit.backends import numpy as ref


def test_materialize_equals_the_np_kron_reference(small_spec):
    templates, scalers = random_factors(small_spec, 8, 3)
    fast = materialize(small_spec, 8, templates, scalers)
    slow = ref.state_dict(small_spec, 8, templates, scalers)
    assert list(fast) == list(slow) == state_dict_keys(small_spec)
    for key in slow:
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_state_dict_has_timm_keys_and_shapes(small_spec):
    templates, scalers = random_factors(small_spec, 8, 2)
    sd = ref.state_dict(small_spec, 8, templates, scalers)
    w, t = small_spec.width, small_spec.tokens
    assert sd["patch_embed.proj.weight"].shape == (w, 3, 2, 2)
    assert sd["pos_embed"].shape == (1, t, w) and sd["cls_token"].shape == (1, 1, w)
    assert sd["blocks.1.attn.qkv.weight"].shape == (3 * w, w)
    assert sd["blocks.0.mlp.fc2.weight"].shape == (w, 4 * w)
    assert sd["head.weight"].shape == (5, w) and sd["head.bias"].shape == (5,)
    assert len(sd) == 4 + 12 * small_spec.depth + 4
    assert small_spec.num_params() == sum(v.size for v in sd.values())


def test_materialize_on_array_api_strict(small_spec):
    templates, scalers = random_factors(small_spec, 8, 2)
    strict = materialize(
        small_spec,
        8,
        {k: array_api_strict.asarray(v) for k, v in templates.items()},
        {k: array_api_strict.asarray(v) for k, v in scalers.items()},
    )
    expected = ref.state_dict(small_spec, 8, templates, scalers)
    for key in expected:
        np.testing.assert_allclose(np.asarray(strict[key]), expected[key], rtol=1e-12)


def test_materialize_rejects_wrong_shapes(small_spec):
    templates, scalers = random_factors(small_spec, 8, 2)
    with pytest.raises(WaveError, match="scalers of attn.qkv.weight"):
        materialize(small_spec, 8, templates, {**scalers, "attn.qkv.weight": scalers["attn.qkv.weight"][:1]})
    with pytest.raises(WaveError, match="missing"):
        materialize(small_spec, 8, {k: v for k, v in templates.items() if k != "pos_embed"}, scalers)
    with pytest.raises(WaveError, match="multiple of the template side"):
        materialize(small_spec, 32, templates, scalers)


def functional_vit(sd: dict, spec: ViTSpec, images: torch.Tensor) -> torch.Tensor:
    """The same ViT from torch.nn.functional building blocks, written independently."""
    sd = {k: torch.from_numpy(v) for k, v in sd.items()}
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=spec.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embed"]
    for i in range(spec.depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (spec.width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).chunk(3, dim=-1)
        split = lambda t: t.unflatten(-1, (spec.heads, spec.head_dim)).transpose(1, 2)  # noqa: E731
        a = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)
        x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (spec.width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    x = F.layer_norm(x, (spec.width,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return F.linear(x[:, 0], sd["head.weight"], sd["head.bias"])


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_forward_matches_an_independent_torch_composition(small_spec, heads):
    spec = small_spec.replace(heads=heads)
    templates, scalers = random_factors(spec, 8, 2, seed=heads)
    sd = ref.state_dict(spec, 8, templates, scalers)
    images = np.random.default_rng(0).standard_normal((3, 3, 4, 4))
    ours = ref.forward(sd, spec, images)
    theirs = functional_vit(sd, spec, torch.from_numpy(images)).numpy()
    assert ours.shape == (3, 5)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_forward_is_per_sample():
    # Each image's logits depend on that image alone (no batch mixing).
    spec = ViTSpec(depth=1, width=8, heads=2, patch_size=2, image_size=4, channels=1, num_classes=3)
    templates, scalers = random_factors(spec, 4, 2)
    sd = ref.state_dict(spec, 4, templates, scalers)
    images = np.random.default_rng(1).standard_normal((4, 1, 4, 4))
    together = ref.forward(sd, spec, images)
    alone = np.concatenate([ref.forward(sd, spec, images[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(together, alone, rtol=1e-12)


@pytest.mark.parametrize("order", ["st", "ts"])
def test_the_reference_takes_either_order_and_materialize_agrees(small_spec, order):
    # The oracle of the shipped learngene's order ("ts") too: a loop over np.kron(T, S).
    templates, scalers = random_factors(small_spec, 8, 3)
    slow = ref.state_dict(small_spec, 8, templates, scalers, order)
    fast = materialize(small_spec, 8, templates, scalers, order)
    qkv = scalers["attn.qkv.weight"][0]  # layer 0: (N, a, b)
    pairs = zip(qkv, templates["attn.qkv.weight"]) if order == "st" else zip(templates["attn.qkv.weight"], qkv)
    np.testing.assert_allclose(slow["blocks.0.attn.qkv.weight"], sum(np.kron(x, y) for x, y in pairs), rtol=1e-12, atol=1e-12)
    for key in slow:
        np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("order", ["st", "ts"])
def test_learngene_from_weights_recovers_kronecker_sums_of_either_order(small_spec, order):
    from waveinit import learngene_from_weights

    templates, scalers = random_factors(small_spec, 8, 2)
    weights = ref.state_dict(small_spec, 8, templates, scalers, order)
    gene = learngene_from_weights(weights, small_spec, 8, 2, order)
    assert gene.order == order and max(gene.provenance["relative_error"].values()) < 1e-7
    rebuilt = ref.state_dict(small_spec, 8, gene.templates, gene.scalers, order)
    for key in weights:
        np.testing.assert_allclose(rebuilt[key], weights[key], rtol=1e-7, atol=1e-8, err_msg=key)
