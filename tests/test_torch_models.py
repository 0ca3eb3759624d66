"""The PyTorch models against the NumPy reference, in float64."""

import numpy as np
import pytest
import torch

from conftest import random_factors
from waveinit import ViTSpec, WaveError, state_dict_keys
from waveinit.backends import numpy as ref
from waveinit.backends.torch import TemplatedViT, ViT, load_state_dict


def rel_err(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("heads", [1, 4])
def test_plain_vit_matches_the_reference_forward(small_spec, heads):
    spec = small_spec.replace(heads=heads)
    torch.manual_seed(heads)
    model = ViT(spec).double()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    assert list(sd) == state_dict_keys(spec)  # timm's keys, in timm's order, nothing else
    images = np.random.default_rng(0).standard_normal((4, spec.channels, spec.image_size, spec.image_size))
    with torch.no_grad():
        ours = model(torch.from_numpy(images)).numpy()
    assert rel_err(ours, ref.forward(sd, spec, images)) < 1e-10


def test_templated_vit_matches_the_reference_forward(small_spec):
    templates, scalers = random_factors(small_spec, 8, 3, seed=5)
    model = TemplatedViT(small_spec, 8, 3).double()
    with torch.no_grad():
        for name, t in model.role_tensors()[0].items():
            t.copy_(torch.from_numpy(templates[name]))
        for name, s in model.role_tensors()[1].items():
            s.copy_(torch.from_numpy(scalers[name]))
    images = np.random.default_rng(1).standard_normal((3, 3, 4, 4))
    with torch.no_grad():
        ours = model(torch.from_numpy(images)).numpy()
    expected = ref.forward(ref.state_dict(small_spec, 8, templates, scalers), small_spec, images)
    assert rel_err(ours, expected) < 1e-10


def test_templated_vit_holds_only_templates_and_scalers(small_spec):
    model = TemplatedViT(small_spec, 8, 2)
    names = [n for n, _ in model.named_parameters()]
    assert all(n.startswith(("templates.", "scalers.")) for n in names)
    assert len(names) == 2 * 20
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == model.to_learngene().num_template_params() + model.to_learngene().num_scaler_params()


def test_gradients_reach_every_template_and_scaler(small_spec):
    torch.manual_seed(0)
    model = TemplatedViT(small_spec, 8, 2)
    model(torch.randn(2, 3, 4, 4)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_initialisation_follows_timm_statistics():
    spec = ViTSpec(depth=2, width=128, patch_size=2, image_size=8)
    model = TemplatedViT(spec, 64, 4, seed=0)
    sd = model.dense_state_dict()
    assert sd["blocks.0.attn.qkv.weight"].std().item() == pytest.approx(0.02, rel=0.2)
    assert sd["blocks.1.norm2.weight"].mean().item() == pytest.approx(1.0, abs=0.02)
    assert sd["blocks.1.norm2.weight"].std().item() > 0.005  # not identical entries
    assert abs(sd["head.bias"]).max().item() < 0.01
    torch.manual_seed(0)
    plain = ViT(spec).state_dict()
    assert torch.all(plain["blocks.0.norm1.weight"] == 1) and torch.all(plain["head.bias"] == 0)
    assert plain["blocks.0.mlp.fc1.weight"].std().item() == pytest.approx(0.02, rel=0.2)


def test_learngene_round_trip(small_spec):
    model = TemplatedViT(small_spec, 8, 3, seed=1)
    learngene = model.to_learngene({"data": "test"})
    back = TemplatedViT.from_learngene(learngene)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), back.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(model(x), back(x))


def test_factor_shapes_are_checked_when_the_model_is_built_not_every_forward(small_spec, monkeypatch):
    templates, scalers = random_factors(small_spec, 8, 2, dtype=np.float32)
    bad = {**templates, "head.weight": templates["head.weight"][:, :1]}
    with pytest.raises(WaveError, match="templates of head.weight have shape"):
        TemplatedViT.from_factors(small_spec, 8, bad, scalers)
    model = TemplatedViT.from_factors(small_spec, 8, templates, scalers)
    wrong = {**model.state_dict(), "templates.head_weight": torch.zeros(2, 5, 1)}
    with pytest.raises(RuntimeError, match="size mismatch"):  # PyTorch's own check: the only way a shape could change
        model.load_state_dict(wrong)

    def no_check(*args):
        raise AssertionError("a shape check ran in the forward pass")

    monkeypatch.setattr("waveinit.learngene.check_shapes", no_check)
    model(torch.randn(2, 3, 4, 4)).sum().backward()


def test_load_state_dict_copies_and_checks_shapes(small_spec):
    torch.manual_seed(0)
    source = ViT(small_spec)
    target = load_state_dict(ViT(small_spec), {k: v.numpy() for k, v in source.state_dict().items()})
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(source(x), target(x))
    bad = dict(source.state_dict())
    bad["head.bias"] = torch.zeros(3)
    with pytest.raises(WaveError, match="head.bias"):
        load_state_dict(ViT(small_spec), bad)
