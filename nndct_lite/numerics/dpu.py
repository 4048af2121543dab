"""DPU approximations the quantizer simulates (numerics.md 7)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .fake_quant import fake_quantize_pof2
from .rounding import RoundMode

__all__ = ["avgpool_factor", "mean_factor", "LEAKY_SLOPE", "dpu_hardsigmoid", "dpu_hardswish",
           "HSIGMOID_MULT"]

#: LeakyReLU slope the DPU implements
LEAKY_SLOPE = 26.0 / 256.0
#: 2731 / 2^14 replaces 1/6 in hard-sigmoid / hard-swish
HSIGMOID_MULT = 2731.0 / 16384.0

_AVG_TABLE = {(3, 3): 63 / 64, (5, 5): 250 / 256, (6, 6): 252 / 256, (3, 6): 252 / 256,
              (6, 3): 252 / 256, (7, 7): 1029 / 1024, (14, 14): 4116 / 4096}


def _searched_factor(n: int) -> float:
    """n * m / 2^s where m/2^s is the DPU's best multiply-and-shift approximation of 1/n."""
    best_err, best = math.inf, 1.0
    for s in range(0, max(1, math.ceil(math.log2(128 * n)))):
        m = round(2 ** s / n)
        err = abs(m / 2 ** s - 1 / n)
        if err < best_err:
            best_err, best = err, n * m / 2 ** s
    return best


def avgpool_factor(kh: int, kw: int) -> float:
    """Correction factor of a kh x kw average pool (numerics.md 7.4, T17).

    >>> [avgpool_factor(*k) for k in [(3, 3), (5, 5), (7, 7), (2, 3), (2, 2)]]
    [0.984375, 0.9765625, 1.0048828125, 0.99609375, 1.0]
    """
    if (kh, kw) in _AVG_TABLE:
        return _AVG_TABLE[(kh, kw)]
    return _searched_factor(kh * kw)


def mean_factor(n: int) -> float:
    """Correction factor of a mean over n elements; 1 for powers of two (T18).

    >>> mean_factor(9), mean_factor(64)
    (1.001953125, 1.0)
    """
    if n & (n - 1) == 0:
        return 1.0
    return _searched_factor(n)


def dpu_hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) * 2731 / 2^14."""
    return F.relu6(x + 3.0) * HSIGMOID_MULT


def dpu_hardswish(x: torch.Tensor) -> torch.Tensor:
    """x * Q7(relu6(x + 3) * 2731 / 2^14), the inner value rounded half_up at fp 7."""
    h = fake_quantize_pof2(dpu_hardsigmoid(x), 7, -128, 127, RoundMode.HALF_UP)
    return x * h
