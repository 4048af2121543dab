"""Rounding modes of the quantizer, exact on ties and near-ties.

Codes follow the original kernels (numerics.md 2.1): 2 half_up (ties toward +inf, the DPU's
``DPU_ROUND``), 3 std_round (ties away from zero), 4 floor, 5 (negative ties up, positive ties to
even), 6 half_down (ties toward zero), 7 ceil, 8 half_even.

>>> import torch
>>> y = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
>>> round_tensor(y, RoundMode.HALF_UP).tolist()
[-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
>>> round_tensor(y, RoundMode.STD_ROUND).tolist()
[-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]
>>> round_tensor(y, RoundMode.HALF_EVEN).tolist()
[-2.0, -2.0, -0.0, 0.0, 2.0, 2.0]

How the ties are kept exact (no ``floor(y + 0.5)``, which turns the float32 0.49999997 into 1):

* ``round_tensor`` (any finite input): with ``r = floor(a)`` the fraction ``a - r`` is exact for
  ``a >= 0`` and for ``a <= -1`` (Sterbenz), and in ``(-1, 0)`` it is inexact only in a way that
  never moves it across 0.5; ``r + [frac >= 0.5]`` is then exactly "ties toward +inf". The other
  modes apply the same rule to ``|y|`` and restore the sign.
* ``scaled_round`` (used by the fake-quant kernels, whose result is clamped to a bit-width range):
  ``half_up(y) = ceil(floor(2y) / 2)``. ``2y``, ``floor``, the halving of an integer and ``ceil``
  are all exact, so this is bit-exact for every ``y`` whose ``2y`` does not overflow, in one
  temporary and four passes; the factor 2 is folded into the multiplier.
"""
from __future__ import annotations

import enum

import numpy as np
import torch

__all__ = ["RoundMode", "round_tensor", "round_numpy", "scaled_round"]


class RoundMode(enum.Enum):
    """Rounding of ``x * multiplier`` to an integer code. Values are the JSON config words."""

    HALF_UP = "half_up"        # code 2: ties toward +inf (DPU_ROUND)
    STD_ROUND = "std_round"    # code 3: ties away from zero (C round)
    FLOOR = "floor"            # code 4
    TIES_NEG_UP_POS_EVEN = "ties_neg_up_pos_even"  # code 5
    HALF_DOWN = "half_down"    # code 6: ties toward zero
    CEIL = "ceil"              # code 7
    HALF_EVEN = "half_even"    # code 8: ties to even (Python round)

    @property
    def code(self) -> int:
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> "RoundMode":
        for mode, c in _CODES.items():
            if c == code:
                return mode
        raise ValueError(f"unknown rounding code {code}; known codes: {sorted(_CODES.values())}")

    @property
    def xir_name(self) -> str:
        """The XIR ``round_mode`` attribute spelling."""
        return {RoundMode.HALF_UP: "DPU_ROUND", RoundMode.STD_ROUND: "STD_ROUND",
                RoundMode.HALF_EVEN: "PY3_ROUND"}.get(self, "DPU_ROUND")

    @property
    def is_nearest(self) -> bool:
        """True for the round-to-nearest modes (they differ only on exact .5 ties)."""
        return self not in (RoundMode.FLOOR, RoundMode.CEIL)


_CODES = {
    RoundMode.HALF_UP: 2, RoundMode.STD_ROUND: 3, RoundMode.FLOOR: 4,
    RoundMode.TIES_NEG_UP_POS_EVEN: 5, RoundMode.HALF_DOWN: 6, RoundMode.CEIL: 7,
    RoundMode.HALF_EVEN: 8,
}


def _half_up_(a: torch.Tensor) -> torch.Tensor:
    """Ties toward +inf; ``a`` (owned) is clobbered, the result is returned."""
    r = torch.floor(a)
    return r.add_(a.sub_(r).ge_(0.5))


def _half_toward_minus_inf_(a: torch.Tensor) -> torch.Tensor:
    """Ties toward -inf; ``a`` (owned) is clobbered."""
    r = torch.floor(a)
    return r.add_(a.sub_(r).gt_(0.5))


def round_tensor(y: torch.Tensor, mode: RoundMode) -> torch.Tensor:
    """Round ``y`` elementwise with ``mode``; returns a new tensor of the same dtype and device.

    Exact for every finite input of any float dtype (also beyond 2^23, where all floats are
    integers); inf and NaN pass through.
    """
    if mode is RoundMode.HALF_EVEN:
        return torch.round(y)
    if mode is RoundMode.FLOOR:
        return torch.floor(y)
    if mode is RoundMode.CEIL:
        return torch.ceil(y)
    if mode is RoundMode.HALF_UP:
        return _half_up_(y.clone())
    if mode is RoundMode.STD_ROUND:
        return _half_up_(torch.abs(y)).copysign_(y)
    if mode is RoundMode.HALF_DOWN:
        return _half_toward_minus_inf_(torch.abs(y)).copysign_(y)
    if mode is RoundMode.TIES_NEG_UP_POS_EVEN:
        return torch.where(y < 0, _half_up_(y.clone()), torch.round(y))
    raise ValueError(f"unsupported round mode {mode!r}")


def scaled_round(x: torch.Tensor, mult, mode: RoundMode) -> torch.Tensor:
    """``round_tensor(x * mult, mode)`` in one fresh tensor, for results that get clamped.

    ``mult`` (> 0) is a Python number or a tensor broadcastable to ``x``; ``x * mult`` is formed
    once, with a multiplication. Bit-exact wherever ``2 * x * mult`` is finite; where it overflows
    the value is +-inf instead of a huge integer, which any later clamp to a bit-width range maps
    to the same code. Half-precision inputs are not widened here (the callers do that).
    """
    if mode is RoundMode.HALF_EVEN:
        return torch.mul(x, mult).round_()
    if isinstance(mult, (int, float)) and abs(mult) >= 2.0 ** 100:
        return round_tensor(torch.mul(x, mult), mode)  # 2 * mult would overflow float32
    if mode is RoundMode.FLOOR:
        return torch.mul(x, mult).floor_()
    if mode is RoundMode.CEIL:
        return torch.mul(x, mult).ceil_()
    if mode is RoundMode.HALF_UP:
        return torch.mul(x, mult * 2).floor_().mul_(0.5).ceil_()
    if mode is RoundMode.STD_ROUND:
        return torch.abs(x).mul_(mult * 2).floor_().mul_(0.5).ceil_().copysign_(x)
    if mode is RoundMode.HALF_DOWN:
        return torch.abs(x).mul_(mult * 2).ceil_().mul_(0.5).floor_().copysign_(x)
    return round_tensor(torch.mul(x, mult), mode)


def round_numpy(y: np.ndarray, mode: RoundMode) -> np.ndarray:
    """The same rule on numpy arrays (used by the integer simulator)."""
    return round_tensor(torch.from_numpy(np.ascontiguousarray(y)), mode).numpy()
