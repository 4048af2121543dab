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
"""
from __future__ import annotations

import enum

import numpy as np
import torch

__all__ = ["RoundMode", "round_tensor", "round_numpy"]


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


_CODES = {
    RoundMode.HALF_UP: 2, RoundMode.STD_ROUND: 3, RoundMode.FLOOR: 4,
    RoundMode.TIES_NEG_UP_POS_EVEN: 5, RoundMode.HALF_DOWN: 6, RoundMode.CEIL: 7,
    RoundMode.HALF_EVEN: 8,
}


def round_tensor(y: torch.Tensor, mode: RoundMode) -> torch.Tensor:
    """Round ``y`` elementwise with ``mode``; returns a new tensor of the same dtype and device.

    Ties are detected exactly: ``q = round_half_even(y)``, ``d = y - q`` is exact (Sterbenz), and
    ``|d| == 0.5`` marks a tie. No ``y + 0.5`` is formed, so values such as 0.49999997 round to 0.
    """
    if mode is RoundMode.HALF_EVEN:
        return torch.round(y)
    if mode is RoundMode.FLOOR:
        return torch.floor(y)
    if mode is RoundMode.CEIL:
        return torch.ceil(y)
    q = torch.round(y)
    d = y - q
    if mode is RoundMode.HALF_UP:
        # a tie rounded down by half-even has d == +0.5: move it up
        return q.add_((d == 0.5).to(q.dtype))
    if mode is RoundMode.STD_ROUND:
        up = (d == 0.5) & (y > 0)
        down = (d == -0.5) & (y < 0)
        return q.add_(up.to(q.dtype)).sub_(down.to(q.dtype))
    if mode is RoundMode.HALF_DOWN:
        up = (d == 0.5) & (y < 0)
        down = (d == -0.5) & (y > 0)
        return q.add_(up.to(q.dtype)).sub_(down.to(q.dtype))
    if mode is RoundMode.TIES_NEG_UP_POS_EVEN:
        return q.add_(((d == 0.5) & (y < 0)).to(q.dtype))
    raise ValueError(f"unsupported round mode {mode!r}")


def round_numpy(y: np.ndarray, mode: RoundMode) -> np.ndarray:
    """The same rule on numpy arrays (used by the integer simulator)."""
    return round_tensor(torch.from_numpy(np.ascontiguousarray(y)), mode).numpy()
