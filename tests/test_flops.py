"""FLOPs of a ViT from its spec (`waveinit.flops`), against a hand count and torch's FlopCounterMode."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from waveinit.backends.torch import ViT
from waveinit.flops import forward_flops, train_flops
from waveinit.spec import ViTSpec


def test_forward_flops_of_a_tiny_vit_by_hand():
    # 28x28 images, patch 14: 4 patches + the class token = 5 tokens; width 8, MLP 32, 3 classes.
    spec = ViTSpec(depth=2, width=8, heads=2, patch_size=14, image_size=28, channels=1, num_classes=3)
    patch = 2 * 4 * 196 * 8  # 4 patches of 196 pixels onto 8 channels
    block = 2 * 5 * 8 * 24 + 2 * 2 * 5 * 5 * 8 + 2 * 5 * 8 * 8 + 2 * (2 * 5 * 8 * 32)  # qkv, two attention products, proj, fc1 + fc2
    head = 2 * 8 * 3
    assert (patch, block, head) == (12_544, 8_480, 48)
    assert forward_flops(spec) == patch + 2 * block + head == 29_552
    assert train_flops(spec) == 3 * forward_flops(spec)


@pytest.mark.parametrize("spec", [
    ViTSpec(depth=2, width=64, heads=1, patch_size=7, image_size=28, channels=1, num_classes=10),
    ViTSpec(depth=3, width=192, heads=3, patch_size=4, image_size=32, channels=3, num_classes=100),
    ViTSpec(depth=1, width=128, heads=2, patch_size=8, image_size=32, channels=3, num_classes=10, dist_token=True, head_dist=True),
])
def test_forward_flops_match_torchs_counter_plus_attention(spec):
    # FlopCounterMode counts the convolution and the linear layers of our ViT; its attention runs
    # in scaled_dot_product_attention, whose two products (4 T^2 w a block) it leaves out on the CPU.
    model = ViT(spec).eval()
    images = torch.zeros(2, spec.channels, spec.image_size, spec.image_size)
    with FlopCounterMode(display=False) as counter:
        model(images)
    counted = counter.get_total_flops() / 2
    attention = spec.depth * 4 * spec.tokens**2 * spec.width
    assert forward_flops(spec) == counted + attention
