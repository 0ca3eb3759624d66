"""Compute in floating-point operations: what a ViT of a given spec costs per image.

Counted as a multiply and an add per multiply-accumulate (2 FLOPs), for the matrix products
only: the patch convolution, the linear layers, attention's two products (queries x keys,
weights x values) and the classifier. LayerNorm, softmax, GELU, biases and residual additions
are left out, as in the usual ViT counts (DeiT's and timm's tables, torch's FlopCounterMode).
A training step's backward pass costs twice its forward pass (a gradient for the inputs and
one for the weights), so one trained image costs 3x its forward FLOPs; a teacher that only
scores images costs its forward FLOPs.
"""

from __future__ import annotations

from .spec import ViTSpec

BACKWARD_FACTOR = 2  # backward FLOPs per forward FLOP


def forward_flops(spec: ViTSpec) -> int:
    """FLOPs of one image through the ViT `spec`'s forward pass."""
    t, w = spec.tokens, spec.width
    patch = 2 * spec.num_patches * spec.patch_dim * w
    block = (2 * t * w * 3 * w  # qkv
             + 2 * t * t * w  # queries x keys, all heads
             + 2 * t * t * w  # attention weights x values
             + 2 * t * w * w  # output projection
             + 2 * 2 * t * w * spec.mlp_width)  # fc1 and fc2
    heads = 2 if spec.head_dist else 1
    return patch + spec.depth * block + heads * 2 * w * spec.num_classes


def train_flops(spec: ViTSpec) -> int:
    """FLOPs of one image through a training step (forward and backward) of `spec`."""
    return (1 + BACKWARD_FACTOR) * forward_flops(spec)
