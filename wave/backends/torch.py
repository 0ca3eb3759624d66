"""PyTorch models: a plain pre-LayerNorm ViT with timm's key names, the auxiliary templated
ViT whose every parameter is `kron_expand(scalers, templates)`, built each forward, and TLEG's
auxiliary ViT whose block l is `A + l / (L - 1) * B` (`tleg.py`).

The auxiliary models do not re-implement the network: they materialise a state dict with the
core math (`waveinit.materialize`, `tleg.expand`) and run the plain ViT on it with
`torch.func.functional_call`, so the architecture is defined once and gradients flow into the
factors.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WaveError
from ..keys import split_key, state_dict_keys
from ..kron import check_order
from ..learngene import Learngene, check_shapes, materialize_unchecked
from ..spawning import fresh_dense, fresh_factors
from ..spec import ROLES, ViTSpec, check_side, init_target
from ..tleg import BLOCK_ROLES, SHARED_ROLES, TLEGGene, check_parts, expand_unchecked


class PatchEmbed(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.proj = nn.Conv2d(spec.channels, spec.width, spec.patch_size, stride=spec.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, n, D)


class Attention(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.heads = spec.heads
        self.qkv = nn.Linear(spec.width, 3 * spec.width)
        self.proj = nn.Linear(spec.width, spec.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.fc1 = nn.Linear(spec.width, spec.mlp_width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(spec.mlp_width, spec.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (timm's drop_path): in training, each sample's branch is zeroed with
    probability p and the rest scaled by 1 / (1 - p); draws from torch's generator."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)  # (B, 1, 1)
    return x * keep.div_(1.0 - p)


class Block(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.norm1 = nn.LayerNorm(spec.width, eps=spec.layer_norm_eps)
        self.attn = Attention(spec)
        self.norm2 = nn.LayerNorm(spec.width, eps=spec.layer_norm_eps)
        self.mlp = Mlp(spec)
        self.drop_prob = 0.0  # drop-path probability of both branches (ViT.set_drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_prob, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_prob, self.training)


class ViT(nn.Module):
    """A plain ViT: class token, learned position embedding, pre-LayerNorm blocks, linear head
    (or timm's average pooling of the patch tokens, `ViTSpec.global_pool`)."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        self.spec = spec
        if spec.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.tokens, spec.width))
        if spec.dist_token:  # DeiT: a second token, read by its own head (or by none: transformers' DeiTForImageClassification)
            self.dist_token = nn.Parameter(torch.zeros(1, 1, spec.width))  # registered after pos_embed, as timm does
        self.patch_embed = PatchEmbed(spec)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        final_norm = nn.LayerNorm(spec.width, eps=spec.layer_norm_eps)
        if spec.global_pool == "avg":  # timm's names: the LayerNorm after pooling is fc_norm
            self.fc_norm = final_norm
        else:
            self.norm = final_norm
        self.head = nn.Linear(spec.width, spec.num_classes)
        if spec.head_dist:
            self.head_dist = nn.Linear(spec.width, spec.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's default ViT initialisation, drawn from torch's global generator."""
        for name, p in self.named_parameters():
            mean, std = init_target(split_key(name)[0], self.spec)
            if std == 0:
                nn.init.constant_(p, mean)
            else:
                nn.init.trunc_normal_(p, mean=mean, std=std, a=mean - 2 * std, b=mean + 2 * std)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth as timm sets it: block l of L drops with probability rate * l / (L - 1)."""
        for block, p in zip(self.blocks, torch.linspace(0, rate, self.spec.depth).tolist()):
            block.drop_prob = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)  # (B, n, D)
        tokens = ([self.cls_token] if self.spec.class_token else []) + ([self.dist_token] if self.spec.dist_token else [])
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in tokens] + [x], dim=1) + self.pos_embed  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        if self.spec.global_pool == "avg":
            return self.head(self.fc_norm(x[:, self.spec.prefix_tokens:].mean(1)))  # (B, classes)
        x = self.norm(x)
        if self.spec.head_dist:  # DeiT's inference: the mean of both heads
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2  # (B, classes)
        return self.head(x[:, 0])  # (B, classes)


def load_state_dict(model: ViT, state: Mapping[str, np.ndarray | torch.Tensor]) -> ViT:
    """Copy a timm-keyed state dict into `model`, key by key, checking every shape."""
    expected = state_dict_keys(model.spec)
    own = model.state_dict()
    for key in expected:
        value = torch.as_tensor(np.asarray(state[key]) if not isinstance(state[key], torch.Tensor) else state[key])
        if tuple(value.shape) != tuple(own[key].shape):
            raise WaveError(f"{key}: shape {tuple(value.shape)} does not fit the model's {tuple(own[key].shape)}")
        with torch.no_grad():
            own[key].copy_(value)
    return model


def dense_numpy(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A state dict as float32 NumPy arrays on the CPU (what model files hold)."""
    return {k: v.detach().to("cpu", torch.float32).numpy() for k, v in state.items()}


class TemplatedViT(nn.Module):
    """The auxiliary model: templates shared by all layers, scalers per layer, and, for roles not
    templated (`dense_roles`), their plain parameters.

    Parameters live in ParameterDicts, `templates`, `scalers` and `dense`, keyed by role with dots
    replaced by underscores (`attn_qkv_weight`); `role_tensors` and `dense_tensors` give them
    back by role (a dense per-layer role is one (depth, ...) tensor). Their
    shapes are checked once, here: afterwards only load_state_dict can change them, and PyTorch
    refuses a shape that differs, so the forward pass checks nothing.
    """

    def __init__(self, spec: ViTSpec, side: int, n_templates: int | Mapping[str, int], seed: int = 0, order: str = "st",
                 dense_roles=()):
        super().__init__()
        check_side(spec, side)
        self.spec, self.side, self.order = spec, side, check_order(order)
        self.templated = tuple(r.name for r in ROLES if r.name not in dense_roles)
        templates, scalers = fresh_factors(spec, side, n_templates, seed)  # timm-like statistics
        dense = fresh_dense(spec, dense_roles, seed)
        self.templates = nn.ParameterDict({_key(n): nn.Parameter(torch.from_numpy(templates[n])) for n in self.templated})
        self.scalers = nn.ParameterDict({_key(n): nn.Parameter(torch.from_numpy(scalers[n])) for n in self.templated})
        self.dense = nn.ParameterDict({_key(r.name): nn.Parameter(torch.from_numpy(dense[r.name])) for r in ROLES if r.name in dense})
        check_shapes(spec, side, *self.role_tensors(), self.dense_tensors())
        # The network the weights are plugged into: on the meta device (no memory), and kept out
        # of the module tree so that .to(), state_dict() and parameters() never see it.
        with torch.device("meta"):
            object.__setattr__(self, "_network", ViT(spec))

    def role_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(templates, scalers), each role name -> parameter."""
        return (
            {name: self.templates[_key(name)] for name in self.templated},
            {name: self.scalers[_key(name)] for name in self.templated},
        )

    def dense_tensors(self) -> dict[str, torch.Tensor]:
        """The roles that are not templated: role name -> parameter."""
        return {r.name: self.dense[_key(r.name)] for r in ROLES if _key(r.name) in self.dense}

    def dense_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter of the plain ViT, built from templates and scalers (timm keys)."""
        templates, scalers = self.role_tensors()
        return materialize_unchecked(self.spec, templates, scalers, self.order, self.dense_tensors())  # shapes checked in __init__

    def set_drop_path(self, rate: float) -> None:
        self._network.set_drop_path(rate)

    def train(self, mode: bool = True) -> TemplatedViT:
        super().train(mode)
        self._network.train(mode)  # outside the module tree, so nn.Module.train would not reach it (drop-path reads it)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._network, self.dense_state_dict(), (images,))

    def to_learngene(self, provenance: dict | None = None) -> Learngene:
        templates, scalers = self.role_tensors()
        as_numpy = lambda d: {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in d.items()}  # noqa: E731
        return Learngene(as_numpy(templates), as_numpy(scalers), self.spec, self.side, dict(provenance or {}), self.order,
                         as_numpy(self.dense_tensors()))

    @classmethod
    def from_learngene(cls, learngene: Learngene) -> TemplatedViT:
        return cls.from_factors(learngene.spec, learngene.side, learngene.templates, learngene.scalers, learngene.order, learngene.dense)

    @classmethod
    def from_factors(cls, spec: ViTSpec, side: int, templates: Mapping, scalers: Mapping, order: str = "st",
                     dense: Mapping | None = None) -> TemplatedViT:
        """A model holding copies of the given factors (role -> array) and dense roles, in float32."""
        dense = dense or {}
        check_shapes(spec, side, templates, scalers, dense)
        model = cls(spec, side, {name: int(t.shape[0]) for name, t in templates.items()}, order=order, dense_roles=tuple(dense))
        with torch.no_grad():
            for name in templates:
                model.templates[_key(name)].copy_(torch.as_tensor(np.asarray(templates[name])))
                model.scalers[_key(name)].copy_(torch.as_tensor(np.asarray(scalers[name])))
            for name, x in dense.items():
                model.dense[_key(name)].copy_(torch.as_tensor(np.asarray(x)))
        return model


class TemplatedFamily(nn.Module):
    """Several auxiliary models of other sizes sharing one template bank (`wave distill --sizes`):
    `members[0]` (the largest) owns the templates, every member its own scalers.

    In training mode the forward pass returns every member's logits, (members, B, classes), and
    the loss is the mean over members (`tasks.per_member`); in evaluation mode, the largest
    member's (B, classes), which the metrics report.
    """

    def __init__(self, specs: list[ViTSpec], side: int, n_templates: int | Mapping[str, int], seed: int = 0, *, order: str):
        super().__init__()
        specs = sorted(specs, key=lambda s: -s.num_params())
        if len({(s.depth, s.width) for s in specs}) != len(specs):
            raise WaveError("the sizes a learngene is distilled through must differ in depth or width")
        members = [TemplatedViT(spec, side, n_templates, seed=seed + i, order=order) for i, spec in enumerate(specs)]
        for member in members[1:]:
            check_shapes(member.spec, side, members[0].role_tensors()[0], member.role_tensors()[1])  # the shared bank fits every size
            member.templates = members[0].templates  # one ParameterDict: the same tensors, trained by every member
        self.members = nn.ModuleList(members)
        self.spec, self.side, self.order = specs[0], side, order

    def set_drop_path(self, rate: float) -> None:
        for member in self.members:
            member.set_drop_path(rate)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.members[0](images)  # (B, classes)
        return torch.stack([member(images) for member in self.members])  # (members, B, classes)

    def to_learngene(self, provenance: dict | None = None) -> Learngene:
        main = self.members[0].to_learngene(provenance)
        main.auxiliaries = {f"{m.spec.depth}x{m.spec.width}": (m.spec, m.to_learngene().scalers) for m in self.members[1:]}
        main.__post_init__()  # check the auxiliaries
        return main


class TLEGViT(nn.Module):
    """TLEG's auxiliary model: two parameter sets A and B per block role, one shared copy of the
    rest; block l of `depth` blocks is `A + l / (depth - 1) * B` (`tleg.expand`).

    Parameters live in three ParameterDicts, `a`, `b` and `shared`, keyed by role with dots
    replaced by underscores (`attn_qkv_weight`, `patch_embed_proj_weight`). Their shapes are
    checked once, here, as TemplatedViT's are.
    """

    def __init__(self, spec: ViTSpec, seed: int = 0):
        super().__init__()
        if not spec.is_plain:
            raise WaveError("TLEG's auxiliary model is a plain ViT: use the ancestry's plain() spec (no distillation token)")
        self.spec = spec
        # A and the shared parameters are a fresh timm-initialised ViT's (`seed`, drawn without
        # touching the global generator): its blocks are independent draws of one distribution,
        # so block 0 is as good an A as any. B starts at zero, so every block of every depth
        # starts with exactly timm's statistics (a random B would widen the spread towards the
        # last block, A + B, and shrink it in the middle); B still learns from the first step,
        # its gradient being the sum over blocks of l / (L - 1) times each block's.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dense = ViT(spec).state_dict()
        self.a = nn.ParameterDict({_key(r): nn.Parameter(dense[f"blocks.0.{r}"].clone()) for r in BLOCK_ROLES})
        self.b = nn.ParameterDict({_key(r): nn.Parameter(torch.zeros_like(dense[f"blocks.0.{r}"])) for r in BLOCK_ROLES})
        self.shared = nn.ParameterDict({_key(k): nn.Parameter(dense[k].clone()) for k in SHARED_ROLES})
        check_parts(spec, *self.parts())
        with torch.device("meta"):  # as in TemplatedViT: no memory, and outside the module tree
            object.__setattr__(self, "_network", ViT(spec))

    def parts(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(A, B, shared), each role name (dotted) -> parameter."""
        return (
            {r: self.a[_key(r)] for r in BLOCK_ROLES},
            {r: self.b[_key(r)] for r in BLOCK_ROLES},
            {k: self.shared[_key(k)] for k in SHARED_ROLES},
        )

    def dense_state_dict(self, depth: int | None = None) -> dict[str, torch.Tensor]:
        """Every parameter of the plain ViT of `depth` blocks (default: this model's), timm keys."""
        target = self.spec if depth is None else self.spec.replace(depth=depth)  # replace checks the depth
        return expand_unchecked(*self.parts(), target)  # the parts were checked in __init__

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._network, self.dense_state_dict(), (images,))

    def to_gene(self, provenance: dict | None = None) -> TLEGGene:
        """The learngene: float32 NumPy copies of A, B and the shared parameters."""
        as_numpy = lambda d: {k: v.detach().to("cpu", torch.float32).numpy().copy() for k, v in d.items()}  # noqa: E731
        a, b, shared = self.parts()
        return TLEGGene(as_numpy(a), as_numpy(b), as_numpy(shared), self.spec, dict(provenance or {}))

    @classmethod
    def from_gene(cls, gene: TLEGGene) -> TLEGViT:
        """A model holding float32 copies of the learngene's parameters (to train it further)."""
        check_parts(gene.spec, gene.a, gene.b, gene.shared)
        model = cls(gene.spec)
        with torch.no_grad():
            for params, arrays in zip(model.parts(), (gene.a, gene.b, gene.shared)):
                for name, p in params.items():
                    p.copy_(torch.as_tensor(np.asarray(arrays[name])))
        return model


def _key(role: str) -> str:
    return role.replace(".", "_")  # ParameterDict keys may not contain dots
