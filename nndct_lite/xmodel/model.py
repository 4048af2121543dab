"""A neutral in-memory XModel graph: :class:`XGraph` of :class:`XOp` with :class:`XTensor` outputs.

Nothing here depends on protobuf or XIR. Every attribute is an :class:`Attr`, which keeps the exact
``AttrValue`` member (:class:`AttrType`): ``Attr.int32(1)`` and ``Attr.int64(1)`` are different
attributes and are written differently, because XIR reads attributes with an exact-type cast.

Building a graph (ops must be added producers first)::

    g = XGraph("net")
    g.add(data_op("input", [1, 32, 32, 3]))
    g.add(fix_op("input_fix", "input", [1, 32, 32, 3], fix_point=5))
    g.add(const_op("w", weights_ohwi_float32))

:meth:`XOp.set_attr` with a plain Python value picks the type the op registry expects for that
attribute (``kernel`` of ``conv2d`` becomes int32_vec), otherwise the XIR binding's rule
(:meth:`Attr.infer`). Pass an :class:`Attr` to force a type.
"""
from __future__ import annotations

import builtins
import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from nndct_lite.errors import ExportError

__all__ = [
    "AttrType", "Attr", "DataType", "XTensor", "XOp", "XSubGraph", "XGraph",
    "parse_data_type", "data_type_name", "numpy_dtype_of", "const_op", "data_op", "fix_op",
    "INT32_MIN", "INT32_MAX",
]

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


@dataclass
class XTensor:
    """The single output tensor of an op. ``shape`` are the stored dims (NHWC for feature maps)."""

    name: str
    shape: tuple[int, ...]
    data_type: DataType = DataType.FLOAT
    bit_width: int = 32
    attrs: dict[str, Attr] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        self.data_type = DataType(self.data_type)
        for k, v in list(self.attrs.items()):
            self.attrs[k] = Attr.infer(v)

    @property
    def dtype_name(self) -> str:
        return data_type_name(self.data_type, self.bit_width)

    @classmethod
    def of(cls, name: str, shape: Iterable[int], data_type: str = "float32") -> "XTensor":
        dt, bits = parse_data_type(data_type)
        return cls(name, tuple(shape), dt, bits)


@dataclass
class XOp:
    """One op: ``inputs`` maps argument name (``input``, ``weights``, ``bias`` ...) to the ordered
    list of producer op names; ``attrs`` maps attribute name to :class:`Attr`."""

    name: str
    type: str
    attrs: dict[str, Attr] = field(default_factory=dict)
    inputs: dict[str, list[str]] = field(default_factory=dict)
    output: XTensor | None = None

    def __post_init__(self) -> None:
        attrs, self.attrs = dict(self.attrs), {}
        for k, v in attrs.items():
            self.set_attr(k, v)
        self.inputs = {k: [v] if isinstance(v, str) else list(v) for k, v in self.inputs.items()}

    def set_attr(self, name: str, value: Any) -> "XOp":
        """Set an attribute. A plain value gets the registry's type for ``(self.type, name)`` if
        registered, else :meth:`Attr.infer`'s. Returns self."""
        if not isinstance(value, Attr):
            from .ops import attr_type  # local import: ops imports this module
            t = attr_type(self.type, name)
            value = Attr(t, value) if t is not None else Attr.infer(value)
        self.attrs[name] = value
        return self

    def attr(self, name: str, default: Any = None) -> Any:
        """The attribute's plain value (``default`` when absent)."""
        a = self.attrs.get(name)
        return default if a is None else a.value

    def input_names(self) -> list[str]:
        """All producer names, argument by argument, in order."""
        return [n for ns in self.inputs.values() for n in ns]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.output.shape if self.output is not None else ()


@dataclass
class XSubGraph:
    """A subgraph: a leaf holds ``ops`` (names), a branch holds ``children``."""

    name: str
    ops: list[str] = field(default_factory=list)
    children: list["XSubGraph"] = field(default_factory=list)
    attrs: dict[str, Attr] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, v in list(self.attrs.items()):
            self.attrs[k] = Attr.infer(v)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self, depth: int = 0) -> Iterator[tuple[int, "XSubGraph"]]:
        yield depth, self
        for c in self.children:
            yield from c.walk(depth + 1)

    def all_ops(self) -> list[str]:
        if self.is_leaf:
            return list(self.ops)
        return [n for c in self.children for n in c.all_ops()]


@dataclass
class XGraph:
    """The whole model. ``ops`` are kept in insertion order, which must be topological.

    ``root`` is the subgraph tree (None: XIR builds a single ``root`` leaf). ``op_defs`` holds the
    registry copy of a file that was read, as serialized ``OpDef`` messages, so a re-write can
    keep it; graphs built in memory normally leave it empty (XIR does not need it).
    """

    name: str
    ops: list[XOp] = field(default_factory=list)
    attrs: dict[str, Attr] = field(default_factory=dict)
    root: XSubGraph | None = None
    op_defs: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        ops = list(self.ops)
        self.ops = []
        self._index: dict[str, int] = {}
        for op in ops:
            self._append(op)
        for k, v in list(self.attrs.items()):
            self.attrs[k] = Attr.infer(v)

    def _append(self, op: XOp) -> None:
        if op.name in self._index:
            raise ExportError(f"duplicate op name {op.name!r}", where=op.name)
        self._index[op.name] = len(self.ops)
        self.ops.append(op)

    # -- building -----------------------------------------------------------------------------
    def add(self, op: XOp, *, check_inputs: bool = True) -> XOp:
        """Append ``op``. With ``check_inputs`` every producer must already be in the graph, which
        keeps ``ops`` in topological order. Returns ``op``."""
        if check_inputs:
            for arg, names in op.inputs.items():
                for n in names:
                    if n not in self._index:
                        raise ExportError(
                            f"op {op.name!r} ({op.type}) input {arg}={n!r} is not in the graph yet",
                            where=op.name, hint="add producers before their consumers")
        self._append(op)
        return op

    def remove(self, name: str) -> XOp:
        """Remove an op by name (its consumers are not touched)."""
        i = self._index[name]
        op = self.ops.pop(i)
        self._reindex()
        return op

    def _reindex(self) -> None:
        self._index = {op.name: i for i, op in enumerate(self.ops)}
        if len(self._index) != len(self.ops):
            raise ExportError("duplicate op names in the graph")

    def reorder(self, names: Sequence[str]) -> None:
        """Put the ops in the order of ``names`` (a permutation of all op names)."""
        if sorted(names) != sorted(self._index):
            raise ValueError("reorder() needs every op name exactly once")
        self.ops = [self.ops[self._index[n]] for n in names]
        self._reindex()

    # -- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[XOp]:
        return iter(self.ops)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def op(self, name: str) -> XOp:
        try:
            return self.ops[self._index[name]]
        except KeyError:
            raise KeyError(f"no op named {name!r} in graph {self.name!r}") from None

    def index(self, name: str) -> int:
        return self._index[name]

    def consumers(self) -> dict[str, list[str]]:
        """op name -> names of the ops that read it (in graph order, no duplicates)."""
        out: dict[str, list[str]] = {op.name: [] for op in self.ops}
        for op in self.ops:
            for n in dict.fromkeys(op.input_names()):
                if n in out:
                    out[n].append(op.name)
        return out

    def input_ops(self) -> list[XOp]:
        """The ``data`` / ``data-fix`` ops, in graph order."""
        return [op for op in self.ops if op.type in ("data", "data-fix")]

    def output_ops(self) -> list[XOp]:
        """Ops nobody consumes (the graph outputs), in graph order, constants excluded."""
        cons = self.consumers()
        return [op for op in self.ops if not cons[op.name]
                and op.type not in ("const", "const-fix")]

    def topo_errors(self) -> list[str]:
        """Why ``ops`` is not a valid topological order (empty list when it is)."""
        errs, seen = [], set()
        for op in self.ops:
            for arg, names in op.inputs.items():
                for n in names:
                    if n not in self._index:
                        errs.append(f"op {op.name!r} ({op.type}) input {arg}={n!r} does not exist")
                    elif n not in seen:
                        errs.append(f"op {op.name!r} ({op.type}) input {arg}={n!r} comes later "
                                    f"in the op list (index {self._index[n]} > {self._index[op.name]})")
            seen.add(op.name)
        return errs

    def check_topological(self) -> None:
        """Raise :class:`ExportError` unless every op comes after all of its producers."""
        errs = self.topo_errors()
        if errs:
            raise ExportError("ops are not in topological order: " + errs[0]
                              + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""),
                              hint="add producers first, or call XGraph.toposort()")

    def toposort(self) -> None:
        """Reorder ``ops`` topologically, stably (keeps the current order where it can).
        Raises ExportError on a cycle or a dangling input."""
        pending = {op.name: {n for n in op.input_names()} for op in self.ops}
        for op in self.ops:
            for n in pending[op.name]:
                if n not in self._index:
                    raise ExportError(f"op {op.name!r} input {n!r} does not exist", where=op.name)
        done: set[str] = set()
        order: list[str] = []
        remaining = [op.name for op in self.ops]
        while remaining:
            progressed, rest = False, []
            for n in remaining:
                if pending[n] <= done:
                    order.append(n)
                    done.add(n)
                    progressed = True
                else:
                    rest.append(n)
            if not progressed:
                raise ExportError(f"the graph has a cycle through {rest[0]!r}", where=rest[0])
            remaining = rest
        self.reorder(order)

    def const_array(self, name: str) -> np.ndarray:
        """The data of a ``const`` / ``const-fix`` op as a numpy array of its shape."""
        op = self.op(name)
        return const_data(op)


def const_data(op: XOp) -> np.ndarray:
    """Decode the ``data`` bytes of a const op (``data_type`` names the element type)."""
    dt = numpy_dtype_of(op.attr("data_type", ""))
    if dt is None:
        raise ExportError(f"const op {op.name!r} has data_type {op.attr('data_type')!r} with no "
                          "numpy equivalent", where=op.name)
    shape = tuple(op.attr("shape", op.shape))
    raw = op.attr("data", b"")
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(raw) != n * dt.itemsize:
        raise ExportError(f"const op {op.name!r}: {len(raw)} data bytes but shape {list(shape)} x "
                          f"{dt.itemsize} bytes needs {n * dt.itemsize}", where=op.name)
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


# -- builders ---------------------------------------------------------------------------------

def _np_dtype_name(a: np.ndarray) -> str:
    name = a.dtype.name
    if name not in _NP_NAMES or name.startswith("x") or name == "float16":
        raise ExportError(f"const data dtype {a.dtype} is not supported; use int8..int64, "
                          "uint8..uint64, float32 or float64")
    return name


def const_op(name: str, array: Any, *, fixed: bool = False, data_type: str | None = None) -> XOp:
    """A ``const`` (or ``const-fix`` with ``fixed``) op holding ``array`` in C order, little
    endian. ``data_type`` defaults to the array's dtype name (``float32`` ...)."""
    a = np.asarray(array)
    if a.dtype == np.float64 and data_type is None and not isinstance(array, np.ndarray):
        a = a.astype(np.float32)  # plain Python floats -> float32, like XIR's create_const_op usage
    dname = data_type or _np_dtype_name(a)
    dt = numpy_dtype_of(dname)
    if dt is None:
        raise ExportError(f"const {name!r}: data_type {dname!r} has no numpy equivalent", where=name)
    data = np.ascontiguousarray(a.astype(dt, copy=False)).tobytes()
    shape = list(a.shape) if a.ndim else [1]
    kind, bits = parse_data_type(dname)
    return XOp(name, "const-fix" if fixed else "const",
               attrs={"shape": Attr.int32_vec(shape), "data_type": Attr.string(dname),
                      "data": Attr.bytes(data)},
               output=XTensor(name, tuple(shape), kind, bits))


def data_op(name: str, shape: Sequence[int], data_type: str = "float32", *,
            fixed: bool = False) -> XOp:
    """A ``data`` (or ``data-fix``) input placeholder. Feature maps are NHWC."""
    kind, bits = parse_data_type(data_type)
    return XOp(name, "data-fix" if fixed else "data",
               attrs={"shape": Attr.int32_vec(list(shape)), "data_type": Attr.string(data_type)},
               output=XTensor(name, tuple(shape), kind, bits))


def fix_op(name: str, input: str, shape: Sequence[int], fix_point: int, bit_width: int = 8, *,
           round_mode: str = "DPU_ROUND", if_signed: bool = True) -> XOp:
    """A ``fix`` op (float in, float out on the grid) as the Vitis AI quantizer writes it."""
    return XOp(name, "fix",
               attrs={"fix_point": Attr.int32(fix_point), "bit_width": Attr.int32(bit_width),
                      "round_mode": Attr.string(round_mode), "if_signed": Attr.bool(if_signed)},
               inputs={"input": [input]}, output=XTensor(name, tuple(shape)))
