"""The data model: a ViT's shape, the parameter roles, and the scaler and template shapes.

Every parameter of a plain pre-LayerNorm ViT (timm's key names) has a *role*: its key with the
`blocks.{i}.` prefix removed. Each role is written in Kronecker form, `sum_t kron(S_t, T_t)`,
over one or two axes. An axis that grows with the width (`width`, `3width` for qkv, `mlp` for
the MLP's hidden width) is split into `size / side` scaler entries times `side` template
entries; an axis fixed by the data (tokens, patch pixels, classes) lives wholly in the template,
with a scaler extent of 1. So templates are shared by all widths and depths of one dataset,
scalers are per layer and per size:

| role                    | parameter shape    | scaler (per term)  | template (per term) |
| ----------------------- | ------------------ | ------------------ | ------------------- |
| attn.qkv.weight         | (3w, w)            | (3w/s, w/s)        | (s, s)              |
| attn.proj.weight        | (w, w)             | (w/s, w/s)         | (s, s)              |
| mlp.fc1.weight          | (r*w, w)           | (r*w/s, w/s)       | (s, s)              |
| mlp.fc2.weight          | (w, r*w)           | (w/s, r*w/s)       | (s, s)              |
| norm1.weight, biases    | (w,) etc.          | (w/s,)             | (s,)                |
| patch_embed.proj.weight | (w, C, P, P)       | (w/s, 1)           | (s, C*P*P)          |
| pos_embed               | (1, tokens, w)     | (1, w/s)           | (tokens, s)         |
| cls_token               | (1, 1, w)          | (1, w/s)           | (1, s)              |
| head.weight             | (classes, w)       | (1, w/s)           | (classes, s)        |
| head.bias               | (classes,)         | (1,)               | (classes,)          |

(s: template side, default 64; r: MLP ratio, 4.) Per-layer roles get one scaler set per block.

The initialisation statistics (`init_target`) are timm's ViT defaults; the key names of a dense
state dict live in `keys.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from .configs import DEFAULT_TEMPLATE_SIDE
from .errors import WaveError

LAYER_NORM_EPS = 1e-6  # timm's ViT value, and that of files written before the spec held it (PyTorch: 1e-5, transformers: 1e-12)


def _positive_int(name: str, value, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WaveError(f"{name} must be an integer, got {value!r} ({type(value).__name__}){hint}")
    if value < 1:
        raise WaveError(f"{name} must be at least 1, got {value}{hint}")


@dataclass(frozen=True)
class ViTSpec:
    """The shape of a plain pre-LayerNorm Vision Transformer (class token, learned positions),
    optionally with DeiT's distillation token (`dist_token`, the second token) and its own
    classifier (`head_dist`; the logits are then the mean of both heads', as DeiT infers)."""

    depth: int  # number of transformer blocks
    width: int  # embedding dimension
    heads: int | None = None  # attention heads; None: width // 64
    patch_size: int = 2  # side of a square patch, in pixels
    image_size: int = 8  # side of the square input image, in pixels
    channels: int = 1  # input channels (1 grey, 3 RGB)
    num_classes: int = 10  # classifier outputs
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * width
    layer_norm_eps: float = LAYER_NORM_EPS  # added to the variance in every LayerNorm
    dist_token: bool = False  # DeiT's distillation token (timm puts it after pos_embed in the state dict)
    head_dist: bool = False  # DeiT's classifier of the distillation token (needs dist_token)

    def __post_init__(self):
        _positive_int("depth", self.depth, " (number of transformer blocks)")
        _positive_int("width", self.width, " (embedding dimension)")
        if self.heads is None:
            if self.width % DEFAULT_TEMPLATE_SIDE:
                raise WaveError(
                    f"width {self.width} is not a multiple of 64, so heads cannot default to width/64: "
                    f"give heads explicitly (a divisor of {self.width})"
                )
            object.__setattr__(self, "heads", self.width // DEFAULT_TEMPLATE_SIDE)
        _positive_int("heads", self.heads)
        for name in ("patch_size", "image_size", "channels", "num_classes", "mlp_ratio"):
            _positive_int(name, getattr(self, name))
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise WaveError(f"LayerNorm eps must be a number in (0, 1), got {eps!r}: timm uses 1e-6, transformers 1e-12")
        object.__setattr__(self, "layer_norm_eps", float(eps))
        for name in ("dist_token", "head_dist"):
            if not isinstance(getattr(self, name), bool):
                raise WaveError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.head_dist and not self.dist_token:
            raise WaveError("head_dist needs dist_token: a distillation head reads the distillation token")
        if self.width % self.heads:
            divisors = [h for h in range(1, self.width + 1) if self.width % h == 0]
            raise WaveError(f"heads {self.heads} does not divide width {self.width}: choose heads from {_short(divisors)}")
        if self.image_size % self.patch_size:
            divisors = [p for p in range(1, self.image_size + 1) if self.image_size % p == 0]
            raise WaveError(
                f"patch size {self.patch_size} does not divide image size {self.image_size}: "
                f"choose a patch size from {_short(divisors)}"
            )

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_ratio * self.width

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens(self) -> int:
        return self.num_patches + 1 + self.dist_token  # patches, the class token and DeiT's distillation token

    @property
    def is_plain(self) -> bool:
        """No DeiT distillation token: the ViTs that templates and scalers describe."""
        return not self.dist_token

    def plain(self) -> ViTSpec:
        """The same ViT without DeiT's distillation token and head."""
        return self.replace(dist_token=False, head_dist=False)

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size**2

    def to_dict(self) -> dict:
        """The fields as a dict. Fields added after the first file format (LayerNorm eps, DeiT's
        token and head) are left out at their defaults, so that a plain timm-style ViT is written
        exactly as before: older waveinit reads it, and older checkpoints still resume."""
        d = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ViTSpec:
        fields = set(cls.__dataclass_fields__)
        unknown = set(d) - fields
        if unknown:
            raise WaveError(f"unknown model spec field(s) {sorted(unknown)}: valid fields are {sorted(fields)}")
        return cls(**d)

    def replace(self, **changes) -> ViTSpec:
        d = self.to_dict()
        if "width" in changes and "heads" not in changes:
            d["heads"] = None  # the default heads follow the new width
        d.update(changes)
        return ViTSpec(**d)

    def num_params(self) -> int:
        total = 0
        for role in roles_of(self):
            n = 1
            for s in role.param_shape(self):
                n *= s
            total += n * (self.depth if role.per_layer else 1)
        return total


_LATER_FIELDS = {"layer_norm_eps": LAYER_NORM_EPS, "dist_token": False, "head_dist": False}  # field -> default


def _short(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else ", ".join(map(str, values[:12])) + ", ..."


# Axis names: how big an axis is for a spec, and how many multiples of the width it holds
# (0 for axes fixed by the data).
_WIDTH_MULTIPLE = {"width": lambda s: 1, "3width": lambda s: 3, "mlp": lambda s: s.mlp_ratio}
_FIXED_SIZE = {
    "one": lambda s: 1,
    "tokens": lambda s: s.tokens,
    "patch": lambda s: s.patch_dim,
    "classes": lambda s: s.num_classes,
}


@dataclass(frozen=True)
class Role:
    """One kind of parameter, written as `sum_t kron(scaler_t, template_t)` over its axes."""

    name: str  # the timm key (without `blocks.{i}.` for per-layer roles)
    axes: tuple[str, ...]  # one axis (vector form) or two (matrix form)
    per_layer: bool  # one scaler set per transformer block, or one for the model

    def kron_shape(self, spec: ViTSpec) -> tuple[int, ...]:
        """The parameter as the 1-D or 2-D array that the Kronecker form builds."""
        return tuple(_axis_size(axis, spec) for axis in self.axes)

    def param_shape(self, spec: ViTSpec) -> tuple[int, ...]:
        """The parameter's shape in a timm state dict."""
        shape = self.kron_shape(spec)
        if self.name == "patch_embed.proj.weight":  # a convolution: (w, C, P, P)
            return (spec.width, spec.channels, spec.patch_size, spec.patch_size)
        if self.name in ("cls_token", "dist_token", "pos_embed"):  # timm keeps a leading batch axis
            return (1, *shape)
        return shape

    def template_shape(self, spec: ViTSpec, side: int) -> tuple[int, ...]:
        """One template: `side` along width axes, the full size along fixed axes."""
        return tuple(side if axis in _WIDTH_MULTIPLE else _FIXED_SIZE[axis](spec) for axis in self.axes)

    def scaler_shape(self, spec: ViTSpec, side: int) -> tuple[int, ...]:
        """One scaler term: `size / side` along width axes, 1 along fixed axes."""
        check_side(spec, side)
        return tuple(_axis_size(axis, spec) // side if axis in _WIDTH_MULTIPLE else 1 for axis in self.axes)

    @property
    def depends_on_data(self) -> bool:
        """Whether the template shape depends on the data (image size, channels, classes)."""
        return any(axis in ("tokens", "patch", "classes") for axis in self.axes)

    def key(self, layer: int | None = None) -> str:
        return f"blocks.{layer}.{self.name}" if self.per_layer else self.name


def _axis_size(axis: str, spec: ViTSpec) -> int:
    if axis in _WIDTH_MULTIPLE:
        return _WIDTH_MULTIPLE[axis](spec) * spec.width
    return _FIXED_SIZE[axis](spec)


def _global(name, *axes):
    return Role(name, axes, per_layer=False)


def _block(name, *axes):
    return Role(name, axes, per_layer=True)


# In timm's state-dict order.
ROLES: tuple[Role, ...] = (
    _global("cls_token", "one", "width"),
    _global("pos_embed", "tokens", "width"),
    _global("patch_embed.proj.weight", "width", "patch"),
    _global("patch_embed.proj.bias", "width"),
    _block("norm1.weight", "width"),
    _block("norm1.bias", "width"),
    _block("attn.qkv.weight", "3width", "width"),
    _block("attn.qkv.bias", "3width"),
    _block("attn.proj.weight", "width", "width"),
    _block("attn.proj.bias", "width"),
    _block("norm2.weight", "width"),
    _block("norm2.bias", "width"),
    _block("mlp.fc1.weight", "mlp", "width"),
    _block("mlp.fc1.bias", "mlp"),
    _block("mlp.fc2.weight", "width", "mlp"),
    _block("mlp.fc2.bias", "width"),
    _global("norm.weight", "width"),
    _global("norm.bias", "width"),
    _global("head.weight", "classes", "width"),
    _global("head.bias", "classes"),
)
# DeiT's distillation token and head: dense parameters only (templates describe plain ViTs).
DISTILLATION_ROLES: tuple[Role, ...] = (
    _global("dist_token", "one", "width"),
    _global("head_dist.weight", "classes", "width"),
    _global("head_dist.bias", "classes"),
)
ROLE_NAMES: tuple[str, ...] = tuple(r.name for r in ROLES)
ROLES_BY_NAME: dict[str, Role] = {r.name: r for r in ROLES + DISTILLATION_ROLES}
# The four transformer matrices, the roles the paper's templates are about.
MATRIX_ROLES: tuple[str, ...] = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def check_side(spec: ViTSpec, side: int) -> None:
    """A width must be a multiple of the template side: never a silent crop."""
    check_width(spec.width, side)


def check_templated(spec: ViTSpec, side: int) -> None:
    """WaveError unless templates of side `side` can describe `spec`: a plain ViT (no DeiT
    distillation token: that token and its head exist as dense weights only) of a width that
    is a multiple of the side."""
    if not spec.is_plain:
        raise WaveError("templates and scalers describe plain ViTs, and this one has DeiT's distillation token: "
                        "use its plain() spec (a learngene's auxiliary model drops the token and its head)")
    check_side(spec, side)


def check_width(width: int, side: int) -> None:
    _positive_int("template side", side)
    if width % side:
        valid = [side * k for k in range(1, 7)]
        raise WaveError(
            f"width {width} is not a multiple of the template side {side}: "
            f"choose a width from {', '.join(map(str, valid))}, ..."
        )


def template_counts(n: int | Mapping[str, int]) -> dict[str, int]:
    """Number of templates per role, from one count for all roles or a mapping role -> count."""
    if isinstance(n, Mapping):
        unknown = set(n) - set(ROLE_NAMES)
        if unknown:
            raise WaveError(f"unknown role(s) {sorted(unknown)}: valid roles are {', '.join(ROLE_NAMES)}")
        missing = set(ROLE_NAMES) - set(n)
        if missing:
            raise WaveError(f"template counts are missing role(s) {sorted(missing)}: give a count for every role")
        counts = dict(n)
    else:
        counts = {name: n for name in ROLE_NAMES}
    for name, count in counts.items():
        _positive_int(f"template count of {name}", count)
    return counts


def template_shapes(spec: ViTSpec, side: int, n: int | Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Role -> shape of its template bank, (N_r, *template_shape)."""
    counts = template_counts(n)
    check_templated(spec, side)
    return {r.name: (counts[r.name], *r.template_shape(spec, side)) for r in ROLES}


def scaler_shapes(spec: ViTSpec, side: int, n: int | Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Role -> shape of its scalers: (depth, N_r, ...) for per-layer roles, (N_r, ...) otherwise."""
    counts = template_counts(n)
    check_templated(spec, side)
    shapes = {}
    for r in ROLES:
        shape = (counts[r.name], *r.scaler_shape(spec, side))
        shapes[r.name] = (spec.depth, *shape) if r.per_layer else shape
    return shapes


def resized(spec: ViTSpec, depth: int, width: int, heads: int | None = None, side: int | None = None, **data) -> ViTSpec:
    """`spec` with another depth and width (and, through `data`, another image_size, patch_size,
    channels or num_classes). Heads default to keeping `spec`'s head width where the new width
    allows it, else to width / 64; with `side`, the width must be a multiple of it (checked first,
    since the default heads would complain less helpfully)."""
    if side is not None:
        check_width(width, side)
    if heads is None and isinstance(width, int) and width % spec.head_dim == 0:
        heads = width // spec.head_dim  # keep the head width: templates stay head-aligned
    return ViTSpec(**{**spec.to_dict(), "depth": depth, "width": width, "heads": heads,
                      **{k: v for k, v in data.items() if v is not None}})


def init_target(role: str, spec: ViTSpec) -> tuple[float, float]:
    """(mean, std) of a parameter at initialisation, as timm sets them: trunc-normal 0.02 for
    matrices and embeddings, PyTorch's default scale for the patch convolution, LayerNorm
    weights 1, biases 0."""
    if role == "patch_embed.proj.weight":
        return 0.0, 1.0 / math.sqrt(3 * spec.patch_dim)
    if role.startswith("norm") and role.endswith(".weight"):  # norm1, norm2, norm
        return 1.0, 0.0
    if role.endswith(".bias"):
        return 0.0, 0.0
    return 0.0, 0.02


def roles_of(spec: ViTSpec) -> tuple[Role, ...]:
    """The roles of `spec`'s parameters: ROLES, and DeiT's distillation token and head if it has them."""
    extra = {"dist_token": spec.dist_token, "head_dist.weight": spec.head_dist, "head_dist.bias": spec.head_dist}
    return ROLES + tuple(r for r in DISTILLATION_ROLES if extra[r.name])
