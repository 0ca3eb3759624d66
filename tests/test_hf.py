"""Hugging Face interoperability: an exported folder is a `transformers.ViTForImageClassification`
computing exactly what our ViT computes, a model made by transformers loads as an ancestry, the
round trip is lossless, and what we cannot represent is refused in one line."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from waveinit import ViTSpec, WaveError, load_model
from waveinit.backends.torch import ViT
from waveinit.io.hf import from_hf, load_hf, load_hf_model, save_hf, to_hf
from waveinit.tasks import load_vit

SPECS = {
    "digits-like, 1 head": ViTSpec(depth=2, width=64, heads=1, patch_size=2, image_size=8, channels=1, num_classes=10),
    "rgb, 4 heads": ViTSpec(depth=2, width=64, heads=4, patch_size=4, image_size=16, channels=3, num_classes=7),
}


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def random_vit(spec: ViTSpec, seed: int = 0) -> ViT:
    """A ViT whose every parameter is random: timm's init leaves biases at 0 and LayerNorm
    weights at 1, under which a swapped weight and bias would go unnoticed."""
    torch.manual_seed(seed)
    model = ViT(spec).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def numpy_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("rgb", [True, False], ids=["grey as rgb", "channels kept"])
@pytest.mark.parametrize("name", SPECS)
def test_exported_folder_is_the_same_model_in_transformers(name, rgb, tmp_path, transformers):
    spec = SPECS[name]
    ours = random_vit(spec)
    save_hf(tmp_path / "hf", numpy_state(ours), spec, rgb=rgb)
    theirs = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert theirs.dtype == torch.float32 and theirs.config.layer_norm_eps == 1e-6
    assert theirs.config.num_labels == spec.num_classes and theirs.config.num_attention_heads == spec.heads
    images = torch.randn(6, spec.channels, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(1))
    as_rgb = rgb and spec.channels == 1  # a grey model exported for RGB clients: the grey image in every channel
    assert theirs.config.num_channels == (3 if as_rgb else spec.channels)
    with torch.no_grad():
        assert relative_difference(ours(images), theirs(pixel_values=images.expand(-1, 3, -1, -1) if as_rgb else images).logits) < 1e-5
    back = load_hf_model(tmp_path / "hf")  # our reader gives the grey model back
    assert back.spec == spec and "grey_as_rgb" not in back.provenance
    np.testing.assert_allclose(back.state_dict["patch_embed.proj.weight"], numpy_state(ours)["patch_embed.proj.weight"], rtol=1e-6, atol=1e-7)


def test_config_says_what_our_vit_computes():
    spec = SPECS["rgb, 4 heads"]
    _, config = to_hf(numpy_state(random_vit(spec)), spec)
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"], config["intermediate_size"]) == (64, 2, 4, 256)
    assert (config["image_size"], config["patch_size"], config["num_channels"]) == (16, 4, 3)
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-6 and config["qkv_bias"] is True
    assert config["hidden_dropout_prob"] == 0 and config["attention_probs_dropout_prob"] == 0
    assert len(config["id2label"]) == 7 and config["label2id"]["LABEL_3"] == 3


@pytest.mark.parametrize("name", SPECS)
def test_round_trip_ours_hf_ours_is_exact(name, tmp_path):
    spec = SPECS[name]
    state = numpy_state(random_vit(spec))
    hf_state, config = to_hf(state, spec)
    w = spec.width
    # qkv is [query; key; value] along the output axis
    assert np.array_equal(hf_state["vit.encoder.layer.1.attention.attention.key.weight"], state["blocks.1.attn.qkv.weight"][w:2 * w])
    back, back_spec = from_hf(hf_state, config)
    assert back_spec == spec and list(back) == list(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)

    save_hf(tmp_path / "hf", state, spec, provenance={"data": "digits"})
    loaded, loaded_spec = load_hf(tmp_path / "hf")
    assert loaded_spec == spec and all(np.array_equal(loaded[k], state[k]) for k in state)
    model = load_model(tmp_path / "hf")  # the one loader every command uses
    assert model.spec == spec and model.provenance == {"data": "digits"}


def test_a_model_made_by_transformers_is_an_ancestry(tmp_path, transformers):
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                    image_size=8, patch_size=2, num_channels=1, num_labels=10, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    theirs = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.2 * torch.randn_like(p))
    theirs.save_pretrained(tmp_path / "hf")
    ours, provenance = load_vit(tmp_path / "hf")
    assert ours.spec == ViTSpec(depth=2, width=64, heads=2, patch_size=2, image_size=8, channels=1, num_classes=10)
    assert provenance == {"source": str(tmp_path / "hf")}
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert relative_difference(theirs(pixel_values=images).logits, ours.eval()(images)) < 1e-5

    # transformers 5 names its modules differently in memory (q_proj, o_proj, mlp.fc1, vit.layers):
    # a state dict saved straight from the module loads the same.
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    save_file({k: v.numpy() for k, v in theirs.state_dict().items()}, str(tmp_path / "raw" / "model.safetensors"), metadata={"format": "pt"})
    raw, _ = load_hf(tmp_path / "raw")
    assert all(np.array_equal(raw[k], v.detach().numpy()) for k, v in ours.state_dict().items())


def exported(tmp_path, spec=SPECS["digits-like, 1 head"]):
    folder = tmp_path / "hf"
    save_hf(folder, numpy_state(random_vit(spec)), spec)
    return folder


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_pickled_weights_are_refused_never_loaded(tmp_path):
    folder = exported(tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(WaveError, match="pytorch_model.bin.*never loads.*safe_serialization"):
        load_model(folder)


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "swin"}, "'swin' model, not a ViT or DeiT"),
    ({"model_type": "deit"}, "lacks tensor deit.embeddings.cls_token that a 2-layer DeiTForImageClassification has"),
    ({"layer_norm_eps": -1}, "layer_norm_eps -1 in its config.json is not a number in"),
    ({"hidden_act": "gelu_new"}, "activation 'gelu_new'"),
    ({"image_size": [8, 16]}, "not square"),
    ({"num_hidden_layers": 1}, "tensors a 1-layer ViTForImageClassification does not"),
    ({"num_hidden_layers": 3}, "lacks tensor vit.encoder.layer.2"),
])
def test_configs_our_vit_cannot_compute_are_refused(tmp_path, changes, message):
    folder = exported(tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(WaveError, match=message) as e:
        load_model(folder)
    assert "\n" not in str(e.value)


def test_missing_tensor_and_missing_classifier_are_refused(tmp_path):
    folder = exported(tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["vit.encoder.layer.0.attention.attention.value.bias"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WaveError, match="lacks tensor vit.encoder.layer.0.attention.attention.value.bias"):
        load_hf(folder)
    del tensors["classifier.weight"], tensors["classifier.bias"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WaveError, match="no classifier"):
        load_hf(folder)


def test_folders_that_are_not_models(tmp_path):
    with pytest.raises(WaveError, match="without config.json"):
        load_model(tmp_path)
    folder = exported(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WaveError, match="no model.safetensors"):
        load_model(folder)
    with pytest.raises(WaveError, match="heads 4 contradicts"):
        load_model(exported(tmp_path), heads=4)


def test_save_replaces_a_previous_export_and_nothing_else(tmp_path):
    spec = SPECS["digits-like, 1 head"]
    folder = exported(tmp_path)
    second = numpy_state(random_vit(spec, seed=1))
    save_hf(folder, second, spec)
    assert np.array_equal(load_hf(folder)[0]["head.weight"], second["head.weight"])
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # no temporary or old folder left behind
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "preprocessor_config.json"]

    (folder / "notes.txt").write_text("mine")
    with pytest.raises(WaveError, match="holds files other than a previous export"):
        save_hf(folder, second, spec)
    assert (folder / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(WaveError, match="exists and is not a folder"):
        save_hf(tmp_path / "file", second, spec)
    assert sorted(os.listdir(tmp_path)) == ["file", "hf"]


def test_a_failed_write_leaves_no_half_written_folder(tmp_path, monkeypatch):
    from waveinit.io import hf

    spec = SPECS["digits-like, 1 head"]
    folder = exported(tmp_path)
    before = load_hf(folder)[0]
    real_write = hf._write_synced

    def disk_full_on_weights(path, data):
        if path.name == "model.safetensors":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(hf, "_write_synced", disk_full_on_weights)
    with pytest.raises(WaveError, match="cannot write .*No space left on device"):
        save_hf(folder, numpy_state(random_vit(spec, seed=1)), spec)
    with pytest.raises(WaveError, match="cannot write"):
        save_hf(tmp_path / "new", numpy_state(random_vit(spec, seed=1)), spec)
    assert sorted(os.listdir(tmp_path)) == ["hf"]  # the old export intact, no trace of either attempt
    assert all(np.array_equal(v, before[k]) for k, v in load_hf(folder)[0].items())


# ----------------------------------------------------------------------------- shards and bfloat16

def shard_by_hand(folder, first_of_second: str = "vit.encoder.layer.0.attention.attention.query.bias"):
    """Split the folder's model.safetensors into two shards plus an index, as transformers writes
    large checkpoints, model.safetensors removed; returns {tensor: shard file}. The second shard
    starts (in sorted names) at `first_of_second`: by default layer 0's key lands in the first
    shard, its query and value in the second, so qkv must be joined across files."""
    metadata = {"format": "pt"}
    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    split_after = names.index(first_of_second)
    weight_map = {}
    for i, part in enumerate((names[:split_after], names[split_after:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / shard), metadata=metadata)
        weight_map.update({k: shard for k in part})
    total = sum(int(v.nbytes) for v in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "model.safetensors").unlink()
    return weight_map


@pytest.mark.usefixtures("one_thread")
def test_a_sharded_folder_loads_as_the_single_file_one(tmp_path, transformers):
    import shutil

    from waveinit.backends.numpy import forward
    from waveinit.io.hf import SHARD_INDEX_FILE, WEIGHTS_FILE, weight_files

    spec = SPECS["rgb, 4 heads"]
    state = numpy_state(random_vit(spec, seed=3))
    save_hf(tmp_path / "single", state, spec, provenance={"data": "digits"})
    shutil.copytree(tmp_path / "single", tmp_path / "sharded")
    weight_map = shard_by_hand(tmp_path / "sharded")
    folder = tmp_path / "sharded"
    assert not (folder / WEIGHTS_FILE).exists() and (folder / SHARD_INDEX_FILE).is_file()
    assert len(set(weight_map.values())) == 2
    assert [p.name for p in weight_files(folder)] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    layer0 = "vit.encoder.layer.0.attention.attention.{}.weight"
    assert weight_map[layer0.format("key")] != weight_map[layer0.format("query")] == weight_map[layer0.format("value")]

    single, single_spec = load_hf(tmp_path / "single")
    sharded, sharded_spec = load_hf(folder)
    assert sharded_spec == single_spec == spec
    assert list(sharded) == list(single) == list(state)  # timm's order, whatever the shard order
    assert all(sharded[k].dtype == single[k].dtype and np.array_equal(sharded[k], single[k]) for k in single)
    assert all(np.array_equal(sharded[k], state[k]) for k in state)
    # the shards were written by hand with {"format": "pt"} only: no stored provenance, the folder is the source
    assert load_model(folder).provenance == {"source": str(folder)}

    theirs = transformers.ViTForImageClassification.from_pretrained(folder).eval()
    images = np.random.default_rng(4).standard_normal((5, spec.channels, spec.image_size, spec.image_size)).astype(np.float32)
    reference = forward(sharded, spec, images)  # float64
    with torch.no_grad():
        logits = theirs(pixel_values=torch.from_numpy(images)).logits.double()
    assert relative_difference(torch.from_numpy(reference), logits) < 1e-5
    np.testing.assert_allclose(logits.numpy(), reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_an_index_naming_a_missing_shard_is_one_line(tmp_path):
    folder = exported(tmp_path)
    weight_map = shard_by_hand(folder)
    missing = "model-00002-of-00002.safetensors"
    assert missing in weight_map.values()
    (folder / missing).unlink()
    for load in (load_hf, load_model):
        with pytest.raises(WaveError, match=f"{missing}.*no such file") as e:
            load(folder)
        assert "\n" not in str(e.value)


def test_a_damaged_index_is_one_line(tmp_path):
    folder = exported(tmp_path)
    shard_by_hand(folder)
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}}')  # no weight_map
    with pytest.raises(WaveError, match="index.json is damaged") as e:
        load_hf(folder)
    assert "\n" not in str(e.value)


@pytest.mark.usefixtures("one_thread")
def test_a_bfloat16_folder_is_refused_but_inspected(tmp_path, transformers):
    from typer.testing import CliRunner

    from waveinit.cli.main import app

    folder = exported(tmp_path)
    theirs = transformers.ViTForImageClassification.from_pretrained(folder)
    theirs.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    bf16 = tmp_path / "bf16"
    assert (bf16 / "model.safetensors").is_file()
    for load in (load_hf, load_model):
        with pytest.raises(WaveError, match=r"bfloat16.*save the model in float32 first \(model\.float\(\)\.save_pretrained") as e:
            load(bf16)
        assert "\n" not in str(e.value)
        assert str(bf16 / "model.safetensors") in str(e.value)

    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(bf16), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["kind"] == "huggingface" and info["spec"] is None
    assert "not a ViT waveinit can load" in info["note"] and "bfloat16" in info["note"]
    assert info["tensors"] and {t["dtype"] for t in info["tensors"]} == {"bfloat16"}
    n_params = SPECS["digits-like, 1 head"].num_params()
    assert sum(np.prod(t["shape"]) for t in info["tensors"]) == n_params
    assert info["tensor_bytes"] == 2 * n_params
    table = runner.invoke(app, ["inspect", str(bf16)])
    assert table.exit_code == 0, table.output
    assert "bfloat16" in table.stdout

    # float32 again, as the message says: loads, and equals the original to bfloat16's precision
    theirs.float().save_pretrained(tmp_path / "back")
    back, spec = load_hf(tmp_path / "back")
    original, _ = load_hf(folder)
    assert spec == SPECS["digits-like, 1 head"]
    assert all(np.allclose(back[k], original[k], rtol=2 ** -7, atol=1e-6) for k in original)


@pytest.mark.parametrize("eps", [1e-12, 1e-6, 1e-5])
def test_any_layer_norm_eps_loads_with_the_original_logits(tmp_path, transformers, eps):
    """transformers' default eps (1e-12, as in every google/vit-* checkpoint) is part of the spec:
    our torch model and the NumPy reference give transformers' logits, and an export keeps it."""
    from waveinit.backends import numpy as ref

    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                    image_size=8, patch_size=2, num_channels=1, num_labels=10, layer_norm_eps=eps)
    torch.manual_seed(1)
    theirs = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for name, p in theirs.named_parameters():
            if name.startswith("vit.embeddings."):
                p.mul_(1e-3)  # a residual stream of variance ~1e-8 at the first LayerNorm: where eps decides the output
    theirs.save_pretrained(tmp_path / "hf")
    ours, _ = load_vit(tmp_path / "hf")
    assert ours.spec.layer_norm_eps == eps
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = theirs(pixel_values=images).logits
        assert relative_difference(expected, ours.eval()(images)) < 1e-5
    reference = ref.forward(load_model(tmp_path / "hf").state_dict, ours.spec, images.numpy())
    assert relative_difference(expected, torch.from_numpy(reference)) < 1e-5
    other = 1e-12 if eps == 1e-6 else 1e-6  # what a loader ignoring the config would use
    wrong = ref.forward(load_model(tmp_path / "hf").state_dict, ours.spec.replace(layer_norm_eps=other), images.numpy())
    assert relative_difference(expected, torch.from_numpy(wrong)) > 1e-3  # the checks above could fail: eps matters here
    save_hf(tmp_path / "back", numpy_state(ours), ours.spec)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["layer_norm_eps"] == eps


def test_files_without_an_eps_read_as_timms_and_files_keep_theirs(tmp_path):
    from safetensors import safe_open

    from waveinit import save_model

    spec = SPECS["digits-like, 1 head"]
    state = numpy_state(random_vit(spec))
    save_model(tmp_path / "old.safetensors", state, spec)
    with safe_open(str(tmp_path / "old.safetensors"), framework="np") as f:
        metadata = f.metadata()
    header = json.loads(metadata["waveinit"])
    # A plain timm-style ViT is written as before the spec held eps and DeiT's fields: older
    # waveinit reads it, and checkpoints made before still resume (their fingerprint is unchanged).
    assert set(header["spec"]) == {"depth", "width", "heads", "patch_size", "image_size", "channels", "num_classes", "mlp_ratio"}
    assert load_model(tmp_path / "old.safetensors").spec.layer_norm_eps == 1e-6

    other = spec.replace(layer_norm_eps=1e-12)
    save_model(tmp_path / "new.safetensors", state, other)
    assert load_model(tmp_path / "new.safetensors").spec == other
    with safe_open(str(tmp_path / "new.safetensors"), framework="np") as f:
        assert json.loads(f.metadata()["waveinit"])["spec"]["layer_norm_eps"] == 1e-12
    with pytest.raises(WaveError, match="LayerNorm eps must be a number in"):
        spec.replace(layer_norm_eps=0.0)


@pytest.mark.slow
def test_a_transformers_folder_with_default_eps_is_a_teacher_end_to_end(tmp_path, transformers):
    """`wave distill --teacher FOLDER` on a ViT saved by transformers with its default config
    (layer_norm_eps 1e-12), then `wave eval` of the folder: no refusal, the teacher's accuracy
    is the folder's, and the learngene records the teacher's eps."""
    from helpers import wave
    from waveinit import load_learngene

    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=256,
                                    image_size=8, patch_size=2, num_channels=1, num_labels=10)
    assert config.layer_norm_eps == 1e-12
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    scored = wave("eval", tmp_path / "hf", "--json", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["spec"]["layer_norm_eps"] == 1e-12
    out = tmp_path / "lg.safetensors"
    distilled = wave("distill", "--teacher", tmp_path / "hf", "--templates", "2", "--epochs", "1", "--subset", "300", "--out", out,
                     "--json", cwd=tmp_path)
    assert distilled.returncode == 0, distilled.stderr
    summary = json.loads(distilled.stdout)
    assert summary["teacher_test_accuracy"] == pytest.approx(json.loads(scored.stdout)["accuracy"])
    assert load_learngene(out).spec.layer_norm_eps == 1e-12
