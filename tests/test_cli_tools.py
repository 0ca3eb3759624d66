"""`wave eval`, `wave inspect`, `wave export` end to end on real digits: the numbers agree with the
library, an exported Hugging Face folder scores and distils like the model it came from, and
bad input ends in one line and exit 2 with nothing written."""

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import wave
from waveinit import ViTSpec, load_learngene, save_learngene, save_model
from waveinit.backends.torch import TemplatedViT, ViT
from waveinit.cli.main import app
from waveinit.configs import TrainConfig
from waveinit.io.datasets import load_dataset
from waveinit.tasks import load_vit
from waveinit.training.engine import train
from waveinit.training.evaluation import evaluate

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small model trained on digits (with its checkpoint) and its Hugging Face export."""
    folder = tmp_path_factory.mktemp("tools")
    model = folder / "vit.safetensors"
    invoke("train", "--depth", 1, "--width", 64, "--epochs", 2, "--subset", 400, "--batch-size", 64, "--lr", 3e-3, "--out", model)
    invoke("export", model, "--format", "hf", "--out", folder / "vit-hf")
    return folder


def eval_json(path, *extra):
    result = invoke("eval", path, "--json", *extra)
    return json.loads(result.stdout)


def test_eval_json_is_what_evaluate_gives(work):
    report = eval_json(work / "vit.safetensors")
    data = load_dataset("digits")
    model, _ = load_vit(work / "vit.safetensors")
    expected = evaluate(model, data.test_images, data.test_labels, 256, torch.device("cpu"))
    assert report["accuracy"] == expected["accuracy"] and report["samples"] == expected["samples"] == 359
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert report["data"] == "digits" and report["model"] == str(work / "vit.safetensors")
    assert 0 <= report["accuracy"] <= 1


def test_eval_table(work):
    result = invoke("eval", work / "vit.safetensors", "--data", "digits")
    assert "accuracy" in result.stdout and "359" in result.stdout and "digits" in result.stdout


def test_exported_folder_scores_the_same(work):
    assert sorted(os.listdir(work / "vit-hf")) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    original, exported = eval_json(work / "vit.safetensors"), eval_json(work / "vit-hf")
    assert exported["accuracy"] == original["accuracy"]
    assert exported["loss"] == pytest.approx(original["loss"], rel=1e-6)
    assert exported["data"] == "digits"  # the provenance travels with the export


def test_distill_from_a_hugging_face_teacher(work, tmp_path):
    out = tmp_path / "learngene.safetensors"
    invoke("distill", "--teacher", work / "vit-hf", "--epochs", 1, "--subset", 128, "--depth", 1, "--width", 64,
           "--templates", 1, "--batch-size", 64, "--out", out)
    learngene = load_learngene(out)
    assert learngene.provenance["teacher"] == str(work / "vit-hf") and learngene.spec.width == 64


def inspect_json(path):
    return json.loads(invoke("inspect", path, "--json").stdout)


def test_inspect_learngene(tmp_path):
    spec = ViTSpec(depth=2, width=64, heads=1, patch_size=2, image_size=8, channels=1, num_classes=10)
    learngene = TemplatedViT(spec, 64, 2).to_learngene({"data": "digits"})
    save_learngene(tmp_path / "lg.safetensors", learngene)
    info = inspect_json(tmp_path / "lg.safetensors")
    assert (info["kind"], info["format"], info["format_version"]) == ("learngene", "waveinit.learngene", 1)
    assert info["spec"] == spec.to_dict() and info["side"] == 64 and info["provenance"] == {"data": "digits"}
    qkv = info["roles"]["attn.qkv.weight"]
    assert qkv == {"templates": 2, "template_shape": [64, 64], "scaler_shape": [3, 1], "per_layer": True,
                   "template_params": 2 * 64 * 64, "scaler_params": 2 * 2 * 3}
    assert info["roles"]["head.weight"]["per_layer"] is False and info["roles"]["head.weight"]["template_shape"] == [10, 64]
    assert info["template_params"] == learngene.num_template_params() and info["scaler_params"] == learngene.num_scaler_params()
    assert len(info["tensors"]) == 40 and info["tensor_bytes"] == 4 * (info["template_params"] + info["scaler_params"])
    table = invoke("inspect", tmp_path / "lg.safetensors").stdout
    assert "templates and scalers per role" in table and "attn.qkv.weight" in table


def test_inspect_model_checkpoint_and_hf_folder(work):
    model = inspect_json(work / "vit.safetensors")
    assert (model["kind"], model["format"], model["format_version"]) == ("model", "waveinit.model", 1)
    assert model["spec"]["depth"] == 1 and model["provenance"]["data"] == "digits"
    assert model["parameters"] == sum(np.prod(t["shape"], dtype=int) for t in model["tensors"])
    qkv = next(t for t in model["tensors"] if t["name"] == "blocks.0.attn.qkv.weight")
    assert qkv == {"name": "blocks.0.attn.qkv.weight", "shape": [192, 64], "dtype": "float32", "bytes": 192 * 64 * 4}

    # A finished run deletes its checkpoint: the engine keeps one when called directly.
    vit, _ = load_vit(work / "vit.safetensors")
    digits = load_dataset("digits", subset=400)
    train(vit, digits.train_images, digits.train_labels, TrainConfig(epochs=2, batch_size=64), device="cpu", checkpoint=work / "vit.ckpt",
          meta={"task": "train", "data": "digits", "spec": vit.spec.to_dict()})
    ckpt = inspect_json(work / "vit.ckpt")
    assert (ckpt["kind"], ckpt["format"]) == ("checkpoint", "waveinit.checkpoint")
    assert ckpt["spec"] == model["spec"] and ckpt["provenance"]["task"] == "train"
    assert ckpt["checkpoint"]["complete"] is True and ckpt["checkpoint"]["epochs_done"] == 2
    assert ckpt["checkpoint"]["global_step"] == ckpt["checkpoint"]["total_steps"]

    hf = inspect_json(work / "vit-hf")
    assert (hf["kind"], hf["format"]) == ("huggingface", "huggingface vit")
    assert hf["spec"] == model["spec"] and hf["config"]["layer_norm_eps"] == 1e-6
    assert hf["provenance"]["exported_from"] == str(work / "vit.safetensors")
    # the same numbers, split differently, but for the grey patch embedding exported as RGB (3 channels)
    patch = next(t for t in model["tensors"] if t["name"] == "patch_embed.proj.weight")
    assert hf["tensor_bytes"] == model["tensor_bytes"] + 2 * patch["bytes"]

    table = invoke("inspect", work / "vit.ckpt").stdout
    assert "optim.*.exp_avg" in table and "complete" in table  # optimizer tensors grouped, one row


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A model for 3x16x16 images that says it was trained on digits (which are 1x8x8)."""
    path = tmp_path_factory.mktemp("rgb") / "rgb.safetensors"
    spec = ViTSpec(depth=1, width=64, heads=1, patch_size=4, image_size=16, channels=3, num_classes=10)
    save_model(path, {k: v.numpy() for k, v in ViT(spec).state_dict().items()}, spec, {"data": "digits"})
    return path


@pytest.mark.parametrize("case", ["export to a file", "unknown format", "missing model", "data mismatch", "corrupt file"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, work, rgb_model, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    args, message = {
        "export to a file": (["export", work / "vit.safetensors", "--out", tmp_path / "taken"], "exists and is not a folder"),
        "unknown format": (["export", work / "vit.safetensors", "--format", "onnx", "--out", tmp_path / "onnx"], "choose one of hf"),
        "missing model": (["eval", tmp_path / "nope.safetensors"], "no such file"),
        "data mismatch": (["eval", rgb_model], "takes 3x16x16 images and 10 classes, digits has 1x8x8"),
        "corrupt file": (["inspect", tmp_path / "broken.safetensors"], "not a readable safetensors file"),
    }[case]
    result = wave(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stdout == ""
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["broken.safetensors", "taken"]
    assert (tmp_path / "taken").read_text() == "not a folder"
