"""Quant modes and how user input maps onto them."""
from __future__ import annotations

import enum
import warnings

from ..errors import ModeError

__all__ = ["QuantMode", "parse_quant_mode"]


class QuantMode(enum.Enum):
    """FLOAT: quantization off. CALIB: collect statistics. TEST: fixed parameters."""
    FLOAT = "float"
    CALIB = "calib"
    TEST = "test"


_LEGACY_INT = {0: QuantMode.FLOAT, 1: QuantMode.CALIB, 2: QuantMode.TEST}


def parse_quant_mode(value: object) -> QuantMode:
    """``'float' | 'calib' | 'test'`` (any case), a QuantMode, or the legacy ints 0/1/2."""
    if isinstance(value, QuantMode):
        return value
    if isinstance(value, bool):
        raise ModeError(f"quant_mode must be 'float', 'calib' or 'test', got {value!r}",
                        hint="pass quant_mode='calib' to calibrate, 'test' to evaluate")
    if isinstance(value, int):
        if value in _LEGACY_INT:
            warnings.warn("integer quant_mode values are deprecated; use 'calib' or 'test'",
                          DeprecationWarning, stacklevel=3)
            return _LEGACY_INT[value]
    if isinstance(value, str):
        try:
            return QuantMode(value.strip().lower())
        except ValueError:
            pass
    raise ModeError(f"unknown quant_mode {value!r}; accepted values: 'float', 'calib', 'test' "
                    "(or the legacy integers 0, 1, 2)",
                    hint="pass quant_mode='calib' to calibrate, 'test' to evaluate")
