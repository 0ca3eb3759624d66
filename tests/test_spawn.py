"""The data-free spawn rule (core) and `wave spawn` end to end on digits."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import random_factors
from waveinit import Learngene, ViTSpec, load_learngene, load_model, materialize, save_learngene, scaler_shapes
from waveinit.backends import numpy as ref
from waveinit.backends.torch import ViT, load_state_dict
from waveinit.io.datasets import load_dataset
from waveinit.io.storage import FORMATS, LEARNGENE_FORMAT
from waveinit.spawning import balance, fresh_roles, layer_map, resample_scalers, spawn_factors, target_spec
from waveinit.training.evaluation import evaluate

AUX = ViTSpec(depth=3, width=32, heads=2, patch_size=2, image_size=4, channels=1, num_classes=4)


def random_learngene(spec=AUX, side=16, n=2, seed=0):
    templates, scalers = random_factors(spec, side, n, seed=seed)
    return Learngene(templates, {k: 3 * v for k, v in scalers.items()}, spec, side)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 3))
def test_balance_changes_no_weight_and_gives_rms_one_scalers(seed, n):
    lg = random_learngene(n=n, seed=seed)
    templates, scalers = balance(lg.templates, lg.scalers)
    before, after = materialize(AUX, 16, lg.templates, lg.scalers), materialize(AUX, 16, templates, scalers)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-10, atol=1e-12)
    qkv = scalers["attn.qkv.weight"]  # (depth, N, a, b)
    np.testing.assert_allclose(np.sqrt((qkv**2).mean(axis=(0, 2, 3))), 1.0, rtol=1e-12)


@given(source=st.integers(1, 16), target=st.integers(1, 16))
def test_layer_map_keeps_relative_depth(source, target):
    layers = layer_map(source, target, "relative")
    assert len(layers) == target and layers == sorted(layers)
    assert all(0 <= layer < source for layer in layers)
    if target == source:
        assert layers == list(range(source))
    if target >= source:
        assert set(layers) == set(range(source))  # deeper: every auxiliary layer is used


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 6), blocks=st.integers(1, 6), n=st.integers(1, 3))
def test_resampled_scalers_have_the_target_shapes(depth, blocks, n):
    lg = random_learngene(n=n)
    target = AUX.replace(depth=depth, width=16 * blocks, heads=blocks)
    resampled = resample_scalers(lg.scalers, AUX, target, 16)
    assert {k: v.shape for k, v in resampled.items()} == scaler_shapes(target, 16, n)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_fold_wider_spawn_computes_the_auxiliary_function_exactly(k):
    # Same depth, k times the width and heads (same head width): every block is duplicated and
    # fan-in sums are divided by k, so the logits are the auxiliary model's.
    lg = random_learngene(seed=k)
    target = AUX.replace(width=32 * k, heads=2 * k)
    templates, scalers, fresh = spawn_factors(lg, target)
    assert fresh == set()
    images = np.random.default_rng(0).standard_normal((5, 1, 4, 4))
    expected = ref.forward(materialize(AUX, 16, lg.templates, lg.scalers), AUX, images)
    actual = ref.forward(materialize(target, 16, templates, scalers), target, images)
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


def test_new_data_refreshes_exactly_the_data_dependent_roles():
    lg = random_learngene()
    assert set(fresh_roles(AUX, AUX.replace(num_classes=7))) == {"head.weight", "head.bias"}
    assert set(fresh_roles(AUX, AUX.replace(channels=3))) == {"patch_embed.proj.weight"}
    assert set(fresh_roles(AUX, AUX.replace(image_size=8))) == {"pos_embed"}
    # the rule compares at the target's own size: depth and width never make a role fresh
    assert fresh_roles(AUX, AUX.replace(depth=AUX.depth + 1, width=2 * AUX.width, heads=2 * AUX.heads)) == {}
    # the same token grid from another image size and patch: the position embedding is kept, the patches are not
    regrid = AUX.replace(image_size=2 * AUX.image_size, patch_size=2 * AUX.patch_size)
    assert set(fresh_roles(AUX, regrid)) == {"patch_embed.proj.weight"}
    assert set(fresh_roles(AUX, AUX, other_data=True)) == {"head.weight", "head.bias"}
    target = AUX.replace(depth=2, width=48, heads=3, num_classes=7, channels=3)
    templates, scalers, fresh = spawn_factors(lg, target)
    assert fresh == {"head.weight", "head.bias", "patch_embed.proj.weight"}
    balanced, _ = balance(lg.templates, lg.scalers)
    np.testing.assert_array_equal(templates["mlp.fc1.weight"], balanced["mlp.fc1.weight"])  # learned templates kept
    assert templates["head.weight"].shape == (2, 7, 16)
    ref.state_dict(target, 16, templates, scalers)  # every shape fits the target


# --- `wave spawn` end to end ------------------------------------------------------------------


def wave(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "waveinit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_no_fit_spawn_writes_a_plain_model(learngene_file, tmp_path):
    out = tmp_path / "vit.safetensors"
    result = wave("spawn", "--depth", "3", "--width", "128", "--learngene", learngene_file, "--no-fit", "--out", out)
    assert result.returncode == 0, result.stderr
    model = load_model(out)
    assert (model.spec.depth, model.spec.width, model.spec.heads) == (3, 128, 2)
    assert model.provenance["init"] == "wave-nofit"
    # The same weights as the library's data-free rule.
    from waveinit.spawning import spawn_state_dict

    expected, _ = spawn_state_dict(load_learngene(learngene_file), model.spec)
    for key in expected:
        np.testing.assert_array_equal(model.state_dict[key], expected[key])


@pytest.mark.slow
@pytest.mark.parametrize("depth, width", [(2, 64), (4, 128), (6, 192)])
def test_spawn_with_fit_any_size(learngene_file, tmp_path, depth, width):
    out = tmp_path / "vit.safetensors"
    result = wave("spawn", "--depth", depth, "--width", width, "--learngene", learngene_file, "--fit-steps", "15", "--fit-samples", "300",
                  "--fit-patience", "0", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout + result.stderr
    model = load_model(out)
    assert model.provenance["fit_steps"] == 15 and model.provenance["fit_samples"] == 300 - 300 // 5  # a fifth held out; no early stop
    # The file's weights score what the summary reported.
    data = load_dataset("digits")
    vit = load_state_dict(ViT(model.spec), model.state_dict)
    again = evaluate(vit, data.test_images, data.test_labels, 256, torch.device("cpu"))
    assert again["accuracy"] == pytest.approx(model.provenance["test_accuracy"], abs=1e-6)

@pytest.mark.slow
def test_spawned_model_trains_with_wave_train_init(learngene_file, tmp_path):
    spawned = tmp_path / "spawned.safetensors"
    assert wave("spawn", "--depth", "2", "--width", "64", "--learngene", learngene_file, "--no-fit", "--out", spawned).returncode == 0
    trained = tmp_path / "trained.safetensors"
    result = wave("train", "--init", spawned, "--epochs", "1", "--out", trained)
    assert result.returncode == 0, result.stderr
    assert load_model(trained).provenance["init"] == str(spawned)

@pytest.mark.slow
def test_spawn_for_new_data_refreshes_the_classifier(learngene_file, tmp_path):
    # A 3-class RGB image folder of another size: patch, position and head templates are new.
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            pixels[..., c] = 255  # a learnable class signal
            Image.fromarray(pixels).save(tmp_path / "imgs" / f"class{c}" / f"{i}.png")
    out = tmp_path / "vit.safetensors"
    result = wave("spawn", "--depth", "2", "--width", "64", "--learngene", learngene_file, "--data", f"folder:{tmp_path / 'imgs'}",
                  "--patch", "2", "--image-size", "12", "--fit-steps", "10", "--out", out)
    assert result.returncode == 0, result.stderr
    model = load_model(out)
    assert (model.spec.channels, model.spec.image_size, model.spec.num_classes) == (3, 12, 3)
    assert set(model.provenance["fresh_roles"]) == {"patch_embed.proj.weight", "pos_embed", "head.weight", "head.bias"}  # 37 tokens, 3x2x2 patches, 3 classes


def _damaged_learngenes(learngene_file, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(learngene_file.read_bytes()[:1000])
    newer = tmp_path / "newer.safetensors"
    lg = load_learngene(learngene_file)
    from safetensors.numpy import save_file

    from waveinit.io.storage import read_file

    meta, tensors = read_file(learngene_file)
    save_file(tensors, newer, {**meta, "format_version": str(FORMATS[LEARNGENE_FORMAT] + 1)})
    save_learngene(tmp_path / "ok.safetensors", lg)
    return truncated, newer


@pytest.mark.parametrize(
    "args, message",
    [
        (["--depth", "2", "--width", "96"], "width 96 is not a multiple of the template side 64"),
        (["--depth", "2", "--width", "64", "--heads", "3"], "heads 3 does not divide width 64"),
        (["--depth", "0", "--width", "64"], "depth must be at least 1"),
        (["--depth", "2", "--width", "64", "--learngene", "missing.safetensors"], "no such file"),
        (["--depth", "2", "--width", "64", "--learngene", "TRUNCATED"], "not a readable safetensors file"),
        (["--depth", "2", "--width", "64", "--learngene", "NEWER"], "upgrade waveinit"),
        (["--depth", "2", "--width", "64", "--learngene", "ANCESTRY"], "expected a learngene"),
        (["--depth", "2", "--width", "64", "--data", "fashion-mnist", "--patch", "5"], "patch size 5 does not divide image size 28"),
    ],
)
def test_bad_spawn_input_is_one_line_and_exit_2(learngene_file, ancestry, tmp_path, args, message):
    truncated, newer = _damaged_learngenes(learngene_file, tmp_path)
    replace = {"TRUNCATED": truncated, "NEWER": newer, "ANCESTRY": ancestry}
    args = [replace.get(a, a) for a in args]
    if "--learngene" not in args:
        args += ["--learngene", learngene_file]
    out = tmp_path / "out.safetensors"
    result = wave("spawn", *args, "--no-fit", "--out", out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_target_spec_defaults():
    lg = random_learngene()
    spec = target_spec(lg, 4, 64, 4)
    assert (spec.patch_size, spec.image_size, spec.channels, spec.num_classes) == (2, 4, 1, 4)
    assert json.loads(json.dumps(spec.to_dict()))["depth"] == 4


def test_fit_trains_only_scalers_and_fresh_templates(learngene_file):
    from waveinit.configs import SpawnConfig
    from waveinit.tasks import fit_scalers as fit_spawn

    lg = load_learngene(learngene_file)
    data = load_dataset("digits")
    target = target_spec(lg, 2, 128)
    result = fit_spawn(lg, target, data, SpawnConfig(fit_steps=5, fit_samples=128, fit_patience=0), refresh={"head.weight", "head.bias"}, device="cpu")
    templates, scalers = result.factors.role_tensors()
    balanced, _ = balance(lg.templates, lg.scalers)
    for name, t in templates.items():
        if name in result.fresh_roles:
            continue
        np.testing.assert_array_equal(t.detach().numpy(), balanced[name], err_msg=name)  # frozen
    fresh_numel = sum(templates[name].numel() for name in result.fresh_roles)
    assert result.fresh_roles == {"head.weight", "head.bias"}
    assert result.fitted_params == sum(s.numel() for s in scalers.values()) + fresh_numel
    assert result.steps == 5 and result.samples == 128 - 128 // 5  # a fifth held out to judge the fit


def test_the_fits_teacher_is_explicit_and_never_read_off_the_disk(learngene_file, ancestry, tmp_path):
    import waveinit
    from waveinit import WaveError

    # The default is no teacher, though the learngene's recorded ancestry is right there.
    default = waveinit.spawn(learngene_file, 2, 64, fit_steps=3, fit_samples=64, device="cpu")
    assert default.provenance["teacher"] is None
    assert any("fitting without a teacher" in line and "--teacher recorded" in line for line in default.provenance["notes"])
    recorded = waveinit.spawn(learngene_file, 2, 64, fit_steps=3, fit_samples=64, teacher="recorded", device="cpu")
    assert recorded.provenance["teacher"] == str(ancestry.resolve())
    explicit = waveinit.spawn(learngene_file, 2, 64, fit_steps=3, fit_samples=64, teacher=ancestry, device="cpu")
    np.testing.assert_array_equal(explicit.state_dict["head.weight"], recorded.state_dict["head.weight"])
    # A learngene whose recorded ancestry is not on this machine: the same default model, and
    # "recorded" is an error that says so.
    gene = load_learngene(learngene_file)
    gene.provenance["teacher"] = str(tmp_path / "gone.safetensors")
    moved = tmp_path / "moved.safetensors"
    save_learngene(moved, gene)
    elsewhere = waveinit.spawn(moved, 2, 64, fit_steps=3, fit_samples=64, device="cpu")
    for key in default.state_dict:
        np.testing.assert_array_equal(elsewhere.state_dict[key], default.state_dict[key], err_msg=key)
    with pytest.raises(WaveError, match="not on this machine"):
        waveinit.spawn(moved, 2, 64, fit_steps=3, fit_samples=64, teacher="recorded", device="cpu")
    free = waveinit.spawn(learngene_file, 2, 64, fit=False, patch=4)
    assert free.spec.patch_size == 4 and free.provenance["fresh_roles"] == ["patch_embed.proj.weight", "pos_embed"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_spawn_with_a_fit_on_cuda_matches_the_cpu(learngene_file):
    # The fit scores its data-free start before training moves the model: that scoring must move it too.
    import waveinit

    runs = {device: waveinit.spawn(learngene_file, 2, 64, fit_steps=3, fit_samples=64, fit_patience=0, teacher=None, device=device)
            for device in ("cpu", "cuda")}
    assert runs["cuda"].provenance["fit_steps"] == 3
    assert runs["cuda"].provenance["test_accuracy"] == pytest.approx(runs["cpu"].provenance["test_accuracy"], abs=0.05)


def test_default_heads_keep_the_learngenes_head_width():
    lg = random_learngene()  # head width 16
    assert target_spec(lg, 2, 64).heads == 4


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("seed", [0, 1])
def test_fitting_the_scalers_beats_the_data_free_start(learngene_file, seed):
    # The learngene's auxiliary model is 2 x 64 with templates of side 64, so a target can only be
    # as wide or wider, and no shallower than 1 layer. Twice as deep (4 x 64) the "relative" depth
    # rule's data-free start repeats layers and loses much of the auxiliary model's accuracy (about 0.23-0.25 on digits,
    # against 0.42-0.50 for the auxiliary model itself); 60 steps of scaler fit on 600 images,
    # templates frozen, no teacher, win it back and more (0.41-0.56 seen over seeds 0-3 and
    # learngenes distilled on one or two threads). A depth-1 target is no such case: its data-free
    # start predicts one class, and 60 steps only flatten the logits (0.10 either way).
    from waveinit.configs import SpawnConfig
    from waveinit.spawning import spawn_state_dict
    from waveinit.tasks import fit_scalers

    lg = load_learngene(learngene_file)
    assert (lg.spec.depth, lg.spec.width, lg.side) == (2, 64, 64)
    data = load_dataset("digits")
    target = target_spec(lg, 4, 64)
    assert (target.depth, target.width, target.image_size, target.num_classes) == (4, 64, 8, 10)
    cpu = torch.device("cpu")

    state, fresh = spawn_state_dict(lg, target, seed=seed, depth_rule="relative")
    assert fresh == set()  # same data: every template comes from the learngene
    free = evaluate(load_state_dict(ViT(target), state), data.test_images, data.test_labels, 256, cpu)

    result = fit_scalers(lg, target, data, SpawnConfig(depth_rule="relative", fit_steps=60, fit_samples=750, seed=seed, fit_patience=0), teacher=None,
                         device="cpu")
    assert result.steps == 60 and result.samples == 600 and result.teacher is None  # 150 of the 750 held out
    assert result.fitted_params == sum(s.numel() for s in result.factors.role_tensors()[1].values())  # scalers only
    # .eval is the returned model's accuracy on the held-out test set
    again = evaluate(result.model, data.test_images, data.test_labels, 256, cpu)
    assert result.eval["samples"] == again["samples"] == len(data.test_labels)
    assert result.eval["accuracy"] == pytest.approx(again["accuracy"], abs=1e-9)

    # a tiny learngene (2 layers of 64, 6 epochs): the fit adds 6-11 points, depending on the
    # thread count the fixture was trained with
    assert result.kept == "fitted" and result.holdout["fitted_loss"] < result.holdout["start_loss"]
    assert result.eval["accuracy"] >= free["accuracy"] + 0.05, (free, result.eval)
    assert result.eval["loss"] < free["loss"] - 0.1, (free, result.eval)

    # the fit started from that data-free state: without data, fit_scalers returns it
    start = fit_scalers(lg, target, None, SpawnConfig(depth_rule="relative", seed=seed), device="cpu")
    assert start.eval is None and start.steps == 0
    for key, value in start.model.state_dict().items():
        np.testing.assert_allclose(value.numpy(), state[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.usefixtures("one_thread")
def test_the_fit_stops_where_its_held_out_loss_stopped_falling(learngene_file):
    # A full fit's held-out losses at each epoch end say where a patience of p epoch ends must
    # stop it (the same seed and schedule: the same steps up to there), and the stopped fit keeps
    # the best epoch end it saw.
    from waveinit.configs import SpawnConfig
    from waveinit.tasks import fit_scalers

    lg, data = load_learngene(learngene_file), load_dataset("digits")
    target = target_spec(lg, 2, 64)
    seen = []

    def watch(progress):
        if progress.event == "epoch":
            seen.append((progress.global_step, progress.eval["loss"]))

    config = SpawnConfig(depth_rule="relative", fit_steps=200, fit_samples=750, lr=0.3, fit_patience=0)
    full = fit_scalers(lg, target, data, config, device="cpu", on_progress=watch)
    assert full.stopped == "fit_steps" and full.steps == 200 and len(seen) == 20
    for patience in (1, 2):
        best, stale, expected = np.inf, 0, None
        for step, loss in seen:
            best, stale = (loss, 0) if loss < best else (best, stale + 1)
            if stale >= patience and step < 200:
                expected = (step, min(loss for s, loss in seen if s <= step))
                break
        assert expected is not None, "the full fit's held-out loss never stalled: the test needs a harder fit"
        stopped = fit_scalers(lg, target, data, replace(config, fit_patience=patience), device="cpu")
        assert (stopped.stopped, stopped.steps) == ("patience", expected[0])
        assert stopped.best_step == max(s for s, loss in seen if loss == expected[1])
        assert "stopped early" in stopped.judgement()
