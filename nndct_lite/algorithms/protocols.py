"""What the algorithms need from a quantization session.

The session (``nndct_lite.session``) sits above the algorithms and may not be imported here, not
even for types (tests/structure/test_layers.py); these protocols describe the part of it the
algorithms read and write, and ``QuantSession`` satisfies them structurally."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, TypeVar

import torch
import torch.nn as nn

from ..graph.ir import Graph

__all__ = ["RankSync", "FinetuneSession"]

T = TypeVar("T")


class RankSync(Protocol):
    """``session.dist``: the other ranks of a distributed run (``nndct_lite.distributed``)."""

    def finalize(self) -> int:
        """Merge every rank's calibration; the number of calibration forwards of all ranks."""
        ...

    def write_once(self, fn: Callable[[], T], what: str, agree: object = None) -> T:
        """Rank 0 runs ``fn`` (a write) once every rank holds the same ``agree``."""
        ...

    def steps(self, n_local: int) -> list[list[int]]:
        """Optimizer steps over the cached batches: the local batch indices of each step."""
        ...

    def all_batches(self, values: list[T]) -> list[T]:
        """Every rank's per-batch values, step-major."""
        ...

    def average_gradients(self, params: list[torch.Tensor], count: int) -> None:
        """Average each ``p.grad`` over the ranks that had a batch in this step."""
        ...

    def sum_tensors(self, tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
        """Each tensor summed over the ranks, in rank order (float64; the same on every rank)."""
        ...


class FinetuneSession(Protocol):
    """The session as fast finetune uses it."""

    @property
    def graph(self) -> Graph: ...

    @property
    def model(self) -> nn.Module: ...

    @property
    def output_dir(self) -> Path: ...

    @property
    def dist(self) -> RankSync | None: ...

    fast_finetuned: bool
    forwards: int
