"""The exports in the clients people call first: transformers' image-classification pipeline on a
grey model's Hugging Face export (PIL images and image paths), and timm's own preprocessing
(`resolve_data_config` + `create_transform`) on the timm export: the same labels and accuracy as
`wave eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import wave
from waveinit.io.datasets import load_dataset
from waveinit.tasks import load_vit

pytestmark = pytest.mark.slow  # a trained ancestry (conftest.ancestry)

N = 120  # digits test images scored through each client


def digits_as_pil(n: int) -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
    """digits' first `n` test images as 8-bit grey PIL images (raw values 0..16, what the
    files of this data hold), their labels, and the arrays our models read ([-1, 1])."""
    data = load_dataset("digits")
    images, labels = data.test_images[:n], data.test_labels[:n]
    raw = np.rint((images[:, 0] + 1) / 2 * data.pixel_max).astype(np.uint8)  # (n, 8, 8)
    return [Image.fromarray(r, mode="L") for r in raw], labels, images


def our_predictions(model_path, images: np.ndarray) -> np.ndarray:
    model, _ = load_vit(model_path)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images)).argmax(-1).numpy()


def wave_eval_accuracy(model_path) -> float:
    done = wave("eval", model_path, "--data", "digits", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["accuracy"]


def test_the_pipeline_classifies_a_grey_models_export_as_wave_eval_does(ancestry, tmp_path):
    from transformers import pipeline

    folder = tmp_path / "hf"
    done = wave("export", ancestry, "--format", "hf", "--out", folder)
    assert done.returncode == 0, done.stderr
    assert json.loads((folder / "config.json").read_text())["num_channels"] == 3  # grey, exported for RGB clients
    pil, labels, images = digits_as_pil(N)
    ours = our_predictions(ancestry, images)
    classify = pipeline("image-classification", model=str(folder), device="cpu")
    paths = []
    for i, image in enumerate(pil):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    for inputs in (pil, paths):
        top = [int(result[0]["label"]) for result in classify(inputs, top_k=1)]
        np.testing.assert_array_equal(top, ours)
    # and on the whole test split, the accuracy wave eval reports
    data = load_dataset("digits")
    every, _, _ = digits_as_pil(len(data.test_labels))
    top = np.array([int(result[0]["label"]) for result in classify(every, top_k=1)])
    assert np.mean(top == data.test_labels) == pytest.approx(wave_eval_accuracy(ancestry), abs=1e-9)
    # --no-grey-as-rgb keeps one channel (for clients that feed grey tensors)
    kept = tmp_path / "hf1"
    assert wave("export", ancestry, "--format", "hf", "--out", kept, "--no-grey-as-rgb").returncode == 0
    assert json.loads((kept / "config.json").read_text())["num_channels"] == 1
    # our own reader gives the grey model back
    back = wave("eval", folder, "--data", "digits", "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["accuracy"] == pytest.approx(wave_eval_accuracy(ancestry), abs=1e-9)


def test_timms_own_preprocessing_of_the_timm_export_is_the_models(ancestry, tmp_path):
    import timm

    folder = tmp_path / "timm"
    assert wave("export", ancestry, "--format", "timm", "--out", folder).returncode == 0
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    pil, labels, images = digits_as_pil(N)
    batch = torch.stack([transform(image) for image in pil])  # (n, 1, 8, 8)
    np.testing.assert_allclose(batch.numpy(), images, atol=1e-6)  # the model's own scaling, pixel for pixel
    with torch.no_grad():
        np.testing.assert_array_equal(model(batch).argmax(-1).numpy(), our_predictions(ancestry, images))
