"""timm and the Hugging Face Hub, for real: spawned and exported models load into timm itself
(`strict=True`) and give its logits; timm's own folders (written by `timm.models.save_for_hf`)
and timm-keyed state dicts serve as teachers; Hub names resolve through a real (offline) Hub
cache laid out as `huggingface_hub` lays it out."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from helpers import ENV, wave
from waveinit import load_model, save_model
from waveinit.backends import numpy as reference
from waveinit.backends.torch import ViT, load_state_dict
from waveinit.cli.main import app
from waveinit.io.datasets import load_dataset

runner = CliRunner()
DIGITS = {"patch_size": 2, "img_size": 8, "in_chans": 1, "num_classes": 10}


def invoke(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def timm_model(name: str = "vit_tiny_patch16_224", seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **{**DIGITS, "depth": 2, "embed_dim": 64, "num_heads": 2, **kwargs}).eval()


def images(n: int = 16) -> torch.Tensor:
    return torch.from_numpy(load_dataset("digits").test_images[:n])


def ours(model_file) -> ViT:
    return load_state_dict(ViT(model_file.spec), model_file.state_dict).eval()


# ----------------------------------------------------------------------------- ours into timm


def test_a_spawned_model_loads_into_timm_strictly_with_the_same_logits(learngene_file, tmp_path):
    out = tmp_path / "spawned.safetensors"
    invoke("spawn", "--learngene", learngene_file, "--depth", 3, "--width", 128, "--no-fit", "--out", out)
    model = load_model(out)
    spec = model.spec
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=spec.depth, embed_dim=spec.width, num_heads=spec.heads,
                               **DIGITS).eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict.items()}, strict=True)
    x = images()
    with torch.no_grad():
        expected = theirs(x).numpy()
        mine = ours(model)(x).numpy()
    np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference.forward(model.state_dict, spec, x.numpy().astype(np.float64)), expected, rtol=1e-4, atol=1e-4)


def test_timm_export_is_what_timm_loads(learngene_file, tmp_path):
    model = tmp_path / "m.safetensors"
    invoke("spawn", "--learngene", learngene_file, "--depth", 2, "--width", 64, "--fit-steps", 3, "--out", model)
    invoke("export", model, "--format", "timm", "--out", tmp_path / "m-timm")
    config = json.loads((tmp_path / "m-timm" / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["model_args"]["depth"] == 2
    assert config["label_names"] == [str(d) for d in range(10)]
    theirs = timm.create_model(f"local-dir:{tmp_path / 'm-timm'}", pretrained=True).eval()
    x = images()
    with torch.no_grad():
        np.testing.assert_allclose(ours(load_model(model))(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)
    # our [-1, 1] scaling of digits' 0-16 pixels: timm's v / 255, then (x - m) / m with m = 16 / 510
    data_config = timm.data.resolve_data_config({}, model=theirs)
    assert tuple(data_config["mean"]) == tuple(data_config["std"]) == (16 / 510,)
    # and it reads back as a teacher
    back = load_model(tmp_path / "m-timm")
    assert back.spec == load_model(model).spec


# ----------------------------------------------------------------------------- timm as teacher


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_timm_folders_are_teachers_with_timms_logits(name, tmp_path):
    theirs = timm_model(name)
    timm.models.save_for_hf(theirs, tmp_path / "teacher", safe_serialization=True)
    model = load_model(tmp_path / "teacher")  # heads, eps, image size from its config.json
    assert (model.spec.depth, model.spec.width, model.spec.heads, model.spec.image_size) == (2, 64, 2, 8)
    assert model.spec.dist_token == name.startswith("deit")
    x = images()
    with torch.no_grad():
        np.testing.assert_allclose(ours(model)(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)
    result = invoke("distill", "--teacher", tmp_path / "teacher", "--epochs", 1, "--subset", 128, "--out", tmp_path / "lg.safetensors",
                    "--json")
    assert json.loads(result.stdout.strip().splitlines()[-1])["teacher"] == str((tmp_path / "teacher").resolve())


def test_a_timm_keyed_state_dict_loads_as_timm_computes(tmp_path):
    theirs = timm_model(num_heads=4)
    save_file(theirs.state_dict(), tmp_path / "sd.safetensors")
    model = load_model(tmp_path / "sd.safetensors", heads=4)
    x = images()
    with torch.no_grad():
        np.testing.assert_allclose(ours(model)(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)


def test_an_unsupported_timm_variant_is_refused_by_name(tmp_path):
    timm.models.save_for_hf(timm_model(reg_tokens=4), tmp_path / "reg", safe_serialization=True)
    result = invoke("eval", tmp_path / "reg", code=2)
    assert "reg_tokens=4 is not in our ViT" in result.output
    shown = invoke("inspect", tmp_path / "reg").output  # inspect still shows what it holds, and why it does not load
    assert "not a ViT waveinit can load" in shown


# ----------------------------------------------------------------------------- a variant through the schema

AVG = {"global_pool": "avg", "class_token": False}  # TLEG's and SWS's descendants


@pytest.mark.parametrize("variant", [AVG, {"global_pool": "avg"}], ids=["avg-no-class-token", "avg-with-class-token"])
def test_timms_average_pooling_variant_round_trips_with_timms_logits(variant, tmp_path):
    from waveinit.keys import spec_from_state_dict, state_dict_keys

    theirs = timm_model(**variant)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    spec = spec_from_state_dict(state, heads=2)
    assert (spec.global_pool, spec.class_token) == ("avg", variant.get("class_token", True))
    assert state_dict_keys(spec) == list(theirs.state_dict())  # names and order, as timm registers them
    assert spec.num_params() == sum(p.numel() for p in theirs.parameters())
    x = images()
    model = ours(load_model_from(state, spec, tmp_path / "sd.safetensors"))
    with torch.no_grad():
        expected = theirs(x).numpy()
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference.forward(state, spec, x.numpy().astype(np.float64)), expected, rtol=1e-4, atol=1e-4)
    # timm's own folder reads back as this spec, and our timm export is what timm builds
    timm.models.save_for_hf(theirs, tmp_path / "theirs", safe_serialization=True)
    assert load_model(tmp_path / "theirs").spec == spec
    invoke("export", tmp_path / "sd.safetensors", "--format", "timm", "--out", tmp_path / "ours-timm")
    back = timm.create_model(f"local-dir:{tmp_path / 'ours-timm'}", pretrained=True).eval()
    with torch.no_grad():
        np.testing.assert_allclose(back(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def load_model_from(state, spec, path):
    save_model(path, state, spec, {})
    return load_model(path)


def test_the_average_pooling_variant_has_no_hf_or_templated_form(tmp_path):
    from waveinit import ViTSpec, WaveError, template_shapes

    spec = ViTSpec(depth=2, width=64, heads=2, global_pool="avg", class_token=False)
    save_model(tmp_path / "m.safetensors", {k: v.numpy() for k, v in ViT(spec).state_dict().items()}, spec, {})
    assert "has no average pooling: export this model with --format timm" in invoke("export", tmp_path / "m.safetensors", "--format", "hf",
                                                                                  "--out", tmp_path / "hf", code=2).output
    with pytest.raises(WaveError, match="pools the patches"):
        template_shapes(spec, 64, 4)
    with pytest.raises(WaveError, match="global_pool 'token' reads the class token"):
        ViTSpec(depth=2, width=64, class_token=False)


# ----------------------------------------------------------------------------- the Hub, offline


def lay_out_hub_cache(cache, repo: str, folder, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """`folder`'s files as huggingface_hub caches a download of `repo` at `commit`:
    models--ORG--NAME/blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, root / "blobs" / digest)
        (snapshot / f.name).symlink_to(f"../../blobs/{digest}")
    return commit


@pytest.mark.slow
def test_teachers_by_hub_name_resolve_through_the_cache_offline(tmp_path):
    timm.models.save_for_hf(timm_model(), tmp_path / "timm-teacher", safe_serialization=True)
    cache = tmp_path / "hub"
    commit = lay_out_hub_cache(cache, "someone/tiny-vit", tmp_path / "timm-teacher")
    env = {**ENV, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}

    evaluated = wave("eval", "someone/tiny-vit", "--data", "digits", "--json", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    out = tmp_path / "lg.safetensors"
    distilled = wave("distill", "--teacher", f"hf-hub:someone/tiny-vit@{commit}", "--epochs", "1", "--subset", "128", "--out", out, env=env)
    assert distilled.returncode == 0, distilled.stderr
    from waveinit import load_learngene

    assert load_learngene(out).provenance["teacher"] == f"hf:someone/tiny-vit@{commit}"
    shown = wave("inspect", "hf-hub:someone/tiny-vit", "--json", env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["spec"]["depth"] == 2

    missing = wave("eval", "someone/not-cached", "--data", "digits", env=env)
    assert missing.returncode == 2
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in missing.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- sizes by name and budget


def test_sizes_by_timm_name_and_by_parameter_budget(tmp_path):
    from waveinit import learngene_from_weights, save_learngene
    from waveinit.backends.torch import dense_numpy
    from waveinit.spec import ViTSpec

    spec = ViTSpec(depth=2, width=128, heads=2, patch_size=2, image_size=8, channels=1, num_classes=10)
    torch.manual_seed(0)
    save_learngene(tmp_path / "g.safetensors", learngene_from_weights(dense_numpy(ViT(spec).state_dict()), spec, 64, 2))
    invoke("spawn", "--learngene", tmp_path / "g.safetensors", "--size", "vit_tiny", "--no-fit", "--out", tmp_path / "tiny.safetensors")
    tiny = load_model(tmp_path / "tiny.safetensors").spec
    assert (tiny.depth, tiny.width, tiny.heads) == (12, 192, 3)
    invoke("spawn", "--learngene", tmp_path / "g.safetensors", "--size", "vit_tiny", "--depth", 4, "--no-fit", "--out", tmp_path / "t4.safetensors")
    assert load_model(tmp_path / "t4.safetensors").spec.depth == 4

    result = invoke("spawn", "--learngene", tmp_path / "g.safetensors", "--params", 1_000_000, "--no-fit", "--out", tmp_path / "p.safetensors")
    chosen = load_model(tmp_path / "p.safetensors").spec
    assert chosen.width % 64 == 0 and "nearest 1,000,000 parameters" in result.output
    # no other depth and width on the grid is nearer the budget
    from waveinit.spawning import size_for_params

    assert size_for_params(1_000_000, spec, 64) == (chosen.depth, chosen.width)
    assert abs(chosen.num_params() - 1_000_000) <= min(abs(ViTSpec(depth=d, width=w, patch_size=2, image_size=8, channels=1, num_classes=10)
                                                       .num_params() - 1_000_000) for d in range(1, 25) for w in range(64, 1025, 64))


# ----------------------------------------------------------------------------- run records


def test_metrics_have_top5_and_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "m.safetensors"
    invoke("train", "--depth", 1, "--width", 64, "--epochs", 2, "--subset", 256, "--log-dir", tmp_path / "tb", "--out", out)
    rows = (tmp_path / "m.metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "eval_top5" in header
    top1, top5 = (float(rows[-1].split(",")[header.index(k)]) for k in ("eval_top1", "eval_top5"))
    assert 0 <= top1 <= top5 <= 100
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [e.step for e in events.Scalars("eval/top1")] == [1, 2]
    assert events.Scalars("eval/top5")[-1].value == pytest.approx(top5, rel=1e-6)
    assert len(events.Scalars("train/loss")) == 2


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"])
def test_our_key_schema_is_timms_in_its_order(name, tmp_path):
    from waveinit.keys import spec_from_state_dict, state_dict_keys

    theirs = timm_model(name)
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    spec = spec_from_state_dict(state, heads=2)
    assert state_dict_keys(spec) == list(theirs.state_dict())  # names and order, as timm registers them
    save_model(tmp_path / "m.safetensors", state, spec, {})
    assert set(load_model(tmp_path / "m.safetensors").state_dict) == set(state)
