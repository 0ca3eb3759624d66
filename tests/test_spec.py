"""The data model: scaler and template shapes for every role, and invalid specs."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waveinit import ROLES, ViTSpec, WaveError, scaler_shapes, template_shapes
from waveinit.spec import check_side, template_counts


def test_paper_table_for_vit_small():
    # docs/design.md's table (section 2): width 384, 64x64 templates.
    spec = ViTSpec(depth=12, width=384, patch_size=16, image_size=224, channels=3, num_classes=1000)
    assert spec.heads == 6 and spec.tokens == 197
    s, t = scaler_shapes(spec, 64, 4), template_shapes(spec, 64, 4)
    assert s["attn.qkv.weight"] == (12, 4, 18, 6)
    assert s["attn.proj.weight"] == (12, 4, 6, 6)
    assert s["mlp.fc1.weight"] == (12, 4, 24, 6)
    assert s["mlp.fc2.weight"] == (12, 4, 6, 24)
    assert all(t[name] == (4, 64, 64) for name in ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight"))
    assert s["norm1.weight"] == (12, 4, 6) and t["norm1.weight"] == (4, 64)
    assert s["pos_embed"] == (4, 1, 6) and t["pos_embed"] == (4, 197, 64)
    assert s["patch_embed.proj.weight"] == (4, 6, 1) and t["patch_embed.proj.weight"] == (4, 64, 768)
    assert s["head.weight"] == (4, 1, 6) and t["head.weight"] == (4, 1000, 64)
    assert s["head.bias"] == (4, 1) and t["head.bias"] == (4, 1000)


@given(
    depth=st.integers(1, 12),
    k=st.integers(1, 8),
    side=st.sampled_from([8, 16, 32, 64]),
    patch=st.sampled_from([1, 2, 4]),
    grid=st.integers(1, 4),
    channels=st.integers(1, 3),
    classes=st.integers(1, 20),
    n=st.integers(1, 5),
)
def test_scaler_times_template_is_the_parameter(depth, k, side, patch, grid, channels, classes, n):
    spec = ViTSpec(depth=depth, width=k * side, heads=k, patch_size=patch, image_size=patch * grid, channels=channels, num_classes=classes)
    scalers, templates = scaler_shapes(spec, side, n), template_shapes(spec, side, n)
    for role in ROLES:
        s = scalers[role.name][1:] if role.per_layer else scalers[role.name]
        t = templates[role.name]
        assert s[0] == t[0] == n
        assert scalers[role.name][0] == depth or not role.per_layer
        built = tuple(a * b for a, b in zip(s[1:], t[1:]))
        assert built == role.kron_shape(spec)
        numel = 1
        for d in role.param_shape(spec):
            numel *= d
        assert numel == (built[0] * (built[1] if len(built) == 2 else 1))
    # templates are independent of depth and width: only the scalers change with the size
    assert template_shapes(spec.replace(depth=depth + 1, width=2 * k * side, heads=k), side, n) == templates


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(depth=0, width=64), "depth"),
        (dict(depth=-1, width=64), "depth"),
        (dict(depth=2, width=0), "width"),
        (dict(depth=2.0, width=64), "integer"),
        (dict(depth="2", width=64), "integer"),
        (dict(depth=True, width=64), "integer"),
        (dict(depth=2, width=96), "multiple of 64"),  # default heads need width/64
        (dict(depth=2, width=64, heads=3), "heads 3 does not divide width 64"),
        (dict(depth=2, width=64, heads=0), "heads"),
        (dict(depth=2, width=64, patch_size=3, image_size=8), "patch size 3"),
        (dict(depth=2, width=64, channels=0), "channels"),
        (dict(depth=2, width=64, num_classes=0), "num_classes"),
        (dict(depth=2, width=64, mlp_ratio=1.5), "mlp_ratio"),
    ],
)
def test_invalid_specs_raise_wave_error(kwargs, fragment):
    with pytest.raises(WaveError, match=fragment):
        ViTSpec(**kwargs)


def test_width_not_a_multiple_of_the_side_is_an_error_with_the_valid_choices():
    spec = ViTSpec(depth=2, width=96, heads=2)
    with pytest.raises(WaveError, match=r"width 96 is not a multiple of the template side 64: choose a width from 64, 128"):
        scaler_shapes(spec, 64, 4)
    with pytest.raises(WaveError):
        check_side(spec, 0)
    assert scaler_shapes(spec, 32, 4)["attn.proj.weight"] == (2, 4, 3, 3)


def test_template_counts():
    assert set(template_counts(3).values()) == {3}
    counts = {r.name: 2 for r in ROLES} | {"mlp.fc1.weight": 5}
    assert scaler_shapes(ViTSpec(depth=1, width=64), 64, counts)["mlp.fc1.weight"] == (1, 5, 4, 1)
    with pytest.raises(WaveError, match="unknown role"):
        template_counts({"qkv": 2})
    with pytest.raises(WaveError, match="missing"):
        template_counts({"attn.qkv.weight": 2})
    with pytest.raises(WaveError):
        template_counts(0)


def test_spec_round_trips_through_a_dict():
    spec = ViTSpec(depth=3, width=128, patch_size=7, image_size=28, channels=1, num_classes=10)
    assert ViTSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(WaveError, match="unknown model spec field"):
        ViTSpec.from_dict({**spec.to_dict(), "dropout": 0.1})


def test_num_params_of_vit_tiny():
    # timm's vit_tiny_patch16_224: 5,717,416 parameters.
    spec = ViTSpec(depth=12, width=192, heads=3, patch_size=16, image_size=224, channels=3, num_classes=1000)
    assert spec.num_params() == 5_717_416


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 6), width=st.sampled_from([64, 96, 128, 192, 256]), heads=st.integers(1, 8), dist=st.booleans())
def test_parameter_counts_do_not_depend_on_heads(depth, width, heads, dist):
    like = ViTSpec(depth=1, width=64, dist_token=dist, head_dist=dist)
    if width % heads:
        heads = 1
    assert like.replace(depth=depth, width=width, heads=heads).num_params() == like.params_at(depth, width)
