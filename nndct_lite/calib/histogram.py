"""Histogram calibration: percentile, mse and entropy, float scale, symmetric (numerics.md 4.4).

Per batch (``BatchMode.PER_BATCH``, the original's default): ``|x|`` (``x`` itself when
``min(x) >= 0``) goes into 2048 bins over ``[0, max|x|]`` with ``torch.histc`` semantics (the
maximum falls in the last bin), edges ``max|x| * j / 2048`` in float64; the range search of
``search.py`` gives that batch's ``amax`` and ``scale = amax / qmax``; the per-batch scales combine
with ``calib_statistic_method``. Only the histogram (2048 numbers) and a few scalars leave the
device. Counts are exact: ``histc`` runs on chunks of at most 2^24 elements (a float32 count
stops growing at 2^24) and the chunks add up in float64.

Accumulated (``BatchMode.ACCUMULATE``): one histogram for the whole stream, ``bins`` (default
4096) equal bins over ``[0, 2^e)``, where ``2^e`` is the smallest power of two above every
``max|x|`` seen. When a batch needs a larger range, the old counts are re-binned exactly by adding
adjacent pairs (bin edges of the coarser grid are edges of the finer one, and the bin of ``v`` is
``floor(v * bins / 2^e)`` computed without rounding), so observing in any order, or merging two
observers, gives the same counts. ``compute()`` searches the histogram cut after its last
non-empty bin (``n`` bins, ``bins/2 < n <= bins``), with the start bin and stride scaled from
the original's 1536/16 of 2048 (``n * 3 // 4``, ``n // 128``).
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from .._log import get_logger
from ..config.spec import CalibMethod, QuantSpec
from ..errors import ConfigError
from ..numerics.rounding import RoundMode
from ..numerics.params import QuantParams
from .base import BatchMode, Observer, Role
from .search import entropy_amax, mse_amax, percentile_amax
from .stats import ScaleHistory

__all__ = ["HIST_BINS", "ACCUMULATE_BINS", "HISTC_CHUNK", "batch_histogram", "batch_amax",
           "finite_abs", "AccumulatedHistogram", "HistogramObserver", "search_amax",
           "HISTOGRAM_METHODS"]

_LOG = get_logger("calib")

#: bins of a per-batch histogram (option ``calib_histogram_bins``)
HIST_BINS = 2048
#: bins of the accumulated histogram
ACCUMULATE_BINS = 4096
#: at most this many elements per ``torch.histc`` call, so that float32 counts stay exact
HISTC_CHUNK = 1 << 24

HISTOGRAM_METHODS = (CalibMethod.PERCENTILE, CalibMethod.MSE, CalibMethod.ENTROPY)


def batch_histogram(a: torch.Tensor, hi: float, bins: int = HIST_BINS) -> torch.Tensor:
    """float64 counts of ``a`` (finite, inside ``[0, hi]``) in ``bins`` bins over ``[0, hi]``:
    ``torch.histc`` itself, on chunks of ``HISTC_CHUNK`` elements whose float32 counts are exact,
    added up in float64. Stays on ``a``'s device.
    """
    out = torch.zeros(bins, dtype=torch.float64, device=a.device)
    for chunk in a.reshape(-1).split(HISTC_CHUNK):
        out += torch.histc(chunk, bins=bins, min=0.0, max=hi).to(torch.float64)
    return out


def search_amax(hist: npt.ArrayLike, edges: npt.ArrayLike, spec: QuantSpec, *,
                start_bin: int = 1536, stride: int = 16) -> float:
    """The range search of ``spec.method`` on one histogram."""
    if spec.method is CalibMethod.PERCENTILE:
        return percentile_amax(hist, edges, spec.percentage)
    if spec.method is CalibMethod.MSE:
        return mse_amax(hist, edges, spec, start_bin=start_bin, stride=stride)
    if spec.method is CalibMethod.ENTROPY:
        return entropy_amax(hist, edges, spec.bit_width, spec.int_range.qmin >= 0,
                            start_bin=start_bin, stride=stride)
    raise ValueError(f"{spec.method!r} is not a histogram method")


def finite_abs(x: torch.Tensor) -> tuple[torch.Tensor, float, bool] | None:
    """``(|x| over its finite values, max |x|, had non-finite values)``; None when no value is
    finite. A tensor without negative values is returned as it is (no copy)."""
    flat = x.reshape(-1)
    mn, mx = torch.aminmax(flat)
    lo, hi = torch.stack([mn, mx]).tolist()
    nonfinite = not (math.isfinite(lo) and math.isfinite(hi))
    if nonfinite:
        flat = flat[torch.isfinite(flat)]
        if flat.numel() == 0:
            return None
        mn, mx = torch.aminmax(flat)
        lo, hi = torch.stack([mn, mx]).tolist()
    return (flat if lo >= 0 else flat.abs()), max(-lo, hi), nonfinite


def batch_amax(x: torch.Tensor, spec: QuantSpec, bins: int = HIST_BINS) -> tuple[float, bool] | None:
    """The clip range ``spec.method`` (percentile, mse or entropy) chooses for one batch, from a
    ``bins``-bin histogram of ``|x|`` over ``[0, max|x|]``, and whether ``x`` had non-finite
    values; None when no value is finite."""
    got = finite_abs(x)
    if got is None:
        return None
    a, amax, nonfinite = got
    if amax > 0:
        h = batch_histogram(a, amax, bins).cpu().numpy()
        edges = np.arange(bins + 1, dtype=np.float64) * (amax / bins)
        amax = search_amax(h, edges, spec, start_bin=bins * 3 // 4, stride=max(1, bins // 128))
    return amax, nonfinite


class AccumulatedHistogram:
    """Counts of ``|x|`` in ``bins`` equal bins over ``[0, 2^exp)``; exact to grow and merge."""

    def __init__(self, bins: int = ACCUMULATE_BINS):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 2, got {bins}")
        self.bins = bins
        self.exp: int | None = None          # None: only zeros so far (all in bin 0)
        self.counts: torch.Tensor | None = None

    def _ensure(self, device: torch.device | str) -> torch.Tensor:
        if self.counts is None:
            self.counts = torch.zeros(self.bins, dtype=torch.float64, device=device)
        elif self.counts.device != torch.device(device):
            self.counts = self.counts.to(device)
        return self.counts

    def _live(self) -> torch.Tensor:
        if self.counts is None:
            raise ValueError("the histogram has no counts yet")
        return self.counts

    def _grow(self, exp: int) -> int:
        """Widen the range to ``[0, 2^exp)`` (never narrows it); the exponent now in use."""
        if self.exp is not None and exp > self.exp:
            c = self._live()
            for _ in range(min(exp - self.exp, self.bins.bit_length())):
                c = torch.cat([c.view(-1, 2).sum(dim=1), torch.zeros_like(c[: self.bins // 2])])
            self.counts = c
        if self.exp is None or exp > self.exp:
            self.exp = exp
        return self.exp

    def add(self, a: torch.Tensor, amax: float) -> None:
        """Add the values of ``a`` (finite, >= 0, maximum ``amax``)."""
        counts = self._ensure(a.device)
        if amax <= 0:
            counts[0] += a.numel()
            return
        exp = self._grow(math.frexp(amax)[1])  # amax < 2^e
        # v * 2^-e in two exact power-of-two steps (each factor stays representable)
        half = -exp // 2
        scaled = (a * math.ldexp(1.0, half)).mul_(math.ldexp(1.0, -exp - half))
        counts = self._live()
        counts += batch_histogram(scaled, 1.0, self.bins)

    def merge(self, other: AccumulatedHistogram) -> None:
        if other.counts is None:
            return
        if other.bins != self.bins:
            raise ValueError("histograms with different bin counts")
        theirs = AccumulatedHistogram(self.bins)
        theirs.exp, theirs.counts = other.exp, other.counts.clone()
        mine = self._ensure(other.counts.device)
        theirs.counts = theirs.counts.to(mine.device)
        if self.exp is None:
            self.exp = theirs.exp
        elif theirs.exp is not None:
            top = max(self.exp, theirs.exp)
            self._grow(top)
            theirs._grow(top)
        counts = self._live()
        counts += theirs._live()

    def cropped(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(hist, edges)`` numpy float64, cut after the last non-empty bin; None if empty."""
        if self.counts is None:
            return None
        h = self.counts.cpu().numpy()
        nz = np.flatnonzero(h)
        if nz.size == 0:
            return None
        n = int(nz[-1]) + 1
        width = math.ldexp(1.0, self.exp if self.exp is not None else 0) / self.bins
        return h[:n].copy(), np.arange(n + 1, dtype=np.float64) * width

    def state(self) -> dict:
        return {"hist_exp": 0 if self.exp is None else self.exp,
                "hist_has_range": self.exp is not None,
                "hist_counts": (torch.zeros(0, dtype=torch.float64) if self.counts is None
                                else self.counts.cpu().clone())}

    def load(self, state: dict) -> None:
        counts = torch.as_tensor(state["hist_counts"], dtype=torch.float64)
        self.counts = counts.clone() if counts.numel() else None
        self.exp = int(state["hist_exp"]) if state["hist_has_range"] else None


class HistogramObserver(Observer):
    """Percentile / mse / entropy calibration (see the module docstring).

    mse always searches with the TensorRT-style half-even quantizer: the original's branch for
    other round modes cannot run (numerics.md 4.4), so a different ``spec.round_mode`` only
    affects the final fake-quant and a warning says so.
    """

    def __init__(self, spec: QuantSpec, *, role: Role, batch_mode: BatchMode = BatchMode.PER_BATCH,
                 bins: int = HIST_BINS, accumulate_bins: int = ACCUMULATE_BINS,
                 name: str | None = None):
        if spec.is_pof2 or spec.method not in HISTOGRAM_METHODS:
            raise ConfigError(f"method {spec.method.value!r} with scale_type "
                              f"{spec.scale_type.value!r} is not a histogram method", where=name)
        if not spec.symmetry:
            raise ConfigError(f"method {spec.method.value!r} needs symmetry true", where=name)
        if spec.method is CalibMethod.PERCENTILE and not 0.0 < spec.percentage <= 100.0:
            raise ConfigError(f"percentage must be in (0, 100], got {spec.percentage}",
                              where=name)
        if spec.method is CalibMethod.MSE and spec.round_mode is not RoundMode.HALF_EVEN:
            _LOG.warning("%s: mse with round_mode %s: the range is searched with half_even "
                         "(the original supports only half_even here)", name or "tensor",
                         spec.round_mode.value)
        self.batch_mode = batch_mode
        self.bins = bins
        self.accumulate_bins = accumulate_bins
        super().__init__(spec, role=role, axis=None, name=name)

    def _options(self) -> tuple:
        return (self.batch_mode, self.bins, self.accumulate_bins)

    def reset(self) -> None:
        self.history = ScaleHistory()
        self.hist = AccumulatedHistogram(self.accumulate_bins)

    def _observe(self, x: torch.Tensor) -> bool:
        if self.batch_mode is BatchMode.ACCUMULATE:
            got = finite_abs(x)
            if got is None:
                self.nonfinite_batches += 1
                return False
            a, amax, nonfinite = got
            self.nonfinite_batches += nonfinite
            self.hist.add(a, amax)
            return True
        found = batch_amax(x, self.spec, self.bins)
        if found is None:
            self.nonfinite_batches += 1
            return False
        amax, nonfinite = found
        self.nonfinite_batches += nonfinite
        self.history.add([amax / self.spec.int_range.qmax], [0])
        return True

    def compute(self) -> QuantParams:
        bw, qmax = self.spec.bit_width, self.spec.int_range.qmax
        if self.batch_mode is BatchMode.ACCUMULATE:
            if not self.batches:
                return QuantParams(bw)
            cut = self.hist.cropped()
            if cut is None or self.hist.exp is None:
                amax = 0.0
            elif cut[0].size < 2:
                amax = float(cut[1][-1])
            else:
                h, edges = cut
                n = h.size
                amax = search_amax(h, edges, self.spec, start_bin=n * 3 // 4,
                                   stride=max(1, n // 128))
            scale = amax / qmax
            return QuantParams(bw, scale=scale, zero_point=0, float_max=scale * qmax)
        red = self.history.reduce(self.spec.calib_statistic_method, qmax)
        if red is None:
            return QuantParams(bw)
        s, z, f = red
        return QuantParams(bw, scale=s[0], zero_point=z[0], float_max=f[0])

    def _merge(self, other: HistogramObserver) -> None:
        self.history.merge(other.history)
        self.hist.merge(other.hist)

    def _state(self) -> dict:
        return {**self.history.state(), **self.hist.state()}

    def _load_state(self, state: dict) -> None:
        self.history = ScaleHistory()
        self.history.load(state)
        self.hist = AccumulatedHistogram(self.accumulate_bins)
        self.hist.load(state)
