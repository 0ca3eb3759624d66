"""Image folders read lazily from disk (`folder:DIR`, `io.images.ImageFiles`): mixed sizes and
formats brought to one image size, augmentation drawn from (seed, epoch, index), decoding in
DataLoader workers without changing a number, exact mid-epoch resume, disjoint shards under
torchrun, and one-line errors for bad images and folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers import run_python, wave
from waveinit.configs import TrainConfig
from waveinit.errors import WaveError
from waveinit.io.datasets import load_dataset
from waveinit.io.images import ImageFiles, centre_crop, decode
from waveinit.training.engine import train

pytestmark = pytest.mark.usefixtures("one_thread")
COLOURS = {"red": 0, "green": 1, "blue": 2}


def make_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> None:
    """Class folders of RGB images of random sizes (20-59 px a side), JPEG and PNG in turn; each
    class is one dominant colour, so that a tiny ViT can learn it."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for name, channel in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = (int(v) for v in rng.integers(20, 60, 2))
                x = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
                x[..., channel] += 150
                Image.fromarray(x).save(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    make_folder(root, {"train": 30, "val": 8})
    return root


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.GELU(), nn.Linear(32, 3))


def state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- the files themselves


def test_a_folder_stays_on_disk_and_looks_like_an_array(folder):
    ds = load_dataset(f"folder:{folder}", image_size=16)
    assert isinstance(ds.train_images, ImageFiles) and ds.train_images.shape == (90, 3, 16, 16) and ds.image_size == 16
    assert ds.num_classes == 3 and len(ds.test_labels) == 24 and np.bincount(ds.train_labels).tolist() == [30, 30, 30]
    view = ds.train_images[np.array([5, 1, 60])]
    assert isinstance(view, ImageFiles) and len(view) == 3
    decoded = np.asarray(view)
    assert decoded.shape == (3, 3, 16, 16) and decoded.dtype == np.float32 and -1 <= decoded.min() and decoded.max() <= 1
    np.testing.assert_array_equal(decoded[2], ds.train_images[60])
    np.testing.assert_array_equal(np.asarray(ds.train_images[10:20:3]), ds.train_images.load([10, 13, 16, 19]))
    assert ds.train_images[4, 0].shape == (16, 16)


def test_decoding_centre_crops_resizes_and_keeps_an_exact_size_exact(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # a white central square between black sides
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert centre_crop((30, 10)) == (10, 0, 20, 10)
    x = decode(str(tmp_path / "wide.png"), 3, 5)
    # only the white centre is left (bilinear antialiasing blends a little black into the edge columns)
    np.testing.assert_allclose(x[:, :, 1:4], np.ones((3, 5, 3)), atol=1e-6)
    assert x[:, :, [0, 4]].min() > 0.5
    exact = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(exact).save(tmp_path / "exact.png")
    np.testing.assert_array_equal(decode(str(tmp_path / "exact.png"), 1, 8)[0], exact / np.float32(127.5) - 1)


def test_augmentation_is_drawn_from_seed_epoch_and_index(folder):
    ds = load_dataset(f"folder:{folder}", image_size=16, augment=True)
    images = ds.train_images
    assert images.augment and not ds.test_images.augment  # the test set is never augmented
    a, b = images.load([0, 1, 2], epoch=3, seed=7), images.load([0, 1, 2], epoch=3, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, images.load([0, 1, 2], epoch=4, seed=7))
    assert not np.array_equal(a, images.load([0, 1, 2], epoch=3, seed=8))
    np.testing.assert_array_equal(a[1], images.load([7, 1], epoch=3, seed=7)[1])  # an image's draw ignores its batch


# ----------------------------------------------------------------------------- the engine on files


def test_workers_change_no_number_and_in_memory_arrays_give_the_same_result(folder):
    ds = load_dataset(f"folder:{folder}", image_size=16)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-2)
    results = []
    for images, workers in ((ds.train_images, 0), (ds.train_images, 2), (np.asarray(ds.train_images), 0)):
        model = tiny_model()
        train(model, images, ds.train_labels, config, device="cpu", workers=workers, eval_data=(ds.test_images, ds.test_labels))
        results.append(state(model))
    for other in results[1:]:
        for key in results[0]:
            np.testing.assert_array_equal(other[key], results[0][key], err_msg=key)


def test_mid_epoch_resume_on_files_is_exact(folder, tmp_path):
    ds = load_dataset(f"folder:{folder}", image_size=16, augment=True)
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-2, checkpoint_every=3)
    reference = tiny_model()
    train(reference, ds.train_images, ds.train_labels, config, device="cpu", workers=2)

    def crash_at_step_8(logits, images, labels, indices, calls=[0]):  # noqa: B006 (a counter across calls)
        calls[0] += 1
        if calls[0] == 8:
            raise RuntimeError("simulated crash")
        return nn.functional.cross_entropy(logits, labels, reduction="none")

    path = tmp_path / "run.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_model(), ds.train_images, ds.train_labels, config, device="cpu", workers=2, checkpoint=path, loss_fn=crash_at_step_8)
    resumed = tiny_model(seed=1)  # other initial weights: everything must come from the checkpoint
    result = train(resumed, ds.train_images, ds.train_labels, config, device="cpu", workers=1, checkpoint=path, resume=True)
    assert result.resumed_from == 6  # the checkpoint after step 6, mid-epoch 1 (6 steps an epoch)
    for key, value in state(reference).items():
        np.testing.assert_array_equal(state(resumed)[key], value, err_msg=key)


DISTRIBUTED_SCRIPT = """
import json, os, sys
import numpy as np, torch
from torch import nn
from waveinit.configs import TrainConfig
from waveinit.io.datasets import load_dataset
from waveinit.io.images import ImageFiles
from waveinit.training.distributed import close_distributed
from waveinit.training.engine import train

class Recording(ImageFiles):
    def load(self, indices, epoch=0, seed=0):
        with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
            f.write(json.dumps({"epoch": epoch, "indices": [int(i) for i in indices]}) + "\\n")
        return super().load(indices, epoch, seed)

ds = load_dataset("folder:" + sys.argv[1], image_size=16)
images = Recording(ds.train_images.paths, ds.train_images.channels, ds.train_images.size, True)
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
train(model, images, ds.train_labels, TrainConfig(epochs=2, batch_size=16, lr=1e-2), device="cpu")
close_distributed()
"""


@pytest.mark.slow
def test_under_torchrun_ranks_read_disjoint_shards_that_make_up_each_epoch(folder, tmp_path):
    (tmp_path / "dist.py").write_text(DISTRIBUTED_SCRIPT)
    done = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", tmp_path / "dist.py", folder, tmp_path,
                      timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    read = {}
    for rank in (0, 1):
        for line in (tmp_path / f"rank{rank}.jsonl").read_text().splitlines():
            record = json.loads(line)
            read.setdefault((rank, record["epoch"]), []).extend(record["indices"])
    for epoch in (0, 1):
        zero, one = read[(0, epoch)], read[(1, epoch)]
        assert not set(zero) & set(one)  # each image read by one rank only
        assert sorted(zero + one) == list(range(90))  # and every image once per epoch


@pytest.mark.slow
def test_train_and_eval_a_folder_of_mixed_sizes_from_the_command_line(folder, tmp_path):
    out = tmp_path / "m.safetensors"
    trained = wave("train", "--data", f"folder:{folder}", "--image-size", "32", "--depth", "1", "--width", "64", "--epochs", "3",
                   "--lr", "3e-3", "--workers", "2", "--augment", "--out", out, "--json", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["spec"]["image_size"] == 32 and summary["spec"]["channels"] == 3 and summary["spec"]["patch_size"] == 8
    scored = wave("eval", out, "--data", f"folder:{folder}", "--workers", "1", "--json", cwd=tmp_path)  # at the model's size
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["samples"] == 24 and report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert report["accuracy"] > 0.5  # three colours: far above chance (1/3)


# ----------------------------------------------------------------------------- bad input


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


def test_bad_images_are_named_or_skipped_and_counted(folder, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    bad = root / "train" / "red" / "000.png"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated: its header still reads
    ds = load_dataset(f"folder:{root}", image_size=16)
    with pytest.raises(WaveError) as e:
        np.asarray(ds.train_images)
    assert str(bad) in one_line(e) and "--skip-bad-images" in str(e.value)
    with pytest.raises(WaveError) as e:  # decoded in a worker: the same one line
        train(tiny_model(), ds.train_images, ds.train_labels, TrainConfig(epochs=1, batch_size=16), device="cpu", workers=1)
    assert str(bad) in one_line(e)
    (root / "val" / "blue" / "notes.jpg").write_text("not an image")
    skipped = load_dataset(f"folder:{root}", image_size=16, skip_bad_images=True)
    assert skipped.skipped_images == 2 and len(skipped.train_labels) == 89 and len(skipped.test_labels) == 24
    with pytest.raises(WaveError) as e:
        load_dataset(f"folder:{root}", image_size=16)
    assert "notes.jpg" in one_line(e)


@pytest.mark.parametrize("problem, message", [
    ("empty class", "holds no images"),
    ("val classes", "have no train/ folder"),
    ("train classes", "have no val/ folder"),
    ("mixed sizes", "pass --image-size"),
])
def test_bad_folders_are_one_line(tmp_path, problem, message):
    make_folder(tmp_path, {"train": 2, "val": 1})
    if problem == "empty class":
        (tmp_path / "train" / "grey").mkdir()
    elif problem == "val classes":
        shutil.copytree(tmp_path / "val" / "red", tmp_path / "val" / "pink")
    elif problem == "train classes":
        shutil.rmtree(tmp_path / "val" / "red")
    with pytest.raises(WaveError) as e:
        load_dataset(f"folder:{tmp_path}")
    assert message in one_line(e)


def test_options_for_folders_are_refused_elsewhere_and_patch_sizes_checked(folder, tmp_path):
    with pytest.raises(WaveError, match="--image-size applies to image folders"):
        load_dataset("digits", image_size=32)
    result = wave("train", "--data", f"folder:{folder}", "--image-size", "30", "--patch", "8", "--out", tmp_path / "m.safetensors",
                  cwd=tmp_path)
    assert result.returncode == 2 and "patch size 8 does not divide" in result.stderr and not (tmp_path / "m.safetensors").exists()


@pytest.mark.slow
def test_a_224_px_transformers_vit_distils_on_a_folder_at_its_own_image_size(folder, tmp_path):
    """The Hub's usual shape (224 px, patch 16) and eps (1e-12), small in width and depth: the
    folder's mixed-size images come at the teacher's 224 px without being told."""
    import transformers

    from waveinit import load_learngene

    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=256,
                                    image_size=224, patch_size=16, num_channels=3, num_labels=3)
    assert config.layer_norm_eps == 1e-12
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    out = tmp_path / "lg.safetensors"
    result = wave("distill", "--teacher", tmp_path / "hf", "--data", f"folder:{folder}", "--templates", "1", "--epochs", "1",
                  "--batch-size", "16", "--workers", "1", "--out", out, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gene = load_learngene(out)
    assert gene.spec.image_size == 224 and gene.spec.patch_size == 16 and gene.spec.layer_norm_eps == 1e-12
    assert json.loads(result.stdout)["teacher_test_accuracy"] >= 0


def test_masks_and_empty_test_splits(folder, tmp_path):
    ds = load_dataset(f"folder:{folder}", image_size=16)
    mask = ds.test_labels == 2
    picked = ds.test_images[mask]
    assert len(picked) == mask.sum() == 8
    np.testing.assert_array_equal(np.asarray(picked), np.asarray(ds.test_images)[mask])
    with pytest.raises(WaveError, match="boolean mask of shape"):
        ds.test_images[mask[:3]]
    root = tmp_path / "tiny"
    make_folder(root, {"flat": 1})
    with pytest.raises(WaveError, match="no readable test image is left: every class needs 2 or more images"):
        load_dataset(f"folder:{root / 'flat'}", image_size=16)


@pytest.mark.slow
def test_a_bad_image_under_torchrun_stops_every_rank_at_once(folder, tmp_path):
    """Only the rank whose shard holds the truncated image sees it: it must not wait at a barrier
    that its peer, blocked in the gradient all-reduce, never reaches."""
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    bad = root / "train" / "green" / "004.png"
    bad.write_bytes(bad.read_bytes()[:100])
    done = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "waveinit.cli", "train",
                      "--data", f"folder:{root}", "--image-size", "16", "--depth", "1", "--width", "64", "--epochs", "2",
                      "--device", "cpu", "--out", tmp_path / "m.safetensors", cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert f"cannot read image {bad}" in done.stderr
    assert not (tmp_path / "m.safetensors").exists()
