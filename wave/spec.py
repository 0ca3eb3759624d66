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
from collections.abc import Callable, Mapping
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
    classifier (`head_dist`; the logits are then the mean of both heads', as DeiT infers), or
    with timm's average pooling (`global_pool="avg"`: the head reads the mean of the patch
    tokens after a LayerNorm `fc_norm`, usually without a class token, as TLEG's descendants)."""

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
    class_token: bool = True  # a class token before the patches (timm's class_token)
    global_pool: str = "token"  # what the head reads: "token" (the class token) or "avg" (the patches' mean, after fc_norm)

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
        if not isinstance(self.class_token, bool):
            raise WaveError(f"class_token must be true or false, got {self.class_token!r}")
        if self.global_pool not in GLOBAL_POOLS:
            raise WaveError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise WaveError("global_pool 'token' reads the class token: keep class_token, or pool with global_pool 'avg'")
        if self.dist_token and (self.global_pool != "token"):
            raise WaveError("DeiT's distillation token goes with the class token's pooling: use global_pool 'token'")
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
        return self.num_patches + self.class_token + self.dist_token  # patches, the class token and DeiT's distillation token

    @property
    def is_plain(self) -> bool:
        """A class token read by the head and no DeiT distillation token: the ViTs that templates
        and scalers describe."""
        return not self.dist_token and self.class_token and self.global_pool == "token"

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patches: the class token and DeiT's distillation token."""
        return self.class_token + self.dist_token

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
        """This spec with some fields changed: `resized`'s rule (the heads follow a new width)."""
        return resized(self, **changes)

    def num_params(self) -> int:
        return sum(role.numel(self) * (self.depth if role.per_layer else 1) for role in roles_of(self))

    def params_at(self, depth: int, width: int) -> int:
        """Parameters of this data shape at `depth` x `width`, any width: heads only split the
        attention's width, so the count does not depend on them (one head is as good as any)."""
        return self.replace(depth=depth, width=width, heads=1).num_params()


_LATER_FIELDS = {"layer_norm_eps": LAYER_NORM_EPS, "dist_token": False, "head_dist": False, "class_token": True,
                 "global_pool": "token"}  # field -> default
GLOBAL_POOLS = ("token", "avg")


def _short(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else ", ".join(map(str, values[:12])) + ", ..."


# Axis names: how big an axis is for a spec, and how many multiples of the width it holds
# (0 for axes fixed by the data). "heads" is a width-sized axis read as heads x head width (the
# attention projection's input), "3width" the query, key and value rows of qkv.
_WIDTH_MULTIPLE = {"width": lambda s: 1, "heads": lambda s: 1, "3width": lambda s: 3, "mlp": lambda s: s.mlp_ratio}
_FIXED_SIZE = {
    "one": lambda s: 1,
    "tokens": lambda s: s.tokens,
    "patch": lambda s: s.patch_dim,
    "classes": lambda s: s.num_classes,
}
# What weight selection keeps along each axis kind (selection.selected_indices); None: the whole axis.
_SELECTED = {"width": "width", "heads": "attention", "3width": "qkv", "mlp": "mlp"}
# (mean, std) at initialisation, as timm sets them.
_INIT = {
    "normal": lambda s: (0.0, 0.02),  # trunc-normal matrices and embeddings
    "patch": lambda s: (0.0, 1.0 / math.sqrt(3 * s.patch_dim)),  # PyTorch's default for the patch convolution
    "one": lambda s: (1.0, 0.0),  # LayerNorm weights
    "zero": lambda s: (0.0, 0.0),  # biases
}


def _always(spec: ViTSpec) -> bool:
    return True


@dataclass(frozen=True)
class Role:
    """One kind of parameter, and everything the library knows about it: where timm keeps it,
    its shape, its Kronecker form `sum_t kron(scaler_t, template_t)`, its initialisation, which of
    its axes a linear layer sums over, what weight selection keeps of it, and its Hugging Face
    name. Every key list, shape check, name map and rule of the library derives from `SCHEMA`."""

    name: str  # the timm key (without `blocks.{i}.` for per-layer roles)
    axes: tuple[str, ...]  # the Kronecker form's axes: one (vector form) or two (matrix form)
    place: str  # "stem" (before the blocks in timm's order), "block" (one per block) or "tail"
    init: str  # a key of _INIT
    stored: str = "plain"  # timm's shape from the Kronecker form's: "plain", "token" (a leading 1), "conv" (w, C, P, P)
    fan_in: int | None = None  # the Kronecker axis a linear layer sums over (the spawn rule rescales it)
    templated: bool = True  # written as templates and scalers in a learngene (else a dense parameter only)
    present: Callable[[ViTSpec], bool] = _always  # whether a ViT of this spec has the parameter
    hf: str | None = None  # the Hugging Face checkpoint name ({m}: vit or deit; {head}: the classifier; blocks: within the layer)
    hf5: str | None = None  # transformers 5's in-memory name within a layer, where it differs

    @property
    def per_layer(self) -> bool:
        return self.place == "block"

    def kron_shape(self, spec: ViTSpec) -> tuple[int, ...]:
        """The parameter as the 1-D or 2-D array that the Kronecker form builds."""
        return tuple(_axis_size(axis, spec) for axis in self.axes)

    def param_shape(self, spec: ViTSpec) -> tuple[int, ...]:
        """The parameter's shape in a timm state dict."""
        if self.stored == "conv":
            return (spec.width, spec.channels, spec.patch_size, spec.patch_size)
        return (1, *self.kron_shape(spec)) if self.stored == "token" else self.kron_shape(spec)

    def numel(self, spec: ViTSpec) -> int:
        return math.prod(self.param_shape(spec))

    def init_target(self, spec: ViTSpec) -> tuple[float, float]:
        """(mean, std) of the parameter at initialisation."""
        return _INIT[self.init](spec)

    def selected(self) -> tuple[str | None, ...]:
        """The index set weight selection takes along each axis of the stored parameter."""
        if self.stored == "conv":
            return ("width", None, None, None)
        kinds = tuple(_SELECTED.get(axis) for axis in self.axes)
        return (None, *kinds) if self.stored == "token" else kinds

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


def _pair(module: str, axes: tuple[str, ...], place: str, init: str, hf: str | None, hf5: str | None = None, **more) -> tuple[Role, Role]:
    """The weight and bias roles of a linear layer or LayerNorm `module` (bias: the weight's first axis)."""
    name5 = (lambda p: f"{hf5}.{p}") if hf5 else (lambda p: None)
    weight = Role(f"{module}.weight", axes, place, init, hf=f"{hf}.weight" if hf else None, hf5=name5("weight"),
                  fan_in=1 if len(axes) == 2 else None, **more)
    bias = Role(f"{module}.bias", axes[:1], place, "zero", hf=f"{hf}.bias" if hf else None, hf5=name5("bias"),
                **{k: v for k, v in more.items() if k != "stored"})
    return weight, bias


def _class_token(spec: ViTSpec) -> bool:
    return spec.class_token


def _token_pool(spec: ViTSpec) -> bool:
    return spec.global_pool == "token"


def _avg_pool(spec: ViTSpec) -> bool:
    return spec.global_pool == "avg"


def _deit_token(spec: ViTSpec) -> bool:
    return spec.dist_token


def _deit_head(spec: ViTSpec) -> bool:
    return spec.head_dist


# Every parameter a ViT may have, in timm's state-dict order (stem, then each block's, then tail).
SCHEMA: tuple[Role, ...] = (
    Role("cls_token", ("one", "width"), "stem", "normal", stored="token", present=_class_token, hf="{m}.embeddings.cls_token"),
    Role("pos_embed", ("tokens", "width"), "stem", "normal", stored="token", hf="{m}.embeddings.position_embeddings"),
    # DeiT's distillation token and head: dense parameters only (templates describe plain ViTs).
    Role("dist_token", ("one", "width"), "stem", "normal", stored="token", templated=False, present=_deit_token,
         hf="deit.embeddings.distillation_token"),
    Role("patch_embed.proj.weight", ("width", "patch"), "stem", "patch", stored="conv", hf="{m}.embeddings.patch_embeddings.projection.weight"),
    Role("patch_embed.proj.bias", ("width",), "stem", "zero", hf="{m}.embeddings.patch_embeddings.projection.bias"),
    *_pair("norm1", ("width",), "block", "one", "layernorm_before"),
    # qkv: HF splits it into three thirds, {qkv} in query, key, value ({qkv5}: q, k, v).
    *_pair("attn.qkv", ("3width", "width"), "block", "normal", "attention.attention.{qkv}", "attention.{qkv5}_proj"),
    *_pair("attn.proj", ("width", "heads"), "block", "normal", "attention.output.dense", "attention.o_proj"),
    *_pair("norm2", ("width",), "block", "one", "layernorm_after"),
    *_pair("mlp.fc1", ("mlp", "width"), "block", "normal", "intermediate.dense", "mlp.fc1"),
    *_pair("mlp.fc2", ("width", "mlp"), "block", "normal", "output.dense", "mlp.fc2"),
    *_pair("norm", ("width",), "tail", "one", "{m}.layernorm", present=_token_pool),
    # timm's average pooling: the final LayerNorm comes after pooling, under another name (no HF form).
    *_pair("fc_norm", ("width",), "tail", "one", None, templated=False, present=_avg_pool),
    *_pair("head", ("classes", "width"), "tail", "normal", "{head}"),
    *_pair("head_dist", ("classes", "width"), "tail", "normal", "distillation_classifier", templated=False, present=_deit_head),
)
SCHEMA_BY_NAME: dict[str, Role] = {r.name: r for r in SCHEMA}
# The templated roles, those a learngene holds.
ROLES: tuple[Role, ...] = tuple(r for r in SCHEMA if r.templated)
DISTILLATION_ROLES: tuple[Role, ...] = tuple(r for r in SCHEMA if not r.templated)
ROLE_NAMES: tuple[str, ...] = tuple(r.name for r in ROLES)
ROLES_BY_NAME: dict[str, Role] = SCHEMA_BY_NAME
# The four transformer matrices, the roles the paper's templates are about.
MATRIX_ROLES: tuple[str, ...] = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")
# The classifier: a fresh one when the classes or their meaning change.
HEAD_ROLES = frozenset({"head.weight", "head.bias"})


def check_side(spec: ViTSpec, side: int) -> None:
    """A width must be a multiple of the template side: never a silent crop."""
    check_width(spec.width, side)


def check_templated(spec: ViTSpec, side: int) -> None:
    """WaveError unless templates of side `side` can describe `spec`: a plain ViT (no DeiT
    distillation token: that token and its head exist as dense weights only) of a width that
    is a multiple of the side."""
    if spec.dist_token:
        raise WaveError("templates and scalers describe plain ViTs, and this one has DeiT's distillation token: "
                        "use its plain() spec (a learngene's auxiliary model drops the token and its head)")
    if not spec.is_plain:
        raise WaveError("templates and scalers describe ViTs whose head reads a class token, and this one pools the patches "
                        "(global_pool 'avg'): spawn a class-token ViT, or use it as a teacher or dense model only")
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


def resized(spec: ViTSpec, depth: int | None = None, width: int | None = None, heads: int | None = None, side: int | None = None,
            **fields) -> ViTSpec:
    """The one way a spec is derived from another: `spec` with another depth and width (None
    keeps them), and any other field through `fields` (image_size, patch_size, channels,
    num_classes to re-target it to other data; None keeps a field).

    The one head rule: `heads` if given, else `spec`'s head width kept where the new width is a
    multiple of it (templates stay head-aligned), else width / 64 (ViTSpec's default). With
    `side`, the width must be a multiple of it (checked first: the head rule complains less
    helpfully)."""
    depth = spec.depth if depth is None else depth
    width = spec.width if width is None else width
    if side is not None:
        check_width(width, side)
    if heads is None and isinstance(width, int) and not isinstance(width, bool) and width % spec.head_dim == 0:
        heads = width // spec.head_dim
    return ViTSpec(**{**spec.to_dict(), "depth": depth, "width": width, "heads": heads, **{k: v for k, v in fields.items() if v is not None}})


def data_fields(spec: ViTSpec) -> dict:
    """The fields that follow the data: `resized(other, **data_fields(spec))` re-targets `other` to `spec`'s data."""
    return {"image_size": spec.image_size, "patch_size": spec.patch_size, "channels": spec.channels, "num_classes": spec.num_classes}


def init_target(role: str, spec: ViTSpec) -> tuple[float, float]:
    """(mean, std) of parameter `role` at initialisation, as timm sets it (`Role.init`)."""
    return SCHEMA_BY_NAME[role].init_target(spec)


def roles_of(spec: ViTSpec) -> tuple[Role, ...]:
    """The roles of `spec`'s parameters, in timm's order."""
    return tuple(r for r in SCHEMA if r.present(spec))
