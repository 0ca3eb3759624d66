"""TLEG (Xia et al., AAAI 2024), WAVE's peer method: the linear expansion against an explicit
NumPy reference, on other array libraries, the PyTorch auxiliary model, the file format, the
width rule, and `distill_tleg` on digits (runs, writes its files, resumes bit-identically)."""

import array_api_strict
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import add_tensor
from waveinit import ViTSpec, WaveError, state_dict_keys
from waveinit.backends.torch import TLEGViT, ViT, load_state_dict
from waveinit.configs import DistillConfig, TrainConfig
from waveinit.io.files import load_learngene, load_model, load_tleg, save_model, save_tleg
from waveinit.io.inspect import describe
from waveinit.io.metrics import metrics_path
from waveinit.io.storage import write_safetensors
from waveinit.keys import check_state_dict
from waveinit.spec import ROLES_BY_NAME
from waveinit.tleg import BLOCK_ROLES, SHARED_ROLES, TLEGGene, check_target, coefficient, expand

SPEC = ViTSpec(depth=3, width=8, heads=2, patch_size=2, image_size=4, channels=3, num_classes=5)


def random_parts(spec: ViTSpec, seed: int = 0, dtype=np.float64):
    """Random (A, B, shared) of the shapes a TLEG learngene of `spec` holds."""
    rng = np.random.default_rng(seed)
    draw = lambda name: rng.standard_normal(ROLES_BY_NAME[name].param_shape(spec)).astype(dtype)  # noqa: E731
    return ({r: draw(r) for r in BLOCK_ROLES}, {r: draw(r) for r in BLOCK_ROLES}, {k: draw(k) for k in SHARED_ROLES})


def reference_expand(a, b, shared, depth: int) -> dict[str, np.ndarray]:
    """The paper's rule written out: block l is A + l / (L - 1) * B (L = 1: A), the rest shared."""
    state = dict(shared)
    for layer in range(depth):
        c = layer / (depth - 1) if depth > 1 else 0.0
        for role in BLOCK_ROLES:
            state[f"blocks.{layer}.{role}"] = a[role] + c * b[role]
    return state


# --- the expansion -----------------------------------------------------------------------------


def test_coefficient_runs_from_zero_to_one():
    assert coefficient(0, 1) == 0.0
    assert [coefficient(layer, 5) for layer in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for layer, depth in ((5, 5), (-1, 3), (0, 0)):
        with pytest.raises(WaveError):
            coefficient(layer, depth)


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_expand_matches_the_numpy_reference(depth, seed):
    a, b, shared = random_parts(SPEC, seed)
    got = expand(a, b, shared, SPEC, depth)
    want = reference_expand(a, b, shared, depth)
    target = SPEC.replace(depth=depth)
    assert list(got) == state_dict_keys(target)  # timm's keys, in timm's order
    check_state_dict("expanded", got, target)
    for key in got:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-15, atol=0)
    np.testing.assert_array_equal(got["blocks.0.attn.qkv.weight"], a["attn.qkv.weight"])  # the first block is A
    if depth > 1:  # ... and the last A + B, at every depth
        np.testing.assert_allclose(got[f"blocks.{depth - 1}.mlp.fc2.weight"], a["mlp.fc2.weight"] + b["mlp.fc2.weight"], rtol=1e-15)


@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_expand_runs_on_other_array_libraries(library):
    to = {"torch": torch.from_numpy, "array_api_strict": array_api_strict.asarray}[library]
    a, b, shared = random_parts(SPEC, 1)
    want = expand(a, b, shared, SPEC, 4)
    got = expand(*({k: to(v) for k, v in part.items()} for part in (a, b, shared)), SPEC, 4)
    for key in want:
        assert type(got[key]) is type(to(want[key]))
        np.testing.assert_allclose(np.asarray(got[key]), want[key], rtol=1e-15)


def test_expand_refuses_wrong_parts():
    a, b, shared = random_parts(SPEC)
    with pytest.raises(WaveError, match="TLEG B must hold exactly"):
        expand(a, {k: v for k, v in b.items() if k != "norm1.bias"}, shared, SPEC, 2)
    with pytest.raises(WaveError, match=r"TLEG A attn.proj.weight has shape \(8, 9\)"):
        expand({**a, "attn.proj.weight": np.zeros((8, 9))}, b, shared, SPEC, 2)
    with pytest.raises(WaveError, match="depth must be at least 1"):
        expand(a, b, shared, SPEC, 0)


def test_any_depth_but_only_the_learngene_width():
    gene = TLEGGene(*random_parts(SPEC), SPEC)
    assert gene.num_params() == 2 * sum(np.prod(ROLES_BY_NAME[r].param_shape(SPEC)) for r in BLOCK_ROLES) + sum(
        np.prod(ROLES_BY_NAME[k].param_shape(SPEC)) for k in SHARED_ROLES)
    assert gene.nbytes() == 8 * gene.num_params()
    deeper = SPEC.replace(depth=7)
    check_state_dict("initialised", gene.initialise(deeper), deeper)
    with pytest.raises(WaveError, match="TLEG cannot change width: its learngene has width 8, the target 16") as e:
        gene.initialise(SPEC.replace(width=16, heads=2))
    assert "\n" not in str(e.value)
    with pytest.raises(WaveError, match="TLEG cannot change num classes"):
        check_target(SPEC, SPEC.replace(num_classes=3))
    with pytest.raises(WaveError, match="TLEG cannot change heads"):
        check_target(SPEC, SPEC.replace(heads=4))


# --- the PyTorch auxiliary model ---------------------------------------------------------------


@pytest.fixture
def trained_like(one_thread) -> TLEGViT:
    """A TLEGViT holding random A, B and shared parameters (B non-zero, unlike a fresh one)."""
    return TLEGViT.from_gene(TLEGGene(*random_parts(SPEC, 2, np.float32), SPEC))


def test_fresh_model_is_timm_block_zero_and_zero_b(one_thread):
    state = torch.random.get_rng_state()
    model = TLEGViT(SPEC, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    torch.manual_seed(3)
    vit = ViT(SPEC).state_dict()
    a, b, shared = model.parts()
    assert all(torch.equal(a[r], vit[f"blocks.0.{r}"]) for r in BLOCK_ROLES)
    assert all(torch.count_nonzero(b[r]) == 0 for r in BLOCK_ROLES)
    assert all(torch.equal(shared[k], vit[k]) for k in SHARED_ROLES)
    assert all(torch.equal(p, q) for p, q in zip(TLEGViT(SPEC, seed=3).parameters(), model.parameters()))


def test_gene_expansion_is_the_model_dense_state_dict(trained_like):
    dense = trained_like.dense_state_dict()
    expanded = trained_like.to_gene().expand()
    assert list(dense) == list(expanded) == state_dict_keys(SPEC)
    for key in dense:
        np.testing.assert_array_equal(dense[key].detach().numpy(), expanded[key])
    assert set(trained_like.dense_state_dict(depth=5)) == set(state_dict_keys(SPEC.replace(depth=5)))


def test_forward_is_a_plain_vit_with_the_expanded_weights(trained_like):
    images = torch.randn(4, SPEC.channels, SPEC.image_size, SPEC.image_size, generator=torch.Generator().manual_seed(0))
    gene = trained_like.to_gene()
    vit = load_state_dict(ViT(SPEC), gene.expand()).eval()
    with torch.no_grad():
        torch.testing.assert_close(trained_like(images), vit(images), rtol=1e-5, atol=1e-6)


def test_gradients_reach_a_b_and_shared(one_thread):
    model = TLEGViT(SPEC, seed=0)  # B = 0: every block starts as A, and B must still learn
    images = torch.randn(4, SPEC.channels, SPEC.image_size, SPEC.image_size, generator=torch.Generator().manual_seed(1))
    model(images).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.count_nonzero(model.b["mlp_fc2_weight"].grad) > 0


def test_parts_are_checked_when_the_model_is_built_not_every_forward(trained_like, monkeypatch):
    def no_check(*args):
        raise AssertionError("a parts check ran in the forward pass")

    monkeypatch.setattr("waveinit.tleg.check_parts", no_check)
    images = torch.randn(2, SPEC.channels, SPEC.image_size, SPEC.image_size, generator=torch.Generator().manual_seed(0))
    trained_like(images).sum().backward()
    assert set(trained_like.dense_state_dict(depth=5)) == set(state_dict_keys(SPEC.replace(depth=5)))


# --- files -------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, trained_like):
    gene = trained_like.to_gene({"teacher": "ancestry.safetensors", "test_accuracy": 0.5})
    path = tmp_path / "tleg.safetensors"
    save_tleg(path, gene)
    back = load_tleg(path)
    assert back.spec == gene.spec and back.provenance == gene.provenance
    for mine, theirs in ((gene.a, back.a), (gene.b, back.b), (gene.shared, back.shared)):
        assert set(mine) == set(theirs) and all(np.array_equal(mine[k], theirs[k]) for k in mine)
    info = describe(path)
    assert info["kind"] == "tleg" and info["format"] == "waveinit.tleg" and info["parameters"] == gene.num_params()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_wrong_files_are_one_line_errors(tmp_path, trained_like):
    model = tmp_path / "model.safetensors"
    save_model(model, {k: v.detach().numpy() for k, v in trained_like.dense_state_dict().items()}, SPEC)
    plain = tmp_path / "plain.safetensors"
    write_safetensors(plain, {"x": np.zeros(3, np.float32)}, {"format": "pt"})
    tleg = tmp_path / "tleg.safetensors"
    save_tleg(tleg, trained_like.to_gene())
    for path, call, message in (
        (model, load_tleg, "is a waveinit.model file, expected a TLEG learngene"),
        (plain, load_tleg, "is a safetensors file without a waveinit header, expected a TLEG learngene"),
        (tmp_path / "missing.safetensors", load_tleg, "no such file"),
        (tleg, load_learngene, "is a waveinit.tleg file, expected a learngene"),
        (tleg, load_model, "is a waveinit.tleg file, expected a model file"),
    ):
        with pytest.raises(WaveError, match=message) as e:
            call(path)
        assert "\n" not in str(e.value)


def test_a_tleg_file_with_a_tensor_it_should_not_hold_is_refused_by_name(tmp_path, trained_like):
    path = tmp_path / "tleg.safetensors"
    save_tleg(path, trained_like.to_gene())
    add_tensor(path, "c.norm1.weight", np.ones(SPEC.width, np.float32))  # a third parameter set TLEG does not have
    with pytest.raises(WaveError) as e:
        load_tleg(path)
    assert str(e.value) == (f"{path}: unexpected tensor 'c.norm1.weight' (not part of a 3x8 ViT's TLEG learngene): "
                            f"the file was written by another tool or damaged; distil it again")


# --- distillation ------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def _stop_after_first_epoch(progress):
    if progress.event == "epoch" and progress.epoch == 0:
        raise _Stop


def test_distill_tleg_runs_writes_and_resumes(tmp_path, one_thread):
    from waveinit.bench.records import training_compute
    from waveinit.io.datasets import load_dataset
    from waveinit.tasks import distill_tleg, random_vit, spec_for

    data = load_dataset("digits", subset=400)
    teacher = random_vit(spec_for(data, 2, 32, heads=1, patch=2).replace(dist_token=True), 0)  # the auxiliary drops DeiT's token
    config = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=1)
    kd = DistillConfig(temperature=2.0)

    out = tmp_path / "whole" / "tleg.safetensors"
    result = distill_tleg(teacher, data, config, kd, out=out, device="cpu", provenance={"teacher": "ancestry"})
    gene = load_tleg(out)
    assert gene.spec == teacher.spec.plain() and gene.provenance["method"] == "tleg"
    assert gene.provenance["teacher"] == "ancestry" and gene.provenance["distill"]["temperature"] == 2.0
    assert training_compute(gene.provenance) == 2 * len(data.train_labels)
    assert gene.provenance["test_accuracy"] == result.train.history[-1]["eval"]["accuracy"]
    assert len(metrics_path(out).read_text().splitlines()) == 3  # the header and one row per epoch
    assert np.abs(gene.b["attn.qkv.weight"]).max() > 0  # B learned

    assert not out.with_name(out.name + ".ckpt").exists()  # a finished run deletes its checkpoint

    split = tmp_path / "split" / "tleg.safetensors"
    with pytest.raises(_Stop):
        distill_tleg(teacher, data, config, kd, out=split, device="cpu", on_progress=_stop_after_first_epoch)
    assert not split.exists() and split.with_name(split.name + ".ckpt").exists()
    with pytest.raises(WaveError, match="other settings"):  # another distillation setting is refused
        distill_tleg(teacher, data, config, DistillConfig(temperature=3.0), out=split, device="cpu", resume=True)
    resumed = distill_tleg(teacher, data, config, kd, out=split, device="cpu", resume=True)
    assert resumed.train.resumed_from == result.train.steps // 2
    back = load_tleg(split)
    for mine, theirs in ((gene.a, back.a), (gene.b, back.b), (gene.shared, back.shared)):
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine)  # bit-identical to the uninterrupted run
    assert len(metrics_path(split).read_text().splitlines()) == 3
