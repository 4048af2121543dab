"""Combining per-batch results (``calib_statistic_method``, numerics.md 4.2).

Two bounded histories:

* ``FixPosVotes``: how often each fix position came out, per channel (a dict fp -> count); its
  mode is the power-of-two result. Ties go to the smaller fp (DPU path: scipy ``mode`` on fps)
  or, with ``prefer_larger``, to the larger one (CPU/GPU path: the vote is on scales 2^-fp,
  and the smaller scale wins).
* ``ScaleHistory``: one (scale, zero point) per batch and channel; reduced with max, mean,
  median or modal. Every reduction is independent of the batch order (the mean uses a correctly
  rounded sum, ``math.fsum``), so concatenating two histories is an exact merge.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import torch

from ..config.spec import StatMethod

__all__ = ["reduce_values", "mode_of", "mode_of_counts", "FixPosVotes", "ScaleHistory"]


def mode_of(values: Sequence, *, prefer_larger: bool = False):
    """The most frequent value; on equal counts the smallest (or the largest)."""
    return mode_of_counts(Counter(values), prefer_larger=prefer_larger)


def mode_of_counts(counts: Counter, *, prefer_larger: bool = False):
    """``mode_of`` for values already counted (value -> count)."""
    best = max(counts.values())
    tied = [v for v, n in counts.items() if n == best]
    return max(tied) if prefer_larger else min(tied)


def reduce_values(values: Sequence[float], method: StatMethod) -> float:
    """Reduce one channel's per-batch values.

    ``MEDIAN`` of an even count is the mean of the two middle values (numpy's rule);
    ``MEAN`` is ``fsum / n``; ``MODAL`` is the smallest of the most frequent values.

    >>> [reduce_values([0.010, 0.012, 0.020], m) for m in (StatMethod.MAX, StatMethod.MEDIAN)]
    [0.02, 0.012]
    """
    if not values:
        raise ValueError("no values to reduce")
    if method is StatMethod.MAX:
        return max(values)
    if method is StatMethod.MEAN:
        return math.fsum(values) / len(values)
    if method is StatMethod.MEDIAN:
        s = sorted(values)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    if method is StatMethod.MODAL:
        return mode_of(values)
    raise ValueError(f"unsupported statistic {method!r}")


class FixPosVotes:
    """Per-channel counts of fix positions."""

    def __init__(self) -> None:
        self.counts: list[Counter] = []

    def __bool__(self) -> bool:
        return bool(self.counts)

    def add(self, fps: Sequence[int]) -> None:
        if not self.counts:
            self.counts = [Counter() for _ in fps]
        if len(fps) != len(self.counts):
            raise ValueError(f"{len(fps)} fix positions for {len(self.counts)} channels")
        for c, fp in zip(self.counts, fps):
            c[int(fp)] += 1

    def merge(self, other: "FixPosVotes") -> None:
        if not other.counts:
            return
        if not self.counts:
            self.counts = [Counter() for _ in other.counts]
        if len(other.counts) != len(self.counts):
            raise ValueError("votes for different channel counts")
        for a, b in zip(self.counts, other.counts):
            a.update(b)

    def mode(self, *, prefer_larger: bool = False) -> tuple[int, ...] | None:
        if not self.counts:
            return None
        return tuple(mode_of_counts(c, prefer_larger=prefer_larger) for c in self.counts)

    def state(self) -> dict[str, torch.Tensor]:
        values = sorted(set().union(*self.counts)) if self.counts else []
        table = torch.tensor([[c.get(v, 0) for v in values] for c in self.counts],
                             dtype=torch.int64).reshape(len(self.counts), len(values))
        return {"fp_values": torch.tensor(values, dtype=torch.int64), "fp_counts": table}

    def load(self, state: dict) -> None:
        values = [int(v) for v in torch.as_tensor(state["fp_values"]).tolist()]
        table = torch.as_tensor(state["fp_counts"]).tolist()
        self.counts = [Counter({v: int(n) for v, n in zip(values, row) if n}) for row in table]


class ScaleHistory:
    """Per-batch (scale, zero point) of every channel, in observation order."""

    def __init__(self) -> None:
        self.scales: list[tuple[float, ...]] = []
        self.zero_points: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self.scales)

    def add(self, scales: Sequence[float], zero_points: Sequence[int]) -> None:
        if self.scales and len(scales) != len(self.scales[0]):
            raise ValueError(f"{len(scales)} scales for {len(self.scales[0])} channels")
        self.scales.append(tuple(float(s) for s in scales))
        self.zero_points.append(tuple(int(z) for z in zero_points))

    def merge(self, other: "ScaleHistory") -> None:
        for s, z in zip(other.scales, other.zero_points):
            self.add(s, z)

    def reduce(self, method: StatMethod, qmax: int):
        """``(scales, zero_points, float_maxes)`` per channel, or None before any batch.

        float_max is reduced from the per-batch ``scale * qmax`` values, like the scale.
        """
        if not self.scales:
            return None
        out_s, out_z, out_f = [], [], []
        for c in range(len(self.scales[0])):
            col = [s[c] for s in self.scales]
            out_s.append(reduce_values(col, method))
            out_f.append(reduce_values([s * qmax for s in col], method))
            out_z.append(mode_of([z[c] for z in self.zero_points]))
        return tuple(out_s), tuple(out_z), tuple(out_f)

    def state(self) -> dict[str, torch.Tensor]:
        b, c = len(self.scales), len(self.scales[0]) if self.scales else 0
        return {"scales": torch.tensor(self.scales, dtype=torch.float64).reshape(b, c),
                "zero_points": torch.tensor(self.zero_points, dtype=torch.int64).reshape(b, c)}

    def load(self, state: dict) -> None:
        self.scales = [tuple(r) for r in torch.as_tensor(state["scales"]).tolist()]
        self.zero_points = [tuple(int(v) for v in r)
                            for r in torch.as_tensor(state["zero_points"]).tolist()]
