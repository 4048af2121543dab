"""Integer ranges, fix positions and scales (numerics.md sections 1, 3 and 4.1).

A power-of-two tensor is ``[bw, fp]``: code ``q = clamp(R(x * 2^fp), qmin, qmax)``, value
``q * 2^-fp``. A float-scale tensor is ``(scale, zero_point)``: ``q = clamp(R(x / scale) + z)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["IntRange", "int_range", "max_fix_pos", "fix_pos_from_range", "scale_of_fix_pos",
           "TINY_STEP_FIX_POS"]

#: fp0 of an all-zero tensor (the search starts there; the cap brings it down to 12 or 15)
TINY_STEP_FIX_POS = 18


@dataclass(frozen=True)
class IntRange:
    """Closed integer range ``[qmin, qmax]`` of a quantized tensor."""

    qmin: int
    qmax: int

    def __post_init__(self) -> None:
        if self.qmin >= self.qmax:
            raise ValueError(f"empty integer range [{self.qmin}, {self.qmax}]")


def int_range(bit_width: int, signed: bool = True, narrow_range: bool = False,
              symmetric: bool = True) -> IntRange:
    """Integer range for a bit width (numerics.md 1.2).

    Signed symmetric: ``[-2^(bw-1) (+1 if narrow), 2^(bw-1)-1]``. Unsigned, or asymmetric (always
    unsigned in the original): ``[0, 2^bw - 1]``.

    >>> int_range(8)
    IntRange(qmin=-128, qmax=127)
    >>> int_range(8, narrow_range=True)
    IntRange(qmin=-127, qmax=127)
    >>> int_range(4, signed=False)
    IntRange(qmin=0, qmax=15)
    """
    if not 2 <= bit_width <= 32:
        raise ValueError(f"bit width must be in 2..32, got {bit_width}")
    if signed and symmetric:
        lo = -(1 << (bit_width - 1))
        return IntRange(lo + (1 if narrow_range else 0), (1 << (bit_width - 1)) - 1)
    return IntRange(0, (1 << bit_width) - 1)


def max_fix_pos(bit_width: int) -> int:
    """Upper cap on fix positions: 12 for bw <= 8, 15 above (numerics.md 1.3)."""
    return 12 if bit_width <= 8 else 15


def fix_pos_from_range(xmin: float, xmax: float, bit_width: int) -> int | float:
    """fp0 of the diffs search: the largest fp at which neither extreme overflows by more than
    half a step. Computed in float32, like the original (numerics.md 4.1 and 15).

    Returns ``TINY_STEP_FIX_POS`` for an all-zero range and ``math.inf`` when ``1/step``
    overflows (a non-zero tensor below ~3.7e-37); the caller applies the cap.

    >>> fix_pos_from_range(-0.7, 1.9, 8)
    6
    >>> fix_pos_from_range(0.0, 255.0, 8)
    -1
    """
    lb = -(2.0 ** (bit_width - 1)) - 0.5
    ub = 2.0 ** (bit_width - 1) - 0.5
    t = torch.tensor([xmin, xmax], dtype=torch.float32)
    step = torch.maximum(t[0] / lb, t[1] / ub)
    if not step.item() > 0:
        return TINY_STEP_FIX_POS
    inv = torch.reciprocal(step)
    if torch.isinf(inv):
        return math.inf
    return int(torch.floor(torch.log2(inv)).item())


def scale_of_fix_pos(fp: int) -> float:
    """Step of a fix position: ``2^-fp``."""
    return math.ldexp(1.0, -fp)
