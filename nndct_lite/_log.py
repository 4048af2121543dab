"""Loggers and progress bars. The library never adds handlers; only the CLI does."""
from __future__ import annotations

import logging
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

__all__ = ["get_logger", "progress"]

T = TypeVar("T")


def get_logger(stage: str) -> logging.Logger:
    """Return the logger ``nndct_lite.<stage>``."""
    return logging.getLogger(f"nndct_lite.{stage}")


def progress(iterable: Iterable[T], desc: str, total: int | None = None,
             disable: bool | None = None) -> Iterable[T]:
    """A tqdm bar on stderr when stderr is a terminal; elsewhere (logs, CI) no bar is drawn and
    the loop's own log lines report progress. ``disable`` overrides the terminal check."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True)
