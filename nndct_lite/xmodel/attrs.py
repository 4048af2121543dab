"""Typed XModel attribute values: :class:`Attr` keeps the exact ``AttrValue`` member
(:class:`AttrType`), because XIR reads attributes with an exact-type cast: ``Attr.int32(1)`` and
``Attr.int64(1)`` are different attributes and are written differently."""
from __future__ import annotations

import builtins
import enum
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["AttrType", "Attr", "INT32_MIN", "INT32_MAX"]

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_RANGES = {
    "int32": (INT32_MIN, INT32_MAX), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
}
_bool, _float, _bytes, _int, _str = builtins.bool, builtins.float, builtins.bytes, builtins.int, builtins.str


class AttrType(enum.Enum):
    """The ``AttrValue`` oneof member an attribute is stored in. ``value`` = (member, element kind,
    container) where container is ``scalar``, ``vec`` or ``map`` (map keys are strings)."""

    BOOL = ("bool_value", "bool", "scalar")
    INT32 = ("int32_value", "int32", "scalar")
    UINT32 = ("uint32_value", "uint32", "scalar")
    INT64 = ("int64_value", "int64", "scalar")
    UINT64 = ("uint64_value", "uint64", "scalar")
    FLOAT = ("float_value", "float", "scalar")
    DOUBLE = ("double_value", "double", "scalar")
    STRING = ("string_value", "string", "scalar")
    BYTES = ("bytes_value", "bytes", "scalar")
    BOOL_VEC = ("bool_vec_value", "bool", "vec")
    INT32_VEC = ("int32_vec_value", "int32", "vec")
    UINT32_VEC = ("uint32_vec_value", "uint32", "vec")
    INT64_VEC = ("int64_vec_value", "int64", "vec")
    UINT64_VEC = ("uint64_vec_value", "uint64", "vec")
    FLOAT_VEC = ("float_vec_value", "float", "vec")
    DOUBLE_VEC = ("double_vec_value", "double", "vec")
    STRING_VEC = ("string_vec_value", "string", "vec")
    BYTES_VEC = ("bytes_vec_value", "bytes", "vec")
    MAP_STR_INT32 = ("map_string_2_int32_value", "int32", "map")
    MAP_STR_UINT32 = ("map_string_2_uint32_value", "uint32", "map")
    MAP_STR_INT64 = ("map_string_2_int64_value", "int64", "map")
    MAP_STR_UINT64 = ("map_string_2_uint64_value", "uint64", "map")
    MAP_STR_STRING = ("map_string_2_string_value", "string", "map")
    MAP_STR_BYTES = ("map_string_2_bytes_value", "bytes", "map")
    MAP_STR_INT32_VEC = ("map_string_2_int32_vec_value", "int32", "mapvec")
    MAP_STR_UINT32_VEC = ("map_string_2_uint32_vec_value", "uint32", "mapvec")
    MAP_STR_INT64_VEC = ("map_string_2_int64_vec_value", "int64", "mapvec")
    MAP_STR_UINT64_VEC = ("map_string_2_uint64_vec_value", "uint64", "mapvec")
    MAP_STR_STRING_VEC = ("map_string_2_string_vec_value", "string", "mapvec")

    @property
    def member(self) -> str:
        """``AttrValue`` oneof member name, e.g. ``int32_vec_value``."""
        return self.value[0]

    @property
    def element(self) -> str:
        return self.value[1]

    @property
    def container(self) -> str:
        return self.value[2]

    @property
    def short(self) -> str:
        """Readable name: ``int32``, ``int32_vec``, ``map<string,int32_vec>``."""
        c = self.container
        if c == "scalar":
            return self.element
        if c == "vec":
            return f"{self.element}_vec"
        if c == "map":
            return f"map<string,{self.element}>"
        return f"map<string,{self.element}_vec>"

    @classmethod
    def from_member(cls, member: str) -> "AttrType":
        try:
            return _BY_MEMBER[member]
        except KeyError:
            raise ValueError(f"unknown AttrValue member {member!r}") from None


_BY_MEMBER = {t.member: t for t in AttrType}


def _norm_elem(kind: str, v: Any) -> Any:
    if kind == "bool":
        if isinstance(v, (_bool, np.bool_)):
            return _bool(v)
        raise TypeError(f"expected a bool, got {type(v).__name__} {v!r}")
    if kind in _RANGES:
        if isinstance(v, (_bool, np.bool_)) or not isinstance(v, (_int, np.integer)):
            raise TypeError(f"expected an integer for {kind}, got {type(v).__name__} {v!r}")
        v = _int(v)
        lo, hi = _RANGES[kind]
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of the {kind} range [{lo}, {hi}]")
        return v
    if kind == "float":
        if isinstance(v, (_bool, np.bool_)) or not isinstance(v, (_int, _float, np.integer, np.floating)):
            raise TypeError(f"expected a number for float, got {type(v).__name__} {v!r}")
        f32 = np.float32(v)
        if math.isinf(f32) and not math.isinf(_float(v)):
            raise ValueError(f"{v} overflows float32")
        return _float(f32)
    if kind == "double":
        if isinstance(v, (_bool, np.bool_)) or not isinstance(v, (_int, _float, np.integer, np.floating)):
            raise TypeError(f"expected a number for double, got {type(v).__name__} {v!r}")
        return _float(v)
    if kind == "string":
        if not isinstance(v, _str):
            raise TypeError(f"expected a str, got {type(v).__name__} {v!r}")
        return v
    if kind == "bytes":
        if isinstance(v, np.ndarray):
            return np.ascontiguousarray(v).tobytes()
        if isinstance(v, (_bytes, bytearray, memoryview)):
            return _bytes(v)
        raise TypeError(f"expected bytes, got {type(v).__name__}")
    raise AssertionError(kind)


@dataclass(frozen=True, eq=True)
class Attr:
    """One typed attribute value. ``value`` is normalised on construction: ints are Python ints
    (range-checked), ``float`` values are rounded to float32 (what the file can hold), vectors are
    tuples, maps are dicts ``{str: value}`` (vector values as tuples), bytes are ``bytes``."""

    type: AttrType
    value: Any

    def __post_init__(self) -> None:
        if not isinstance(self.type, AttrType):
            raise TypeError(f"Attr.type must be an AttrType, got {self.type!r}")
        kind, c = self.type.element, self.type.container
        v = self.value
        if c == "scalar":
            nv = _norm_elem(kind, v)
        elif c == "vec":
            if isinstance(v, (_str, _bytes)) or not isinstance(v, (Sequence, np.ndarray)):
                raise TypeError(f"{self.type.short} needs a sequence, got {type(v).__name__}")
            nv = tuple(_norm_elem(kind, x) for x in (v.tolist() if isinstance(v, np.ndarray) else v))
        else:
            if not isinstance(v, Mapping):
                raise TypeError(f"{self.type.short} needs a mapping, got {type(v).__name__}")
            nv = {}
            for k, x in v.items():
                if not isinstance(k, _str):
                    raise TypeError(f"map keys must be str, got {k!r}")
                if c == "map":
                    nv[k] = _norm_elem(kind, x)
                else:
                    nv[k] = tuple(_norm_elem(kind, e) for e in x)
        object.__setattr__(self, "value", nv)

    def __hash__(self) -> int:
        v = self.value
        if isinstance(v, dict):
            v = tuple(sorted(v.items()))
        return hash((self.type, v))

    def __repr__(self) -> str:
        v = self.value
        if isinstance(v, _bytes) and len(v) > 16:
            v = f"<{len(v)} bytes>"
        return f"Attr.{self.type.name.lower()}({v!r})"

    # -- constructors, one per common member ----------------------------------------------------
    @classmethod
    def bool(cls, v) -> "Attr":
        return cls(AttrType.BOOL, v)

    @classmethod
    def int32(cls, v) -> "Attr":
        return cls(AttrType.INT32, v)

    @classmethod
    def uint32(cls, v) -> "Attr":
        return cls(AttrType.UINT32, v)

    @classmethod
    def int64(cls, v) -> "Attr":
        return cls(AttrType.INT64, v)

    @classmethod
    def uint64(cls, v) -> "Attr":
        return cls(AttrType.UINT64, v)

    @classmethod
    def float(cls, v) -> "Attr":
        return cls(AttrType.FLOAT, v)

    @classmethod
    def double(cls, v) -> "Attr":
        return cls(AttrType.DOUBLE, v)

    @classmethod
    def string(cls, v) -> "Attr":
        return cls(AttrType.STRING, v)

    @classmethod
    def bytes(cls, v) -> "Attr":
        return cls(AttrType.BYTES, v)

    @classmethod
    def bool_vec(cls, v) -> "Attr":
        return cls(AttrType.BOOL_VEC, v)

    @classmethod
    def int32_vec(cls, v) -> "Attr":
        return cls(AttrType.INT32_VEC, v)

    @classmethod
    def uint32_vec(cls, v) -> "Attr":
        return cls(AttrType.UINT32_VEC, v)

    @classmethod
    def int64_vec(cls, v) -> "Attr":
        return cls(AttrType.INT64_VEC, v)

    @classmethod
    def uint64_vec(cls, v) -> "Attr":
        return cls(AttrType.UINT64_VEC, v)

    @classmethod
    def float_vec(cls, v) -> "Attr":
        return cls(AttrType.FLOAT_VEC, v)

    @classmethod
    def double_vec(cls, v) -> "Attr":
        return cls(AttrType.DOUBLE_VEC, v)

    @classmethod
    def string_vec(cls, v) -> "Attr":
        return cls(AttrType.STRING_VEC, v)

    @classmethod
    def bytes_vec(cls, v) -> "Attr":
        return cls(AttrType.BYTES_VEC, v)

    @classmethod
    def map_string_string(cls, v) -> "Attr":
        return cls(AttrType.MAP_STR_STRING, v)

    @classmethod
    def map_string_int32(cls, v) -> "Attr":
        return cls(AttrType.MAP_STR_INT32, v)

    @classmethod
    def infer(cls, v) -> "Attr":
        """Type a plain Python value the way XIR's Python binding does (format notes, section 3):
        bool -> bool, int -> int32, float -> double, str -> string, bytes/ndarray -> bytes,
        list of bool/int/float/str -> bool_vec/int32_vec/double_vec/string_vec, dict of
        str -> str / int -> map<string,string> / map<string,int32>. An :class:`Attr` passes through."""
        if isinstance(v, Attr):
            return v
        if isinstance(v, (_bool, np.bool_)):
            return cls.bool(v)
        if isinstance(v, (_int, np.integer)):
            return cls.int32(v)
        if isinstance(v, (_float, np.floating)):
            return cls.double(v)
        if isinstance(v, _str):
            return cls.string(v)
        if isinstance(v, (_bytes, bytearray, memoryview, np.ndarray)):
            return cls.bytes(v)
        if isinstance(v, Mapping):
            vals = list(v.values())
            if all(isinstance(x, _str) for x in vals):
                return cls(AttrType.MAP_STR_STRING, v)
            if all(isinstance(x, (_int, np.integer)) and not isinstance(x, _bool) for x in vals):
                return cls(AttrType.MAP_STR_INT32, v)
            raise TypeError(f"cannot infer an attribute type for the mapping {v!r}; pass an Attr")
        if isinstance(v, (list, tuple)):
            if all(isinstance(x, (_bool, np.bool_)) for x in v) and v:
                return cls.bool_vec(v)
            if all(isinstance(x, (_int, np.integer)) and not isinstance(x, _bool) for x in v):
                return cls.int32_vec(v)  # includes the empty list, like the binding
            if all(isinstance(x, (_int, _float, np.integer, np.floating)) for x in v):
                return cls.double_vec(v)
            if all(isinstance(x, _str) for x in v):
                return cls.string_vec(v)
        raise TypeError(f"cannot infer an attribute type for {type(v).__name__} {v!r}; pass an Attr")

    def short_str(self, limit: int = 8) -> str:
        """Compact text for summaries: ``[3, 3]``, ``'DPU_ROUND'``, ``<1728 bytes>``."""
        v = self.value
        if isinstance(v, _bytes):
            return f"<{len(v)} bytes>"
        if isinstance(v, tuple):
            items = [repr(x) if isinstance(x, _str)
                     else (f"<{len(x)} bytes>" if isinstance(x, _bytes) else _str(x))
                     for x in v[:limit]]
            return "[" + ", ".join(items) + (f", ... ({len(v)})" if len(v) > limit else "") + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {x}" for k, x in list(v.items())[:limit]) + "}"
        return repr(v)
