"""The observer protocol, tensor roles, and the input handling shared by every method.

An observer turns the tensors seen at one quantization point into ``QuantParams``:

* ``observe(x)`` takes one batch (CPU or CUDA; only a few scalars come back to the host);
* ``compute()`` gives the parameters from everything observed so far (the "running" value the
  original uses to fake-quantize the very batch it has just observed);
* ``merge(other)`` folds in the state of another observer of the same configuration, e.g. one
  that ran on another process, so that the result equals one observer that saw both streams;
* ``state_dict()`` / ``load_state_dict()`` hold only tensors and Python numbers, of a size that
  does not grow with the data (at most a few numbers per batch).

Inputs that are not float tensors, and empty tensors, are ignored. Non-finite values (NaN, +-inf)
never enter a statistic: they are dropped (per-tensor) or neutralised (per-channel), and the batch
is counted in ``nonfinite_batches`` so that the caller can name the tensor in a report. A batch
made only of non-finite values is not counted in ``batches``.
"""
from __future__ import annotations

import abc
import enum
from typing import TYPE_CHECKING, Any, Protocol

import torch

from ..config.spec import QuantSpec
from ..errors import CalibrationError
from ..numerics.params import QuantParams, Role

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Role", "BatchMode", "Observer", "ObserverLike", "rows", "finite_rows"]

_NARROW = (torch.float16, torch.bfloat16)


class BatchMode(enum.Enum):
    """How batches combine for the float-scale methods (option ``calibration_local``)."""

    #: each batch gives its own scale; scales combine with ``calib_statistic_method``
    #: (the original's default, ``calibration_local`` on)
    PER_BATCH = "per_batch"
    #: the statistic itself accumulates: running min/max for maxmin, one histogram with a
    #: power-of-two range for the histogram methods (``calibration_local`` off)
    ACCUMULATE = "accumulate"


def rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``x`` as a 2-D ``(channels, elements)`` tensor; one row when ``axis`` is None.

    A view when possible (contiguous input with the channel axis first), else a copy.
    """
    if axis is None:
        return dense_flat(x).reshape(1, -1)
    c = x.shape[axis]
    return x.movedim(axis, 0).reshape(c, -1)


def dense_flat(x: torch.Tensor) -> torch.Tensor:
    """All elements of ``x`` as a 1-D tensor in memory order: a view of a dense tensor in any
    dimension order (channels-last activations included), a contiguous copy otherwise.
    For order-free statistics (per-tensor ranges, sums of squares)."""
    if x.is_contiguous():
        return x.view(-1)
    def outer_first(d: int) -> tuple[int, int]:
        return -x.stride(d), -x.shape[d]
    order = sorted(range(x.dim()), key=outer_first)
    p = x.permute(order)
    return p.view(-1) if p.is_contiguous() else p.reshape(-1)


def finite_rows(x2: torch.Tensor) -> torch.Tensor:
    """A copy of ``x2`` with every non-finite value replaced by 0.

    Exact for the power-of-two search and for symmetric ranges: a zero changes neither
    ``max(min/lb, max/ub)`` nor ``max|x|`` (unless everything else is zero too), and adds no
    quantization error.
    """
    return torch.where(torch.isfinite(x2), x2, torch.zeros((), dtype=x2.dtype, device=x2.device))


class Scratch:
    """A reusable 1-D work buffer for the observers of one model.

    The power-of-two search needs a temporary the size of the activation on every batch;
    allocating it afresh costs more than the arithmetic (new pages are zeroed by the kernel), so
    the quantizers of a model share one, grown to the largest activation. Not thread-safe:
    calibration forwards of one model run one at a time."""

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None

    def get(self, like: torch.Tensor) -> torch.Tensor:
        """A 1-D tensor of ``like.numel()`` elements, ``like``'s dtype and device (contents
        undefined)."""
        n = like.numel()
        b = self._buf
        if b is None or b.numel() < n or b.dtype != like.dtype or b.device != like.device:
            b = self._buf = torch.empty(n, dtype=like.dtype, device=like.device)
        return b[:n]

    def __deepcopy__(self, memo: dict[int, object]) -> Scratch:
        return Scratch()   # a copy of a model does not share (or copy) the buffer


class ObserverLike(Protocol):
    """What a quantizer needs from its observer: an :class:`Observer`, or a stand-in that
    forwards to one (the step-synchronous wrapper of a distributed run)."""

    def observe(self, x: torch.Tensor) -> None: ...

    def compute(self) -> QuantParams: ...

    @property
    def nonfinite_batches(self) -> int: ...


class Observer(abc.ABC):
    """Base class of every calibration method. See the module docstring for the protocol.

    ``spec`` is the tensor's resolved settings, ``role`` its role, ``axis`` the channel axis for
    per-channel statistics (None: per-tensor), ``name`` only labels log messages.
    """

    #: shared work buffer (set by the quantized model's builder); None: allocate per batch
    scratch: Scratch | None = None

    def __init__(self, spec: QuantSpec, *, role: Role, axis: int | None = None,
                 name: str | None = None):
        self.spec = spec
        self.role = role
        self.axis = axis
        self.name = name
        self.batches = 0
        self.nonfinite_batches = 0
        self.channels: int | None = None
        self.reset()

    # ----------------------------------------------------------------- to implement
    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the statistics (not ``batches`` / ``nonfinite_batches``)."""

    @abc.abstractmethod
    def _observe(self, x: torch.Tensor) -> bool:
        """Add one batch (float32/float64, non-empty). Return whether it contributed."""

    @abc.abstractmethod
    def compute(self) -> QuantParams:
        """Parameters from everything observed so far; unset ``QuantParams`` before any batch."""

    @abc.abstractmethod
    def _merge(self, other: Self) -> None:
        """Fold ``other``'s statistics into ours (same class and configuration)."""

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]:
        """The statistics as tensors / numbers."""

    @abc.abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``_state``."""

    def _options(self) -> tuple:
        """Constructor options beyond spec/role/axis that must agree for a merge."""
        return ()

    # ----------------------------------------------------------------- protocol
    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def config(self) -> tuple:
        """Everything that must be equal for two observers to be mergeable."""
        return (type(self).__name__, self.spec, self.role, self.axis) + self._options()

    def observe(self, x: torch.Tensor) -> None:
        """Add one batch. Parameters (``Role.PARAM``) only take the first one."""
        if self.role is Role.PARAM and self.batches:
            return
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            return
        x = x.detach()
        if x.dtype in _NARROW:
            x = x.float()
        if self.axis is not None:
            if x.dim() == 0 or not -x.dim() <= self.axis < x.dim():
                raise CalibrationError(
                    f"per-channel axis {self.axis} does not exist in a tensor of shape "
                    f"{tuple(x.shape)}", where=self.name)
            c = x.shape[self.axis]
            if self.channels is None:
                self.channels = c
            elif c != self.channels:
                raise CalibrationError(
                    f"per-channel tensor changed from {self.channels} to {c} channels",
                    where=self.name)
        if self._observe(x):
            self.batches += 1

    def merge(self, other: "Observer") -> None:
        """Combine ``other`` (same configuration) into this observer.

        For ``Role.PARAM`` the union of two streams is its first batch: this observer's if it
        has one, else ``other``'s.
        """
        if type(other) is not type(self) or other.config != self.config:
            raise ValueError(f"cannot merge {other.config} into {self.config}")
        if self.channels is not None and other.channels is not None \
                and self.channels != other.channels:
            raise CalibrationError(
                f"cannot merge {other.channels} channels into {self.channels}", where=self.name)
        nonfinite = self.nonfinite_batches + other.nonfinite_batches
        if self.role is Role.PARAM:
            if not self.batches and other.batches:
                self.load_state_dict(other.state_dict())
        elif other.batches:
            self._merge(other)
            self.batches += other.batches
            if self.channels is None:
                self.channels = other.channels
        self.nonfinite_batches = nonfinite

    def state_dict(self) -> dict[str, Any]:
        """Counters and statistics; tensors are on the CPU."""
        return {"batches": self.batches, "nonfinite_batches": self.nonfinite_batches,
                "channels": -1 if self.channels is None else self.channels, **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise CalibrationError(
                f"observer state has keys {sorted(state)}, expected {sorted(expected)}",
                where=self.name, hint="load a state saved by an observer of the same method")
        self.batches = int(state["batches"])
        self.nonfinite_batches = int(state["nonfinite_batches"])
        c = int(state["channels"])
        self.channels = None if c < 0 else c
        self._load_state(state)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(bw={self.spec.bit_width}, role={self.role.name}, "
                f"axis={self.axis}, batches={self.batches})")
