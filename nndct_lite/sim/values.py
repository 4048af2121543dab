"""Tensor values of the integer simulator and the exact integer helpers they use.

A value is either

* :class:`Fixed` -- exact: ``value = codes / denom * 2**-fp`` with int64 ``codes``, an integer
  ``fp`` (the fix position of the codes, may be negative) and a positive integer ``denom``
  (1 except right after an average: avgpool / reduction_mean keep the exact quotient, a later
  ``mul`` by a const or ``fix`` resolves it exactly). Accumulators are Fixed too, with the
  accumulator's fp (e.g. ``fi + fw`` after a conv).
* :class:`Floating` -- float64 values, produced only by ops that are not fixed-point (sigmoid,
  softmax, ...) or by a graph input before its ``fix``. ``inexact`` names the ops that computed in
  float (empty when the values are exact copies of the input floats).

Rounding follows the XIR ``round_mode`` names: ``DPU_ROUND`` (ties toward +inf), ``STD_ROUND``
(ties away from zero), ``PY3_ROUND`` (ties to even). All rounding below is exact: integer
quotients are rounded from the exact remainder, floats from the exact fractional part.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nndct_lite.errors import NndctError

__all__ = ["SimError", "Fixed", "Floating", "Value", "round_div", "round_shift",
           "round_float", "saturate", "to_fixed", "dyadic", "value_of", "align", "common_fp",
           "INT_LIMIT"]

#: magnitudes must stay below this to be safe in int64 arithmetic (one bit of head-room)
INT_LIMIT = 1 << 62


class SimError(NndctError):
    """The simulator cannot execute the graph (unsupported op, bad input, int64 overflow)."""

    code = "NNDCT_XMODEL_SIM"


@dataclass
class Fixed:
    codes: np.ndarray
    fp: int
    denom: int | np.ndarray = 1
    #: (bit_width, signed) when the codes come straight out of a fix op, else None
    qtype: tuple[int, bool] | None = None

    def __post_init__(self):
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.fp = int(self.fp)
        if isinstance(self.denom, np.ndarray):
            d = self.denom.astype(np.int64)
            if d.size and (d.min() == d.max()):
                self.denom = int(d.flat[0])
            else:
                self.denom = d
        else:
            self.denom = int(self.denom)
        self._normalize()

    def _normalize(self):
        d = self.denom
        if isinstance(d, int):
            if d <= 0:
                raise SimError(f"non-positive denominator {d}")
            # fold a power-of-two denominator into the fix position
            if d & (d - 1) == 0 and d > 1:
                self.fp += d.bit_length() - 1
                self.denom = 1

    @property
    def shape(self):
        return self.codes.shape

    @property
    def exact(self) -> bool:
        return True

    def values(self) -> np.ndarray:
        """float64 values (exact when |codes| < 2^53 and denom == 1)."""
        v = self.codes.astype(np.float64)
        if not (isinstance(self.denom, int) and self.denom == 1):
            v = v / self.denom
        return np.ldexp(v, -self.fp)

    def denom_full(self) -> np.ndarray:
        """The denominator broadcast to the codes' shape (int64)."""
        return np.broadcast_to(np.asarray(self.denom, dtype=np.int64), self.codes.shape)


@dataclass
class Floating:
    data: np.ndarray
    inexact: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        self.data = np.asarray(self.data, dtype=np.float64)

    @property
    def shape(self):
        return self.data.shape

    @property
    def exact(self) -> bool:
        return not self.inexact

    def values(self) -> np.ndarray:
        return self.data


Value = Fixed | Floating


def value_of(v: Value) -> np.ndarray:
    return v.values()


# -- rounding ---------------------------------------------------------------------------------

def _round_from_remainder(q, twice_r, d, mode: str):
    """q = floor(n/d), twice_r = 2*(n - q*d) in [0, 2d): round q to nearest per ``mode``."""
    up = twice_r > d
    tie = twice_r == d
    if mode == "DPU_ROUND":
        up |= tie
    elif mode == "STD_ROUND":  # value q + 1/2: positive when q >= 0 -> away from zero = up
        up |= tie & (q >= 0)
    elif mode == "PY3_ROUND":
        up |= tie & ((q & 1) == 1)
    else:
        raise SimError(f"unknown round_mode {mode!r}; expected DPU_ROUND, STD_ROUND or PY3_ROUND")
    return q + up.astype(np.int64)


def round_shift(codes: np.ndarray, s: int, mode: str = "DPU_ROUND") -> np.ndarray:
    """``round(codes / 2**s)`` exactly (s >= 0), e.g. the DPU's shift_cut with DPU_ROUND.
    A negative ``s`` shifts left (exact)."""
    codes = np.asarray(codes, dtype=np.int64)
    if s <= 0:
        return codes << np.int64(-s) if s < 0 else codes.copy()
    if s >= 62:
        return _round_big(codes, 1 << s, mode)
    q = codes >> np.int64(s)
    r = codes & np.int64((1 << s) - 1)
    return _round_from_remainder(q, r << np.int64(1), np.int64(1 << s), mode)


def _round_big(n: np.ndarray, d, mode: str) -> np.ndarray:
    """round(n / d) with Python integers, for divisors too large for int64 arithmetic."""
    no = np.asarray(n, dtype=np.int64).astype(object)
    do = np.asarray(d).astype(object) if isinstance(d, np.ndarray) else d
    q = no // do
    r2 = (no - q * do) * 2
    out = _round_from_remainder(q, r2, do, mode)
    return np.asarray(out, dtype=np.int64)


def round_div(n: np.ndarray, d, mode: str = "DPU_ROUND") -> np.ndarray:
    """``round(n / d)`` exactly for int64 ``n`` and positive integer ``d`` (scalar or array;
    Python ints beyond int64 are accepted)."""
    if isinstance(d, int) and d >= (1 << 62):
        return _round_big(n, d, mode)
    n = np.asarray(n, dtype=np.int64)
    d = np.asarray(d, dtype=np.int64)
    q = np.floor_divide(n, d)
    r = n - q * d
    return _round_from_remainder(q, r * 2, d, mode)


def round_float(y: np.ndarray, mode: str = "DPU_ROUND") -> np.ndarray:
    """Round float64 ``y`` to the nearest integer per ``mode``; exact tie detection (no y+0.5)."""
    y = np.asarray(y, dtype=np.float64)
    q = np.floor(y)
    r = y - q  # exact for |y| < 2^52; larger values are integers already (r == 0)
    up = r > 0.5
    tie = r == 0.5
    if mode == "DPU_ROUND":
        up |= tie
    elif mode == "STD_ROUND":
        up |= tie & (q >= 0)
    elif mode == "PY3_ROUND":
        up |= tie & (np.fmod(q, 2) != 0)
    else:
        raise SimError(f"unknown round_mode {mode!r}")
    return q + up


def saturate(codes: np.ndarray, bit_width: int, signed: bool = True) -> np.ndarray:
    """Clamp to ``[-2^(bw-1), 2^(bw-1)-1]`` (signed) or ``[0, 2^bw-1]``."""
    if signed:
        lo, hi = -(1 << (bit_width - 1)), (1 << (bit_width - 1)) - 1
    else:
        lo, hi = 0, (1 << bit_width) - 1
    return np.clip(codes, lo, hi)


# -- conversions ------------------------------------------------------------------------------

def dyadic(x: np.ndarray, max_fp: int = 200) -> tuple[np.ndarray, int] | None:
    """Exact ``(codes, fp)`` with ``x == codes * 2**-fp`` for a finite float array, choosing the
    smallest fp that makes every element an integer; None when that does not fit int64."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros(x.shape, np.int64), 0
    if not np.all(np.isfinite(x)):
        return None
    nz = x[x != 0]
    if nz.size == 0:
        return np.zeros(x.shape, np.int64), 0
    m, e = np.frexp(nz)
    mant = np.ldexp(m, 53).astype(np.int64)  # exact integers, |mant| < 2^53
    low = mant & -mant
    tz = np.frexp(low.astype(np.float64))[1] - 1
    fp = int(np.max(53 - e.astype(np.int64) - tz))
    if fp > max_fp:
        return None
    top = int(np.max(e)) + fp  # |x| < 2^e -> |codes| < 2^(e+fp)
    if top > 62:
        return None
    return np.ldexp(x, fp).astype(np.int64), fp


def to_fixed(v: Value) -> Fixed | None:
    """``v`` as a Fixed when that is exact (Floating values are exact dyadic numbers)."""
    if isinstance(v, Fixed):
        return v
    r = dyadic(v.data)
    if r is None:
        return None
    return Fixed(r[0], r[1])


def _bound(codes: np.ndarray) -> int:
    return int(np.max(np.abs(codes))) if codes.size else 0


def align(v: Fixed, fp: int, what: str = "") -> np.ndarray:
    """Codes of ``v`` (denom 1) re-expressed at a larger-or-equal fix position (exact shift)."""
    if not (isinstance(v.denom, int) and v.denom == 1):
        raise SimError(f"{what}: cannot align a value with a pending divisor")
    k = fp - v.fp
    if k < 0:
        raise SimError(f"{what}: cannot align fp {v.fp} down to {fp} exactly")
    if k == 0:
        return v.codes
    b = _bound(v.codes)
    if b and b.bit_length() + k > 62:
        raise SimError(f"{what}: aligning fp {v.fp} -> {fp} overflows int64 "
                       f"(max |code| {b}, shift {k})")
    return v.codes << np.int64(k)


def common_fp(vals: list[Fixed], what: str = "") -> tuple[list[np.ndarray], int, int | np.ndarray]:
    """Codes of all ``vals`` over a common fix position and common denominator: returns
    ``(codes list, fp, denom)`` with ``vals[i] == codes[i] / denom * 2^-fp`` exactly."""
    denoms = [v.denom for v in vals]
    if all(isinstance(d, int) and d == 1 for d in denoms):
        fp = max(v.fp for v in vals)
        return [align(v, fp, what) for v in vals], fp, 1
    # common denominator: lcm of the denominators (scalars or arrays, broadcast)
    lcm = np.int64(1)
    for d in denoms:
        lcm = np.lcm(lcm, np.asarray(d, dtype=np.int64))
    fp = max(v.fp for v in vals)
    out = []
    for v in vals:
        mult = lcm // np.asarray(v.denom, dtype=np.int64)
        b = _bound(v.codes) * int(np.max(mult))
        k = fp - v.fp
        if b and b.bit_length() + k > 62:
            raise SimError(f"{what}: common denominator / fix position overflows int64")
        out.append((v.codes * mult) << np.int64(k))
    return out, fp, (int(lcm) if np.ndim(lcm) == 0 else lcm)


def requantize(v: Value, fp: int, bit_width: int, signed: bool = True,
               mode: str = "DPU_ROUND") -> np.ndarray:
    """Integer codes of ``v`` at fix position ``fp`` (rounded per ``mode``, saturated): what a
    ``fix`` op does, and on the DPU the output shift of a conv (shift_cut) or an eltwise."""
    if isinstance(v, Floating):
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.ldexp(v.data, fp)
        y = np.nan_to_num(y, nan=0.0, posinf=float(1 << 62), neginf=-float(1 << 62))
        y = np.clip(y, -float(1 << 62), float(1 << 62))
        return saturate(round_float(y, mode).astype(np.int64), bit_width, signed)
    codes, d = v.codes, v.denom
    k = fp - v.fp  # value * 2^fp = codes * 2^k / d
    if k >= 0:
        # |value * 2^fp| >= 2^(bw+1) saturates whatever the rounding: clip the codes to
        # +-lim*d first (lim = 2^(bw+1)) so that the exact left shift cannot overflow
        dd = np.asarray(d, dtype=np.int64)
        lim = (1 << (bit_width + 1)) * dd
        c = np.clip(codes, -lim, lim)
        b = _bound(c)
        if b and b.bit_length() + k > 62:
            n = c.astype(object) * (1 << k)
            no = np.asarray(n // (dd.astype(object) if dd.ndim else int(dd)))
            r = np.asarray(n - no * (dd.astype(object) if dd.ndim else int(dd)))
            out = _round_from_remainder(no, r * 2, dd.astype(object) if dd.ndim else int(dd), mode)
            out = np.clip(np.asarray(out, dtype=object), -(1 << 62), 1 << 62).astype(np.int64)
            return saturate(out, bit_width, signed)
        if isinstance(d, int) and d == 1:
            return saturate(c << np.int64(k), bit_width, signed)
        return saturate(round_div(c << np.int64(k), dd, mode), bit_width, signed)
    s = -k
    if isinstance(d, int) and d == 1:
        return saturate(round_shift(codes, s, mode), bit_width, signed)
    dd = np.asarray(d, dtype=np.int64)
    if int(np.max(dd)).bit_length() + s > 61:
        div = dd.astype(object) * (1 << s) if dd.ndim else int(dd) << s
        return saturate(_round_big(codes, div, mode), bit_width, signed)
    return saturate(round_div(codes, dd << np.int64(s), mode), bit_width, signed)


def fixed_from_codes(codes: np.ndarray, fp: int, bit_width: int, signed: bool) -> Fixed:
    return Fixed(codes, fp, 1, (bit_width, signed))


def exact_int_matmul_dtype(max_a: int, max_b: int, k: int):
    """The float dtype in which an integer matmul with these bounds is provably exact (every
    partial sum is an integer below the mantissa limit), or int64, or None (would overflow)."""
    bound = max_a * max_b * max(k, 1)
    if bound < (1 << 24):
        return np.float32
    if bound < (1 << 53):
        return np.float64
    if bound < INT_LIMIT:
        return np.int64
    return None


def log2_exact(n: int) -> int | None:
    """log2(n) when n is a power of two, else None."""
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)

