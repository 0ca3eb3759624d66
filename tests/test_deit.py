"""DeiT checkpoints as users have them: transformers' DeiTForImageClassification[WithTeacher]
folders and timm-keyed distilled DeiT state dicts (`dist_token`, `head_dist`) load with the
original logits; as teachers they distil into plain learngenes.

What happens to the distillation token and the second head: they are kept. The token takes
part in attention as in DeiT; `head_dist`, where there is one, is averaged with `head` (DeiT's
inference, and transformers' WithTeacher logits); transformers' DeiTForImageClassification
reads the class token only. Templates describe plain ViTs: a learngene distilled from a DeiT
has no distillation token (its auxiliary model is the teacher's plain() spec).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers  # a test dependency: a missing one fails, never skips
from safetensors.numpy import save_file

from helpers import wave
from waveinit import WaveError, load_learngene, load_model, template_shapes
from waveinit.backends import numpy as ref
from waveinit.io.hf import load_hf, save_hf
from waveinit.keys import state_dict_keys
from waveinit.selection import weight_selection
from waveinit.spec import ViTSpec
from waveinit.tasks import load_vit


def relative_difference(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / a.abs().max())


def deit(cls_name: str, eps: float = 1e-12, seed: int = 0):
    """A small transformers DeiT (digits-shaped: 8x8 grey, 10 classes) with perturbed random weights."""
    config = transformers.DeiTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                     image_size=8, patch_size=2, num_channels=1, num_labels=10, layer_norm_eps=eps)
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("cls_name, head_dist", [("DeiTForImageClassification", False), ("DeiTForImageClassificationWithTeacher", True)])
def test_transformers_deit_folders_load_with_their_logits_and_export_back(tmp_path, cls_name, head_dist):
    theirs = deit(cls_name)
    theirs.save_pretrained(tmp_path / "hf")
    ours, _ = load_vit(tmp_path / "hf")
    assert ours.spec.dist_token and ours.spec.head_dist == head_dist and ours.spec.layer_norm_eps == 1e-12
    assert ours.spec.tokens == 16 + 2
    images = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        expected = theirs(pixel_values=images).logits
        assert relative_difference(expected, ours.eval()(images)) < 1e-5
    state = load_model(tmp_path / "hf").state_dict
    assert relative_difference(expected, ref.forward(state, ours.spec, images.numpy())) < 1e-5

    save_hf(tmp_path / "back", state, ours.spec)
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["model_type"] == "deit" and config["architectures"] == [cls_name]
    again = getattr(transformers, cls_name).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert relative_difference(expected, again(pixel_values=images).logits) < 1e-6
    back, spec = load_hf(tmp_path / "back")
    assert spec == ours.spec and all(np.array_equal(back[k], state[k]) for k in state)


def timm_names(hf_state: dict, depth: int) -> dict:
    """A transformers DeiTForImageClassificationWithTeacher state dict under timm's names, written
    out here (not through waveinit) so that the test does not check the loader against itself."""
    t = {k: v.detach().numpy() for k, v in hf_state.items()}
    out = {
        "cls_token": t["deit.embeddings.cls_token"],
        "dist_token": t["deit.embeddings.distillation_token"],
        "pos_embed": t["deit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": t["deit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": t["deit.embeddings.patch_embeddings.projection.bias"],
    }
    for i in range(depth):
        h, b = f"deit.encoder.layer.{i}.", f"blocks.{i}."
        if f"{h}layernorm_before.weight" not in t:  # transformers 5's in-memory names
            h = f"deit.layers.{i}."
            names = {"norm1": "layernorm_before", "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
                     "proj": "attention.o_proj", "norm2": "layernorm_after", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        else:
            names = {"norm1": "layernorm_before", "q": "attention.attention.query", "k": "attention.attention.key",
                     "v": "attention.attention.value", "proj": "attention.output.dense", "norm2": "layernorm_after",
                     "fc1": "intermediate.dense", "fc2": "output.dense"}
        for p in ("weight", "bias"):
            out[f"{b}norm1.{p}"] = t[f"{h}{names['norm1']}.{p}"]
            out[f"{b}attn.qkv.{p}"] = np.concatenate([t[f"{h}{names[x]}.{p}"] for x in "qkv"])
            out[f"{b}attn.proj.{p}"] = t[f"{h}{names['proj']}.{p}"]
            out[f"{b}norm2.{p}"] = t[f"{h}{names['norm2']}.{p}"]
            out[f"{b}mlp.fc1.{p}"] = t[f"{h}{names['fc1']}.{p}"]
            out[f"{b}mlp.fc2.{p}"] = t[f"{h}{names['fc2']}.{p}"]
    for p in ("weight", "bias"):
        out[f"norm.{p}"] = t[f"deit.layernorm.{p}"]
        out[f"head.{p}"] = t[f"cls_classifier.{p}"]
        out[f"head_dist.{p}"] = t[f"distillation_classifier.{p}"]
    return out


def test_a_timm_distilled_deit_state_dict_loads_with_the_original_logits(tmp_path):
    theirs = deit("DeiTForImageClassificationWithTeacher", eps=1e-6)  # timm's eps, which a state dict does not store
    path = tmp_path / "deit_distilled.safetensors"
    save_file(timm_names(theirs.state_dict(), 2), str(path), metadata={"format": "pt"})
    ours, provenance = load_vit(path, heads=2)
    assert ours.spec == ViTSpec(depth=2, width=64, heads=2, patch_size=2, image_size=8, channels=1, num_classes=10,
                                dist_token=True, head_dist=True)
    images = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert relative_difference(theirs(pixel_values=images).logits, ours.eval()(images)) < 1e-5


def test_deit_tiny_distilled_has_timms_key_names_and_shapes():
    """timm's deit_tiny_distilled_patch16_224: the names and shapes of its state dict, in order."""
    spec = ViTSpec(depth=12, width=192, heads=3, patch_size=16, image_size=224, channels=3, num_classes=1000,
                   dist_token=True, head_dist=True)
    keys = state_dict_keys(spec)
    assert keys[:5] == ["cls_token", "pos_embed", "dist_token", "patch_embed.proj.weight", "patch_embed.proj.bias"]  # as timm 1.0 lists them
    assert keys[-6:] == ["norm.weight", "norm.bias", "head.weight", "head.bias", "head_dist.weight", "head_dist.bias"]
    assert len(keys) == 5 + 12 * 12 + 6
    from waveinit.keys import split_key
    from waveinit.spec import ROLES_BY_NAME

    shapes = {k: ROLES_BY_NAME[split_key(k)[0]].param_shape(spec) for k in keys}
    assert shapes["dist_token"] == (1, 1, 192) and shapes["pos_embed"] == (1, 198, 192)
    assert shapes["head_dist.weight"] == (1000, 192) and shapes["blocks.11.attn.qkv.weight"] == (576, 192)
    assert spec.num_params() == 5_910_800  # timm's count for deit_tiny_distilled_patch16_224


def test_templates_describe_plain_vits_only():
    spec = ViTSpec(depth=2, width=64, dist_token=True)
    with pytest.raises(WaveError, match="distillation token: use its plain\\(\\) spec"):
        template_shapes(spec, 64, 2)
    assert template_shapes(spec.plain(), 64, 2)["pos_embed"] == (2, 17, 64)
    with pytest.raises(WaveError, match="head_dist needs dist_token"):
        ViTSpec(depth=2, width=64, head_dist=True)


def test_weight_selection_keeps_the_distillation_token_and_head():
    source = ViTSpec(depth=4, width=128, dist_token=True, head_dist=True)
    target = source.replace(depth=2, width=64)
    rng = np.random.default_rng(0)
    from waveinit.keys import split_key
    from waveinit.spec import ROLES_BY_NAME

    state = {k: rng.standard_normal(ROLES_BY_NAME[split_key(k)[0]].param_shape(source)) for k in state_dict_keys(source)}
    small = weight_selection(state, source, target)
    assert list(small) == state_dict_keys(target)
    np.testing.assert_array_equal(small["dist_token"], state["dist_token"][..., ::2])
    np.testing.assert_array_equal(small["head_dist.weight"], state["head_dist.weight"][:, ::2])
    with pytest.raises(WaveError, match="distillation token"):
        weight_selection(state, source, source.plain().replace(depth=2, width=64))


@pytest.mark.slow
def test_a_deit_teacher_distils_into_a_plain_learngene(tmp_path):
    deit("DeiTForImageClassificationWithTeacher").save_pretrained(tmp_path / "deit")
    out = tmp_path / "lg.safetensors"
    result = wave("distill", "--teacher", tmp_path / "deit", "--templates", "2", "--epochs", "1", "--subset", "300", "--out", out,
                  "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gene = load_learngene(out)
    assert not gene.spec.dist_token and gene.spec.tokens == 17
    assert gene.provenance["teacher_spec"]["dist_token"] and gene.provenance["teacher_spec"]["head_dist"]
    spawned = wave("spawn", "--learngene", out, "--depth", "2", "--width", "64", "--fit-steps", "5", "--fit-samples", "100",
                   "--teacher", tmp_path / "deit", "--out", tmp_path / "vit.safetensors", "--json", cwd=tmp_path)
    assert spawned.returncode == 0, spawned.stderr
    assert json.loads(spawned.stdout)["teacher"] == str(tmp_path / "deit")


def test_half_a_deit_and_odd_flags_are_one_line_errors(tmp_path):
    with pytest.raises(WaveError, match="dist_token must be true or false"):
        ViTSpec(depth=2, width=64, dist_token=None)
    theirs = deit("DeiTForImageClassificationWithTeacher", eps=1e-6)
    state = timm_names(theirs.state_dict(), 2)
    del state["head_dist.weight"]
    save_file(state, str(tmp_path / "half.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WaveError, match="dist_token, head_dist.weight and head_dist.bias together") as e:
        load_model(tmp_path / "half.safetensors")
    assert "\n" not in str(e.value) and "half.safetensors" in str(e.value)


def test_export_names_the_class_that_loads_it_and_the_bench_refuses_a_deit_ancestry(tmp_path):
    from waveinit import save_model
    from waveinit.bench.config import QUICK
    from waveinit.bench.family import planned_family
    from waveinit.io.datasets import load_dataset

    theirs = deit("DeiTForImageClassificationWithTeacher")
    theirs.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    save_model(tmp_path / "deit.safetensors", model.state_dict, model.spec)
    exported = wave("export", tmp_path / "deit.safetensors", "--out", tmp_path / "out", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "transformers.DeiTForImageClassificationWithTeacher.from_pretrained" in exported.stderr
    with pytest.raises(WaveError, match="has DeiT's distillation token: give a plain ViT as --ancestry"):
        planned_family(QUICK, load_dataset("digits"), tmp_path / "bench", tmp_path / "deit.safetensors", None)
