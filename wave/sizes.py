"""Model sizes as people write them, for `wave spawn --sizes` and `wave distill --sizes`:

    6x384       depth x width (heads: the spec's head rule)
    6x384x6     depth x width x heads
    vit_tiny    timm's names (`tiny`, `deit_small` too): depth, width and heads from timm's table
    5M, 300k    a parameter budget (`5000000`, `1.5e6`): the nearest size on the learngene's grid

and, for `wave distill --sizes`, the rule `thirds` (`thirds`).

Pure Python: parsing never needs torch, so a bad list fails before anything loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import WaveError
from .io.timm import size_named
from .spawning import size_for_params
from .spec import ViTSpec

_GRID = re.compile(r"^(\d+)x(\d+)(?:x(\d+))?$")
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?(?:e\d+)?)([kmg]?)$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


@dataclass(frozen=True)
class Size:
    depth: int
    width: int
    heads: int | None  # None: the spec's head rule
    asked: str  # as the user wrote it

    @property
    def name(self) -> str:
        return f"{self.depth}x{self.width}" + (f"x{self.heads}" if self.heads else "")


def parse_size(item: str, like: ViTSpec, side: int) -> Size:
    """One size; a budget is resolved on `like`'s data shape and widths that are multiples of `side`."""
    text = item.strip().lower()
    grid = _GRID.match(text)
    if grid:
        depth, width, heads = (int(g) if g else None for g in grid.groups())
        if depth < 1 or width < 1 or heads == 0:
            raise WaveError(f"size {item!r}: depth, width and heads must be at least 1")
        return Size(depth, width, heads, item.strip())
    budget = _BUDGET.match(text)
    if budget:
        count = int(float(budget.group(1)) * _SCALE[budget.group(2)])
        depth, width = size_for_params(count, like, side)
        return Size(depth, width, None, item.strip())
    try:
        depth, width, heads = size_named(text)
    except WaveError:
        raise WaveError(f"size {item!r} is none of DEPTHxWIDTH, DEPTHxWIDTHxHEADS, a timm name (vit_tiny) or a parameter budget (5M)") from None
    return Size(depth, width, heads, item.strip())


def parse_sizes(text: str, like: ViTSpec, side: int) -> list[Size]:
    """A comma-separated list of sizes, in its order; the same depth and width twice is an error."""
    sizes = [parse_size(item, like, side) for item in text.split(",") if item.strip()]
    if not sizes:
        raise WaveError("no sizes given: list them comma-separated, e.g. 2x64,vit_tiny,5M")
    seen: dict[tuple[int, int], str] = {}
    for s in sizes:
        if (s.depth, s.width) in seen:
            raise WaveError(f"sizes {seen[(s.depth, s.width)]!r} and {s.asked!r} are both {s.depth}x{s.width}: list each size once")
        seen[(s.depth, s.width)] = s.asked
    return sizes


THIRDS = "thirds"  # `wave distill --sizes thirds`: the auxiliary sizes of `thirds`


def thirds(largest: ViTSpec, side: int) -> list[Size]:
    """Auxiliary sizes at a third, two thirds and all of the largest auxiliary's depth and width
    (widths rounded to multiples of the template side, at least one side; depths at least 1; the
    same size once), largest last: 2x64, 4x128 and 6x192 for a 6x192, the sizes protocol v4's
    item 3 distilled through (docs/bench/protocol-v4.md). One no wider than the side gives
    fewer, down to its own size alone."""
    sizes: list[Size] = []
    for k in (1, 2, 3):
        depth = max(1, round(largest.depth * k / 3))
        width = max(side, round(largest.width * k / 3 / side) * side) if k < 3 else largest.width
        if all((depth, width) != (s.depth, s.width) for s in sizes):
            sizes.append(Size(depth, width, None, f"{depth}x{width}"))
    return sizes
