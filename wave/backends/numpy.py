"""The NumPy reference: slow, obvious, and the oracle every faster path is tested against.

`state_dict` builds each weight with a plain loop over `np.kron`, in either Kronecker order; `forward` is a plain
pre-LayerNorm ViT (timm's layout and key names) in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.special import erf

from ..keys import split_key, state_dict_keys
from ..kron import check_order
from ..learngene import check_shapes
from ..spec import ROLES_BY_NAME, ViTSpec


def kron_sum(scalers: np.ndarray, templates: np.ndarray, order: str = "st") -> np.ndarray:
    """sum_t np.kron(scalers[t], templates[t]): (N, a[, b]) x (N, p[, q]) -> (a*p[, b*q]);
    order "ts": sum_t np.kron(templates[t], scalers[t]) -> (p*a[, q*b])."""
    pairs = [(scalers[t], templates[t]) if check_order(order) == "st" else (templates[t], scalers[t]) for t in range(templates.shape[0])]
    return sum(np.kron(left, right) for left, right in pairs)


def state_dict(spec: ViTSpec, side: int, templates: Mapping[str, np.ndarray], scalers: Mapping[str, np.ndarray],
               order: str = "st") -> dict[str, np.ndarray]:
    """The dense ViT state dict (timm keys) that the templates and scalers describe, each weight
    a sum of Kronecker products in `order` ("st": kron(S, T); "ts": kron(T, S))."""
    check_shapes(spec, side, templates, scalers)
    out = {}
    for key in state_dict_keys(spec):
        name, layer = split_key(key)
        layer_scalers = scalers[name] if layer is None else scalers[name][layer]
        out[key] = kron_sum(np.asarray(layer_scalers), np.asarray(templates[name]), order).reshape(ROLES_BY_NAME[name].param_shape(spec))
    return out


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """(B, C, H, W) -> (B, H/P * W/P, C*P*P): patches in row-major order, each flattened as a
    convolution kernel (w, C, P, P) is, so `patches @ kernel.reshape(w, -1).T` is the conv."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)  # biased, as nn.LayerNorm
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))  # exact GELU, as nn.GELU()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(x: np.ndarray, sd: Mapping[str, np.ndarray], prefix: str, heads: int) -> np.ndarray:
    b, t, d = x.shape
    qkv = x @ sd[prefix + "qkv.weight"].T + sd[prefix + "qkv.bias"]  # (B, T, 3D)
    qkv = qkv.reshape(b, t, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads))  # (B, H, T, T)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)  # (B, T, D)
    return out @ sd[prefix + "proj.weight"].T + sd[prefix + "proj.bias"]


def mlp(x: np.ndarray, sd: Mapping[str, np.ndarray], prefix: str) -> np.ndarray:
    hidden = gelu(x @ sd[prefix + "fc1.weight"].T + sd[prefix + "fc1.bias"])  # (B, T, r*D)
    return hidden @ sd[prefix + "fc2.weight"].T + sd[prefix + "fc2.bias"]


def forward(sd: Mapping[str, np.ndarray], spec: ViTSpec, images: np.ndarray) -> np.ndarray:
    """Logits (B, classes) of the ViT with state dict `sd` for images (B, C, H, W), in float64."""
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    images = np.asarray(images, dtype=np.float64)
    kernel = sd["patch_embed.proj.weight"].reshape(spec.width, -1)  # (D, C*P*P)
    x = patchify(images, spec.patch_size) @ kernel.T + sd["patch_embed.proj.bias"]  # (B, n, D)
    tokens = ([sd["cls_token"]] if spec.class_token else []) + ([sd["dist_token"]] if spec.dist_token else [])  # DeiT's second
    x = np.concatenate([np.broadcast_to(t, (x.shape[0], 1, spec.width)) for t in tokens] + [x], axis=1) + sd["pos_embed"]  # (B, T, D)
    eps = spec.layer_norm_eps
    for i in range(spec.depth):
        p = f"blocks.{i}."
        x = x + attention(layer_norm(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps), sd, p + "attn.", spec.heads)
        x = x + mlp(layer_norm(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps), sd, p + "mlp.")
    if spec.global_pool == "avg":  # the patch tokens' mean, then fc_norm
        pooled = layer_norm(x[:, spec.prefix_tokens:].mean(1), sd["fc_norm.weight"], sd["fc_norm.bias"], eps)  # (B, D)
        return pooled @ sd["head.weight"].T + sd["head.bias"]
    x = layer_norm(x, sd["norm.weight"], sd["norm.bias"], eps)
    logits = x[:, 0] @ sd["head.weight"].T + sd["head.bias"]  # class token -> (B, classes)
    if spec.head_dist:  # DeiT's inference: the mean of the class and distillation heads
        logits = (logits + x[:, 1] @ sd["head_dist.weight"].T + sd["head_dist.bias"]) / 2
    return logits
