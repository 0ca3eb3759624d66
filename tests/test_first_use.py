"""What a new user meets: nothing overwritten without --force, a spawn that keeps its learngene's
image size and says what it refreshes, progress lines in logs, --threads, fine-tuning defaults,
a scaler fit that never ends worse than it started, exports with labels and preprocessing, and
one-line answers to the usual slips."""

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from helpers import ENV, run_python, wave
from waveinit import ViTSpec, learngene_from_weights, load_model, save_learngene
from waveinit.backends.torch import ViT, dense_numpy
from waveinit.cli.main import app
from waveinit.io.datasets import load_dataset
from waveinit.io.progress import ProgressLines
from waveinit.training.engine import Progress

runner = CliRunner()


def invoke(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


# ----------------------------------------------------------------------------- overwrites


def test_an_existing_output_is_refused_in_one_line_and_kept(tmp_path, learngene_file):
    out = tmp_path / "model.safetensors"
    invoke("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--no-fit", "--out", out)
    before = out.read_bytes()
    result = invoke("spawn", "--learngene", learngene_file, "--depth", 2, "--width", 64, "--no-fit", "--out", out, code=2)
    assert result.output.strip().splitlines() == [f"error: {out} exists: pass --force to replace it, or choose another --out"]
    assert out.read_bytes() == before
    invoke("spawn", "--learngene", learngene_file, "--depth", 2, "--width", 64, "--no-fit", "--out", out, "--force")
    assert load_model(out).spec.depth == 2

    folder = tmp_path / "exported"
    invoke("export", out, "--out", folder)
    result = invoke("export", out, "--out", folder, code=2)
    assert "exists: pass --force" in result.output
    invoke("export", out, "--out", folder, "--force")

    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(b"the user's teacher")
    for command in (["train", "--epochs", "1"], ["distill", "--teacher", out, "--epochs", "1"]):
        result = invoke(*command, "--out", trained, code=2)
        assert "exists: pass --force" in result.output
    assert trained.read_bytes() == b"the user's teacher"


def test_spawn_names_its_output_after_the_learngene_and_size(tmp_path, learngene_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other-gene.safetensors"
    other.write_bytes(learngene_file.read_bytes())
    invoke("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--no-fit")
    invoke("spawn", "--learngene", other, "--depth", 1, "--width", 64, "--no-fit")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["learngene_d1_w64.safetensors", "other-gene_d1_w64.safetensors"]


def test_a_finished_run_leaves_no_checkpoint(tmp_path):
    out = tmp_path / "vit.safetensors"
    invoke("train", "--depth", 1, "--width", 64, "--epochs", 1, "--subset", 128, "--out", out)
    assert out.is_file() and not (tmp_path / "vit.safetensors.ckpt").exists()


# ----------------------------------------------------------------------------- spawn keeps its learngene's shape


def _folder(root, side: int, classes=("cat", "dog"), per_class: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def rgb_gene(tmp_path_factory):
    """A learngene of 3x16x16 images and 2 classes (nearest-Kronecker factors of a random ViT),
    recorded as made on a folder, from an ancestry that is not on this machine."""
    folder = tmp_path_factory.mktemp("gene")
    spec = ViTSpec(depth=2, width=64, heads=1, patch_size=4, image_size=16, channels=3, num_classes=2)
    torch.manual_seed(0)
    gene = learngene_from_weights(dense_numpy(ViT(spec).state_dict()), spec, 64, 2)
    images = _folder(folder / "images", 12)
    gene = dataclasses.replace(gene, provenance={"data": f"folder:{images}", "teacher": str(folder / "gone.safetensors")})
    save_learngene(folder / "gene.safetensors", gene)
    return folder / "gene.safetensors", images


def test_spawn_on_a_folder_keeps_the_learngenes_image_size(rgb_gene, tmp_path):
    gene, images = rgb_gene  # images are 12x12, the learngene 16x16
    result = invoke("spawn", "--learngene", gene, "--depth", 1, "--width", 64, "--no-fit", "--out", tmp_path / "kept.safetensors")
    assert load_model(tmp_path / "kept.safetensors").spec.image_size == 16
    assert "starting " not in result.output and "roles started afresh │ none" in result.output

    result = invoke("spawn", "--learngene", gene, "--depth", 1, "--width", 64, "--no-fit", "--image-size", 12,
                    "--out", tmp_path / "resized.safetensors")
    assert load_model(tmp_path / "resized.safetensors").spec.image_size == 12
    # only the position embedding follows the image size here: the patches keep their shape
    assert "starting pos_embed afresh: the data's 12x12 images differ from the learngene's 16x16" in result.output


def test_spawn_says_why_it_fits_without_a_teacher(rgb_gene, tmp_path):
    gene, _ = rgb_gene
    result = invoke("spawn", "--learngene", gene, "--depth", 1, "--width", 64, "--fit-steps", 2, "--fit-samples", 10,
                    "--out", tmp_path / "m.safetensors")
    assert "fitting without a teacher (cross-entropy on labels only): no teacher was given (the default)" in result.output
    assert load_model(tmp_path / "m.safetensors").provenance["notes"]
    result = invoke("spawn", "--learngene", gene, "--depth", 1, "--width", 64, "--fit-steps", 2, "--fit-samples", 10,
                    "--teacher", "recorded", "--out", tmp_path / "r.safetensors", code=2)
    assert "is not on this machine; pass --teacher with a copy" in result.output and not (tmp_path / "r.safetensors").exists()


# ----------------------------------------------------------------------------- progress


def _report(step: int, total: int = 10, event: str = "step", epoch: int = 0, epochs: int = 2) -> Progress:
    return Progress(epoch=epoch, epochs=epochs, step=step, steps_per_epoch=5, global_step=step, total_steps=total, loss=0.5, lr=1e-3,
                    images_per_second=100.0, seconds_elapsed=1.0, seconds_left=2.0, event=event)


def test_progress_lines_come_per_interval_and_at_the_end(capsys):
    lines = ProgressLines("fit", every=3600, file=sys.stdout, count="steps")
    for step in range(1, 11):
        lines(_report(step, event="epoch" if step in (5, 10) else "step"))
    out = capsys.readouterr().out.splitlines()
    # the first report (nothing printed yet) and the last step; epoch ends of a fit counted in steps add nothing
    assert [line.split(",")[0] for line in out] == ["fit: step 1/10 (10%)", "fit: step 10/10 (100%)"]
    assert "epoch" not in " ".join(out)

    lines = ProgressLines("train", every=3600, file=sys.stdout)
    lines(_report(1))
    lines(_report(5, event="epoch"))
    assert capsys.readouterr().out.splitlines()[-1].startswith("train: epoch 1/2, step 5/10 (50%)")


def test_spawn_in_a_log_prints_progress_lines_counting_steps(learngene_file, tmp_path):
    run = wave("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--fit-steps", 150, "--fit-patience", 0,
               "--out", tmp_path / "m.safetensors",
               env={**ENV, "WAVE_PROGRESS_SECONDS": "0"})
    assert run.returncode == 0, run.stderr
    steps = [line for line in run.stderr.splitlines() if line.startswith("fit scalers: step ")]
    assert len(steps) >= 2 and steps[-1].startswith("fit scalers: step 150/150 (100%)")
    assert not any(line.startswith("fit scalers: epoch") for line in run.stderr.splitlines())


# ----------------------------------------------------------------------------- threads, defaults


def test_threads_are_set_and_recorded(learngene_file, tmp_path):
    threads = torch.get_num_threads()
    try:
        out = tmp_path / "m.safetensors"
        invoke("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--fit-steps", 2, "--threads", 1, "--out", out)
        assert load_model(out).provenance["threads"] == 1
        result = invoke("eval", out, "--threads", 1, "--json")
        assert json.loads(result.stdout)["threads"] == 1
        invoke("train", "--depth", 1, "--width", 64, "--epochs", 1, "--subset", 64, "--threads", 1, "--out", tmp_path / "t.safetensors")
        assert load_model(tmp_path / "t.safetensors").provenance["threads"] == 1
    finally:
        torch.set_num_threads(threads)


def test_train_from_init_uses_the_inherited_start_defaults(learngene_file, tmp_path):
    from waveinit.configs import COMMAND_FINETUNE

    spawned = tmp_path / "spawned.safetensors"
    invoke("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--no-fit", "--out", spawned)
    invoke("train", "--init", spawned, "--epochs", 1, "--subset", 64, "--out", tmp_path / "tuned.safetensors")
    config = load_model(tmp_path / "tuned.safetensors").provenance["config"]
    assert config["lr"] == COMMAND_FINETUNE.lr == 3e-4
    help_text = invoke("train", "--help").output
    assert "from --init" in help_text


# ----------------------------------------------------------------------------- the fit keeps the better


def test_a_fit_that_hurts_keeps_the_data_free_start(learngene_file, tmp_path):
    free, wrecked = tmp_path / "free.safetensors", tmp_path / "wrecked.safetensors"
    invoke("spawn", "--learngene", learngene_file, "--depth", 2, "--width", 64, "--no-fit", "--out", free)
    result = invoke("spawn", "--learngene", learngene_file, "--depth", 2, "--width", 64, "--fit-steps", 10, "--lr", 20, "--out", wrecked)
    assert "kept the data-free start, not the fit" in result.output
    p = load_model(wrecked).provenance
    assert p["fit_kept"] == "start" and p["fit_holdout"]["start_loss"] < p["fit_holdout"]["fitted_loss"]
    a, b = load_model(free).state_dict, load_model(wrecked).state_dict
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_a_fit_that_helps_is_kept(learngene_file, tmp_path):
    out = tmp_path / "m.safetensors"
    invoke("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--fit-steps", 30, "--out", out)
    p = load_model(out).provenance
    h = p["fit_holdout"]
    assert h["samples"] == min(1500, 1438) // 5 and p["fit_samples"] == min(1500, 1438) - h["samples"]
    assert p["fit_kept"] == ("fitted" if h["fitted_loss"] < h["start_loss"] else "start")


# ----------------------------------------------------------------------------- exports


def test_hf_export_carries_class_names_and_the_preprocessing(tmp_path):
    from transformers import AutoImageProcessor, ViTForImageClassification

    images = _folder(tmp_path / "pets", 16, classes=("cat", "dog", "hamster"), per_class=6)
    model = tmp_path / "pets.safetensors"
    invoke("train", "--data", f"folder:{images}", "--depth", 1, "--width", 64, "--epochs", 1, "--out", model)
    assert load_model(model).provenance["labels"] == ["cat", "dog", "hamster"]
    invoke("export", model, "--out", tmp_path / "pets-hf")

    hf = ViTForImageClassification.from_pretrained(tmp_path / "pets-hf").eval()
    assert hf.config.id2label == {0: "cat", 1: "dog", 2: "hamster"}
    processor = AutoImageProcessor.from_pretrained(tmp_path / "pets-hf")
    files = sorted((images / "dog").iterdir())[:3]
    pixels = processor(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
    ours = load_dataset(f"folder:{images}").train_images
    index = {p: i for i, p in enumerate(ours.paths)}
    expected = ours[np.array([index[str(f)] for f in files])]
    np.testing.assert_allclose(pixels.numpy(), expected, atol=1e-6)  # the same pixels as training saw
    vit = ViT(load_model(model).spec)
    vit.load_state_dict({k: torch.from_numpy(v) for k, v in load_model(model).state_dict.items()})
    with torch.no_grad():
        np.testing.assert_allclose(hf(pixel_values=pixels).logits.numpy(), vit(pixels).numpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- slips


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "fashon-mnist"], "error: unknown dataset 'fashon-mnist': did you mean fashion-mnist?"),
    (["eval", "nothing.safetensors", "--data", "digts"], "error: unknown dataset 'digts': did you mean digits?"),
    (["distill", "--teacher", "nothing.safetensors", "--data", "fashon-mnist"], "error: unknown dataset 'fashon-mnist': did you mean"),
])
def test_a_misspelt_dataset_gets_a_suggestion_before_any_work(args, message):
    result = invoke(*args, code=2)
    assert result.output.strip().splitlines()[-1].startswith(message)


def test_a_bare_folder_is_pointed_to_folder_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "images10", 8)
    result = invoke("train", "--data", "images10", code=2)
    assert "for the folder images10, pass folder:images10" in result.output


def test_data_recorded_in_a_learngene_that_does_not_load_says_so(rgb_gene, tmp_path):
    from waveinit import load_learngene

    gene, _ = rgb_gene
    moved = load_learngene(gene)
    save_learngene(tmp_path / "moved.safetensors", dataclasses.replace(moved, provenance={**moved.provenance, "data": "folder:no/such/dir"}))
    result = invoke("spawn", "--learngene", tmp_path / "moved.safetensors", "--depth", 1, "--width", 64, "--out", tmp_path / "m.safetensors",
                    code=2)
    assert "(the data recorded in the learngene" in result.output and "pass --data" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_a_missing_gpu_is_an_error_even_without_a_fit(learngene_file, tmp_path):
    result = invoke("spawn", "--learngene", learngene_file, "--depth", 1, "--width", 64, "--no-fit", "--device", "cuda",
                    "--out", tmp_path / "m.safetensors", code=2)
    assert "PyTorch sees no CUDA GPU" in result.output and not (tmp_path / "m.safetensors").exists()


def test_version_option():
    assert invoke("--version").output.strip().startswith("waveinit ")


def test_help_groups_the_options():
    text = invoke("distill", "--help").output
    for panel in ("Data", "Model", "Training", "Distillation", "Output and runtime"):
        assert f"─ {panel} " in text


def test_without_the_cli_extra_the_command_says_what_to_install():
    # typer made unimportable, as in an install of the core alone
    run = run_python("-c", "import sys; sys.modules['typer'] = None; sys.argv = ['wave', 'distill']; "
                           "from waveinit.cli import main; main()")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: the wave command needs typer, which is not installed: pip install 'waveinit[cli]'"
