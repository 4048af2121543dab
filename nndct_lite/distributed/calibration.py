"""Calibration step by step across ranks (the semantics: docs/scaling.md, "What you get").

After every forward of the quantized model in calib mode, each rank contributes what it observed
in that forward (observer statistics, bias-correction measurements) and every rank folds all
contributions in, in rank order. ``finalize()`` lets ranks with fewer batches keep answering
until every rank is done (uneven shards), so it returns only when all ranks hold the merged
statistics of every batch.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import numpy as np
import torch
import torch.nn as nn

from ..calib import Observer, Role
from ..config.spec import QuantConfig
from ..graph.ir import Graph
from ..graph.ops import CONV_LIKE
from ..quant.build import layer_of, quantizers
from ..state.modes import QuantMode
from .steps import StepBiasCorrector, StepObserver

__all__ = ["CalibrationSync", "SyncedSession", "World", "pack_state", "unpack_state"]

T = TypeVar("T")


class SyncedSession(Protocol):
    """What the distributed layer reads of a ``QuantSession`` (the session sits above it)."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def graph(self) -> Graph: ...

    @property
    def config(self) -> QuantConfig: ...

    @property
    def mode(self) -> QuantMode: ...

    @property
    def forwards(self) -> int: ...


class World(Protocol):
    """The ranks a session runs in: ``EmulatedWorld`` or ``group.ProcessGroupWorld``."""

    @property
    def emulated(self) -> bool: ...

    @property
    def rank(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def is_writer(self) -> bool: ...

    def run_on_writer(self, fn: Callable[[], Any], what: str, *, channel: str = ...) -> Any:
        """Rank 0 runs ``fn``; every rank gets its (picklable) result."""
        ...


def pack_state(state: dict) -> dict:
    """An observer state with its tensors as numpy arrays (compact, exact to pickle)."""
    return {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
            for k, v in state.items()}


def unpack_state(state: dict) -> dict:
    return {k: torch.from_numpy(np.array(v, copy=True)) if isinstance(v, np.ndarray) else v
            for k, v in state.items()}


class CalibrationSync:
    """The calibration half of ``session.dist``; subclasses decide how a step is exchanged."""

    channel: str

    def __init__(self, session: SyncedSession, world: World) -> None:
        self.session = session
        self.world = world
        model = session.model
        self.quantizers = list(quantizers(model).values())
        self.layers = [layer_of(model, n) for n in session.graph.nodes if n.kind in CONV_LIKE]
        self.steps_done = 0
        self._install()
        model.register_forward_pre_hook(self._before_forward)
        model.register_forward_hook(self._after_forward)

    detached = False

    def __deepcopy__(self, memo: dict[int, object]) -> CalibrationSync:
        # a deep copy of the quantized model (e.g. fast finetune's float reference) carries our
        # hooks; the copy's hooks stay inert and share nothing that cannot be copied
        twin = copy.copy(self)
        twin.detached = True
        return twin

    # ----------------------------------------------------------------- hooks
    def _calibrating(self) -> bool:
        return not self.detached and self.session.mode is QuantMode.CALIB \
            and bool(self.quantizers) and self.quantizers[0].mode is QuantMode.CALIB

    def _install(self) -> None:
        for q in self.quantizers:
            o = q.observer
            if o is None or isinstance(o, StepObserver):
                continue
            if not isinstance(o, Observer):
                raise TypeError(f"quantizer {q.key} has a {type(o).__name__}, not an Observer")
            q.observer = StepObserver(o)
        for m in self.layers:
            bc = getattr(m, "bias_corrector", None)
            if bc is not None and not isinstance(bc, StepBiasCorrector):
                # torch's stubs type Module.__setattr__'s value as Tensor | Module; any works
                m.bias_corrector = StepBiasCorrector.replacing(bc)  # type: ignore[assignment]

    def _before_forward(self, _module: nn.Module, _args: tuple) -> None:
        if self._calibrating():
            self._install()

    def _after_forward(self, _module: nn.Module, _args: tuple, _output: object) -> None:
        if self._calibrating():
            self.end_forward()

    # ----------------------------------------------------------------- contributions
    def collect(self) -> dict:
        """This rank's contribution of the forward that just ended, packed for pickling."""
        obs: dict[int, dict] = {}
        bcs: dict[int, tuple[float, float, np.ndarray | None]] = {}
        for i, q in enumerate(self.quantizers):
            o = q.observer
            if isinstance(o, StepObserver) and o.has_pending:
                obs[i] = pack_state(o.take().state_dict())
        for j, m in enumerate(self.layers):
            bc = getattr(m, "bias_corrector", None)
            meas = bc.take() if isinstance(bc, StepBiasCorrector) else None
            if meas is not None:
                noise, signal, mean_err = meas
                bcs[j] = (noise, signal,
                          None if mean_err is None else mean_err.detach().cpu().numpy())
        return {"obs": obs, "bc": bcs}

    def apply(self, contributions: list) -> None:
        """Fold one step's contributions (rank order) in; refresh the running parameters."""
        for i, q in enumerate(self.quantizers):
            states = [c["obs"][i] for c in contributions if i in c["obs"]]
            if not states or not isinstance(q.observer, StepObserver):
                continue
            parts = []
            for st in states:
                o = q.observer.new()
                o.load_state_dict(unpack_state(st))
                parts.append(o)
            q.observer.end_step(parts)
            view = q.observer.view
            q.nonfinite_batches = view.nonfinite_batches
            if view.batches and not q.keep_params and \
                    (q.role is not Role.PARAM or q.params is None or not q.params.is_set):
                q.params = view.compute()   # a rank without a batch yet takes the weights' too
        for j, m in enumerate(self.layers):
            ms = [c["bc"][j] for c in contributions if j in c["bc"]]
            bc = getattr(m, "bias_corrector", None)
            if ms and isinstance(bc, StepBiasCorrector):
                if bc.bias is None:          # this rank has not run the layer yet
                    bias, bias_q = m.bias, m._modules["bias_q"]
                    if not isinstance(bias, torch.Tensor) or bias_q is None:
                        raise ValueError("a bias-corrected layer has a bias and its quantizer")
                    bc.current_bias(bias, bias_q)
                bc.apply([(n, s, None if e is None else torch.from_numpy(np.array(e, copy=True)))
                          for n, s, e in ms])
        self.steps_done += 1

    # ----------------------------------------------------------------- to implement
    def end_forward(self) -> None:
        raise NotImplementedError

    def finalize(self) -> int:
        """Merge everything on every rank; the number of calibration forwards of all ranks."""
        raise NotImplementedError

    def write_once(self, fn: Callable[[], T], what: str, agree: object = None) -> T:
        """Rank 0 runs ``fn`` (a write) once every rank holds the same ``agree``; all return
        its result."""
        raise NotImplementedError

    def deploy(self, fn: Callable[[], T], what: str,
               reload: Callable[[], T] | None = None) -> T | str | Path | None:
        """An export: rank 0 runs ``fn`` (which writes a file) while the others wait."""
        raise NotImplementedError

    def steps(self, n_local: int) -> list[list[int]]:
        """Fast finetune's optimizer steps: the local cached batches of each step."""
        raise NotImplementedError

    def all_batches(self, values: list[T]) -> list[T]:
        """Every rank's per-batch values, step-major."""
        raise NotImplementedError

    def average_gradients(self, params: list[torch.Tensor], count: int) -> None:
        """Average each ``p.grad`` over the ranks that had a batch in this step."""
        raise NotImplementedError

    def sum_tensors(self, tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
        """Each tensor summed over the ranks, in rank order (float64)."""
        raise NotImplementedError
