"""Tensor element types of an XModel: the file's :class:`DataType` enum, XIR's ``data_type``
spelling (``"float32"``, ``"xint8"``) and its numpy twin."""
from __future__ import annotations

import enum
import re

import numpy as np

from nndct_lite.errors import ExportError

__all__ = ["DataType", "parse_data_type", "data_type_name", "numpy_dtype_of", "const_dtype_name"]

class DataType(enum.IntEnum):
    """``Tensor.data_type`` enum of the file."""

    INT = 0
    UINT = 1
    XINT = 2
    XUINT = 3
    FLOAT = 4
    BFLOAT = 5
    UNKNOWN = 6


_DT_RE = re.compile(r"^([A-Za-z]+)([0-9]+)$")
_DT_KINDS = {"int": DataType.INT, "uint": DataType.UINT, "xint": DataType.XINT,
             "xuint": DataType.XUINT, "float": DataType.FLOAT, "bfloat": DataType.BFLOAT}


def parse_data_type(name: str) -> tuple[DataType, int]:
    """``"float32"`` / ``"FLOAT32"`` -> ``(DataType.FLOAT, 32)``. Raises ValueError on a string XIR
    would abort on (not letters followed by digits) or whose kind it would not know."""
    m = _DT_RE.match(name or "")
    if not m:
        raise ValueError(f"data type {name!r} is not <letters><digits> (e.g. 'float32')")
    kind = m.group(1)
    if kind != kind.lower() and kind != kind.upper():
        raise ValueError(f"data type {name!r} must be all lower or all upper case")
    dt = _DT_KINDS.get(kind.lower())
    if dt is None:
        raise ValueError(f"data type {name!r} has an unknown kind; use one of {sorted(_DT_KINDS)}")
    return dt, int(m.group(2))


def data_type_name(dt: DataType, bits: int) -> str:
    """``(DataType.XINT, 8)`` -> ``"xint8"`` (XIR's printed spelling)."""
    return f"{DataType(dt).name.lower()}{bits}"


_NP_NAMES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
             "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
             "float32": np.float32, "float64": np.float64, "float16": np.float16,
             "xint8": np.int8, "xuint8": np.uint8, "xint16": np.int16, "xuint16": np.uint16,
             "xint32": np.int32, "xuint32": np.uint32}


def numpy_dtype_of(name: str) -> np.dtype | None:
    """numpy dtype (little endian) of a ``data_type`` string, None when it has no numpy twin."""
    t = _NP_NAMES.get((name or "").lower())
    return None if t is None else np.dtype(t).newbyteorder("<")


def const_dtype_name(a: np.ndarray) -> str:
    """The ``data_type`` a const op holding ``a`` is written with (its numpy dtype's name)."""
    name = a.dtype.name
    if name not in _NP_NAMES or name.startswith("x") or name == "float16":
        raise ExportError(f"const data dtype {a.dtype} is not supported; use int8..int64, "
                          "uint8..uint64, float32 or float64")
    return name
