"""Step-synchronous stand-ins for an observer and a bias corrector.

A calibration *step* is one forward on every rank. During step ``k`` a rank's quantizer sees the
statistics of every batch of steps ``< k`` (all ranks) plus its own batch ``k``; at the end of
the step every rank's contribution is folded in, in rank order, so that all ranks hold the same
state again. ``StepObserver`` keeps three observers of one configuration:

* ``base``: the merged statistics of all completed steps (equal on every rank);
* ``view``: ``base`` plus this rank's batches of the current step (what ``compute()`` reads,
  i.e. what the FakeQuantizer fake-quantizes the current batch with);
* ``pending``: this rank's batches of the current step only (what it contributes).

A batch is observed once, into a fresh observer, and merged into ``view`` and ``pending``; the
observers' ``merge`` is exact and order-independent (calib/base.py), so with one rank this is the
ordinary running calibration.

``StepBiasCorrector`` measures during the forward (with the bias of the step's start) and applies
the updates of the step's batches at its end, one after the other in rank order.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import torch

from ..calib.base import Observer
from ..calib.bias_correction import BiasCorrector
from ..calib import Role
from ..numerics.params import QuantParams

__all__ = ["StepObserver", "StepBiasCorrector"]


class StepObserver:
    """Wraps the FakeQuantizer's observer; ``observe``/``compute`` as the observer protocol."""

    def __init__(self, inner: Observer) -> None:
        self._template = copy.deepcopy(inner)
        self._clear(self._template)
        self.base = self.new()
        self.view = copy.deepcopy(inner)
        self.pending = copy.deepcopy(inner)   # anything observed before wrapping counts as ours

    @staticmethod
    def _clear(o: Observer) -> None:
        o.reset()
        o.batches = 0
        o.nonfinite_batches = 0
        o.channels = None

    def new(self) -> Observer:
        """A fresh observer of the same configuration."""
        o = copy.copy(self._template)
        self._clear(o)
        return o

    # ----------------------------------------------------------------- observer protocol
    def observe(self, x: torch.Tensor) -> None:
        if self.view.role is Role.PARAM and self.view.batches:
            return  # parameters are calibrated on their first batch only
        b = self.new()
        b.observe(x)
        if b.batches or b.nonfinite_batches:
            self.view.merge(b)
            self.pending.merge(b)

    def compute(self) -> QuantParams:
        return self.view.compute()

    @property
    def nonfinite_batches(self) -> int:
        return self.view.nonfinite_batches

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("base", "view", "pending"):
            raise AttributeError(name)
        return getattr(self.view, name)

    # ----------------------------------------------------------------- steps
    @property
    def has_pending(self) -> bool:
        return bool(self.pending.batches or self.pending.nonfinite_batches)

    def take(self) -> Observer:
        """This rank's contribution to the current step; the view falls back to ``base``."""
        p = self.pending
        self.pending = self.new()
        self.view = copy.deepcopy(self.base)
        return p

    def end_step(self, parts: Iterable[Observer]) -> None:
        """Fold the step's contributions (rank order) into ``base``."""
        for p in parts:
            self.base.merge(p)
        self.view = copy.deepcopy(self.base)
        self.pending = self.new()


#: one batch's ``(noise, signal, per-channel mean error)`` (``BiasCorrector.measure``)
Measurement = tuple[float, float, torch.Tensor | None]


class StepBiasCorrector(BiasCorrector):
    """``BiasCorrector`` whose updates wait for the end of the step (see the module docstring).

    ``step`` only measures (signal power, noise power, per-channel mean error of this batch,
    with the bias of the step's start); ``apply`` runs ``BiasCorrector.step``'s state machine on
    each measurement of the step in rank order. One measurement per step is exactly
    ``BiasCorrector.step`` (same operations, same order)."""

    def __init__(self, rate: float = 0.05) -> None:
        super().__init__(rate)
        self.pending: Measurement | None = None

    @classmethod
    def replacing(cls, bc: BiasCorrector) -> "StepBiasCorrector":
        new = cls(bc.rate)
        new.__dict__.update({k: v for k, v in bc.__dict__.items() if k != "pending"})
        new.pending = None
        return new

    def step(self, out_q: torch.Tensor, out_f: torch.Tensor, dims: list[int], *,
             reuse_out_f: bool = False) -> None:
        if self.stopped or self.bias is None:
            return
        self.pending = self.measure(out_q, out_f, dims, reuse_out_f)

    def take(self) -> Measurement | None:
        m, self.pending = self.pending, None
        return m

    def apply(self, measurements: Iterable[Measurement]) -> None:
        """The updates of one step's batches, in rank order (a stop skips the rest)."""
        for noise, signal, mean_err in measurements:
            if self.stopped:
                return
            self.update(noise, signal, mean_err)
