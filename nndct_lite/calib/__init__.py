"""Calibration: observers that turn observed tensors into ``QuantParams`` (numerics.md 4).

Start with ``make_observer(spec, role=...)``; see ``docs/calibration.md`` for the methods, when
to pick which, and how batches combine.
"""
from .base import BatchMode, Observer, ObserverLike, Role, Scratch
from .factory import make_observer
from .histogram import (ACCUMULATE_BINS, HIST_BINS, AccumulatedHistogram, HistogramObserver,
                        batch_histogram, search_amax)
from .minmax import MinMaxObserver, maxmin_scale
from .pof2 import DIFFS_SCOPE, Pof2Observer, diffs_fix_pos, range_fix_pos
from .search import (entropy_amax, entropy_divergences, kl_divergence, mse_amax, mse_errors,
                     percentile_amax)
from .stats import FixPosVotes, ScaleHistory, mode_of, reduce_values

__all__ = [
    "Role", "BatchMode", "Observer", "ObserverLike", "Scratch", "make_observer",
    "Pof2Observer", "MinMaxObserver", "HistogramObserver",
    "diffs_fix_pos", "range_fix_pos", "maxmin_scale",
    "percentile_amax", "mse_amax", "entropy_amax", "mse_errors", "entropy_divergences",
    "kl_divergence", "batch_histogram", "search_amax", "AccumulatedHistogram",
    "FixPosVotes", "ScaleHistory", "reduce_values", "mode_of",
    "DIFFS_SCOPE", "HIST_BINS", "ACCUMULATE_BINS",
]
