"""The DeiT recipe's parts against timm's own implementations on the same draws: mixup and
cutmix, random erasing, label smoothing, drop-path, the weights' moving average and
RandAugment; and a run with all of them on resumes bit-identical."""

from __future__ import annotations

import random

import numpy as np
import pytest
import timm
import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils.model_ema import ModelEmaV3

from waveinit import ViTSpec
from waveinit.backends.torch import ViT, load_state_dict
from waveinit.configs import TrainConfig
from waveinit.io.datasets import load_dataset
from waveinit.training.engine import train
from waveinit.training.objectives import cross_entropy_loss
from waveinit.training.recipe import ModelEma, mix_batch, random_erase


def batch(seed: int = 0, b: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 16, 16, generator=g), torch.randint(0, 10, (b,), generator=g)


@pytest.mark.parametrize("mixup, cutmix, prob, switch", [(0.8, 0.0, 1.0, 0.5), (0.0, 1.0, 1.0, 0.5), (0.8, 1.0, 1.0, 0.5), (0.8, 1.0, 0.5, 0.3)])
def test_mixup_and_cutmix_are_timms_on_the_same_draws(mixup, cutmix, prob, switch):
    mixing = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch, label_smoothing=0.1, num_classes=10)
    for seed in range(20):
        x, y = batch(seed)
        np.random.seed(seed)
        theirs, target = mixing(x.clone(), y)
        ours, lam = mix_batch(x, np.random.RandomState(seed), mixup, cutmix, prob, switch)
        assert torch.equal(ours, theirs), seed
        logits = torch.randn(len(y), 10, generator=torch.Generator().manual_seed(seed))
        mine = lam * cross_entropy_loss(logits, x, y, y, 0.1) + (1 - lam) * cross_entropy_loss(logits, x, y.flip(0), y, 0.1)
        torch.testing.assert_close(mine.mean(), SoftTargetCrossEntropy()(logits, target), rtol=1e-5, atol=1e-6)


def test_random_erasing_is_timms_on_the_same_draws():
    erasing = RandomErasing(probability=0.5, mode="pixel", device="cpu")
    erased = 0
    for seed in range(20):
        x, _ = batch(seed)
        random.seed(seed)
        torch.manual_seed(seed)
        theirs = erasing(x.clone())
        torch.manual_seed(seed)
        ours = random_erase(x, random.Random(seed), 0.5)
        assert torch.equal(ours, theirs), seed
        erased += int((ours != x).flatten(1).any(1).sum())
    assert 0.3 * 160 < erased < 0.7 * 160  # about half of the 160 images


def test_label_smoothing_is_timms():
    logits, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    torch.testing.assert_close(cross_entropy_loss(logits, logits, y, y, 0.1).mean(), LabelSmoothingCrossEntropy(0.1)(logits, y))


def test_drop_path_is_timms_on_the_same_draws():
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, embed_dim=64, num_heads=2, patch_size=4, img_size=16,
                               num_classes=10, drop_path_rate=0.3).train()
    spec = ViTSpec(depth=3, width=64, heads=2, patch_size=4, image_size=16, channels=3, num_classes=10)
    ours = load_state_dict(ViT(spec), theirs.state_dict()).train()
    ours.set_drop_path(0.3)
    assert [b.drop_prob for b in ours.blocks] == pytest.approx([getattr(m.drop_path1, "drop_prob", 0.0) for m in theirs.blocks])  # block 0: Identity
    x, _ = batch(0)
    for seed in range(5):
        torch.manual_seed(seed)
        expected = theirs(x)
        torch.manual_seed(seed)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)  # nothing dropped in evaluation


def test_the_moving_average_is_timms():
    model = torch.nn.Linear(4, 3)
    ours, theirs = ModelEma(model, 0.9), ModelEmaV3(model, decay=0.9)
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step + 1))
        ours.update(model)
        theirs.update(model)
    for key, value in theirs.module.state_dict().items():
        torch.testing.assert_close(ours.state[key], value)


def test_rand_augment_is_timms_transform_drawn_from_seed_epoch_and_image(tmp_path):
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    from waveinit.io.images import apply_auto_augment

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    policy = "rand-m9-mstd0.5-inc1"
    transform = rand_augment_transform(policy, {"translate_const": int(32 * 0.45), "img_mean": (128, 128, 128)})
    for seed in range(5):
        random.seed(seed)
        np.random.seed(seed)
        assert np.array_equal(np.asarray(apply_auto_augment(img, policy, 32, seed)), np.asarray(transform(img)))
    # through the folder pipeline: the same (seed, epoch, image) gives the same pixels, another epoch others
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    files = load_dataset(f"folder:{tmp_path}", augment=True, auto_augment=policy).train_images
    assert np.array_equal(files.load([0, 1], epoch=1, seed=3), files.load([0, 1], epoch=1, seed=3))
    assert not np.array_equal(files.load([0, 1], epoch=1, seed=3), files.load([0, 1], epoch=2, seed=3))


def test_a_run_with_the_whole_recipe_resumes_bit_identical(tmp_path):
    digits = load_dataset("digits", subset=512)
    spec = ViTSpec(depth=2, width=64, patch_size=2, image_size=8, channels=1, num_classes=10)
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-3, checkpoint_every=3, smoothing=0.1, mixup=0.8, cutmix=1.0, reprob=0.25,
                         drop_path=0.1, model_ema=True, model_ema_decay=0.9)

    def run(checkpoint, on_progress=None, resume=False):
        torch.manual_seed(0)
        model = ViT(spec)
        result = train(model, digits.train_images, digits.train_labels, config, device="cpu", checkpoint=checkpoint, resume=resume,
                       on_progress=on_progress, eval_data=(digits.test_images, digits.test_labels))
        return model, result

    reference, expected = run(tmp_path / "a.ckpt")

    class Stop(Exception):
        pass

    def stop(progress):
        if progress.event == "checkpoint" and progress.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(tmp_path / "b.ckpt", stop)
    resumed, result = run(tmp_path / "b.ckpt", resume=True)
    assert result.resumed_from is not None
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    for key, value in expected.ema.items():
        assert torch.equal(result.ema[key], value), key
    assert result.history[-1]["ema_eval"] == expected.history[-1]["ema_eval"]
