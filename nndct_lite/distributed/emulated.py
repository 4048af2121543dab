"""The in-process world of ``emulate(N)``: one process plays N ranks, one after the other."""
from __future__ import annotations

from typing import Any, Callable, Literal

__all__ = ["EmulatedWorld"]


class EmulatedWorld:
    """``size`` ranks played in turn by this process (rank 0, the writer)."""

    emulated: Literal[True] = True
    rank = 0

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"world_size must be a positive integer, got {size!r}")
        self.size = size

    @property
    def is_writer(self) -> bool:
        return True

    def run_on_writer(self, fn: Callable[[], Any], what: str, **_: object) -> Any:
        return fn()

    def __repr__(self) -> str:
        return f"EmulatedWorld(size={self.size})"
