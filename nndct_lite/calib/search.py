"""Range searches on a histogram of ``|x|`` (numerics.md 4.4): percentile, mse and entropy.

Pure functions of ``(hist, edges)``: ``hist[j]`` counts the values in
``[edges[j], edges[j+1])`` (the last bin also holds the maximum), ``len(edges) == len(hist) + 1``.
They run in float64 numpy on the host (a histogram is a few thousand numbers) and return the
chosen ``amax`` as a Python float; the scale is then ``amax / qmax``. The defaults are the
original's options for a 2048-bin histogram (``mse_start_bin`` / ``entropy_start_bin`` 1536,
strides 16).
"""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..config.spec import QuantSpec

__all__ = ["START_BIN", "STRIDE", "percentile_amax", "mse_amax", "mse_errors", "entropy_amax",
           "entropy_divergences", "kl_divergence"]

START_BIN = 1536
STRIDE = 16


def _arrays(hist: npt.ArrayLike, edges: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(hist.cpu() if hasattr(hist, "cpu") else hist, dtype=np.float64).ravel()
    e = np.asarray(edges.cpu() if hasattr(edges, "cpu") else edges, dtype=np.float64).ravel()
    if e.size != h.size + 1:
        raise ValueError(f"{h.size} bins need {h.size + 1} edges, got {e.size}")
    return h, e


def percentile_amax(hist: npt.ArrayLike, edges: npt.ArrayLike,
                    percentage: float) -> float:
    """Left edge of the first bin whose cumulative share reaches ``percentage`` percent.

    ``cdf = cumsum(hist / total)`` (normalise first, then sum, float64) and the bin is found as
    numpy ``searchsorted(cdf, percentage / 100, side='left')``; if the float cdf never reaches
    the threshold (it can end at 0.9999999999999999), the result is ``edges[-1]``.
    """
    h, e = _arrays(hist, edges)
    if not 0.0 < percentage <= 100.0:
        raise ValueError(f"percentage must be in (0, 100], got {percentage}")
    total = h.sum()
    if total <= 0:
        return float(e[-1])
    cdf = np.cumsum(h / total)
    i = int(np.searchsorted(cdf, percentage / 100.0, side="left"))
    return float(e[min(i, h.size)])


def mse_errors(hist: npt.ArrayLike, edges: npt.ArrayLike,
               spec: QuantSpec, *, start_bin: int = START_BIN,
               stride: int = STRIDE) -> list[tuple[int, float]]:
    """``[(i, error)]`` of every mse candidate (see ``mse_amax``)."""
    h, e = _arrays(hist, edges)
    n = h.size
    candidates = list(range(start_bin, n, stride))
    if not candidates:
        raise ValueError(f"no mse candidate: start bin {start_bin} >= {n} bins")
    r = spec.int_range
    centers = (e[:-1] + e[1:]) / 2
    out = []
    for i in candidates:
        amax = centers[i]
        if not amax > 0:
            out.append((i, float(np.inf)))
            continue
        mult = r.qmax / amax
        q = np.clip(np.round(centers * mult), r.qmin, r.qmax) / mult
        out.append((i, float(np.mean(h * (q - centers) ** 2))))
    return out


def mse_amax(hist: npt.ArrayLike, edges: npt.ArrayLike,
             spec: QuantSpec, *, start_bin: int = START_BIN,
             stride: int = STRIDE) -> float:
    """Bin center ``c_i`` (i = start_bin, start_bin + stride, ... < n) minimising
    ``mean_j(hist[j] * (Q(c_j) - c_j)^2)`` over all bin centers ``c_j``.

    ``Q`` is the TensorRT-style quantizer ``clamp(round_half_even(c * qmax / amax), qmin, qmax)
    / (qmax / amax)`` with qmin/qmax from ``spec.int_range`` (whatever ``spec.round_mode``);
    the first minimum wins.
    """
    errors = mse_errors(hist, edges, spec, start_bin=start_bin, stride=stride)
    best = min(range(len(errors)), key=lambda k: errors[k][1])  # first minimum
    _, e = _arrays(hist, edges)
    i = errors[best][0]
    return float((e[i] + e[i + 1]) / 2)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``sum p log(p / q)`` of the normalised ``p`` and ``q`` (scipy ``entropy(p, q)``):
    terms with ``p == 0`` are 0, a term with ``p > 0 == q`` makes it infinite."""
    ps, qs = p.sum(), q.sum()
    if not ps > 0:
        return 0.0
    if not qs > 0:
        return float(np.inf)
    pn, qn = p / ps, q / qs
    pos = pn > 0
    if np.any(qn[pos] == 0):
        return float(np.inf)
    return float(np.sum(pn[pos] * np.log(pn[pos] / qn[pos])))


def entropy_divergences(hist: npt.ArrayLike, edges: npt.ArrayLike,
                        bit_width: int, unsigned: bool = False, *,
                        start_bin: int = START_BIN,
                        stride: int = STRIDE) -> list[tuple[int, float]]:
    """``[(i, KL)]`` of every entropy candidate (see ``entropy_amax``)."""
    h, _ = _arrays(hist, edges)
    h = h.copy()
    n = h.size
    if n > 1:
        h[0] = h[1]
    nbins = 1 << (bit_width - 1 + int(bool(unsigned)))
    candidates = list(range(start_bin, n + 1, stride))
    if not candidates:
        raise ValueError(f"no entropy candidate: start bin {start_bin} > {n} bins")
    out = []
    for i in candidates:
        part = h[:i]
        p = part.copy()
        p[-1] += h[i:].sum()
        group = (np.arange(i, dtype=np.int64) * nbins) // i
        nonempty = part != 0
        sums = np.bincount(group, weights=part, minlength=nbins)
        counts = np.bincount(group, weights=nonempty.astype(np.float64), minlength=nbins)
        q = np.where(nonempty, sums[group] / np.maximum(counts[group], 1.0), 0.0)
        out.append((i, kl_divergence(p, q)))
    return out


def entropy_amax(hist: npt.ArrayLike, edges: npt.ArrayLike,
                 bit_width: int, unsigned: bool = False, *,
                 start_bin: int = START_BIN, stride: int = STRIDE) -> float:
    """``edges[i]`` for the last i (start_bin, start_bin + stride, ... <= n) of minimal KL
    divergence between the clipped histogram and its ``2^(bw-1)``-level (``2^bw`` unsigned)
    requantization.

    Bin 0 first takes bin 1's count. For a candidate i: the reference is ``hist[:i]`` with the
    mass of ``hist[i:]`` added to its last bin; the candidate splits ``[0, i)`` into ``nbins``
    equal groups (bin j is in group ``j * nbins // i``, numpy ``digitize`` on
    ``linspace(0, i, nbins + 1)``) and spreads each group's count evenly over the group's
    non-empty bins (empty bins of the original histogram stay empty).
    """
    div = entropy_divergences(hist, edges, bit_width, unsigned, start_bin=start_bin,
                              stride=stride)
    best_i, best_kl = div[-1][0], np.inf
    for i, kl in div:
        if kl <= best_kl:  # '<=': the last of equal minima
            best_i, best_kl = i, kl
    _, e = _arrays(hist, edges)
    return float(e[best_i])
