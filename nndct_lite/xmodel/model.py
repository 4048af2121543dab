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

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from nndct_lite.errors import ExportError

from .attrs import INT32_MAX, INT32_MIN, Attr, AttrType
from .dtypes import DataType, const_dtype_name, data_type_name, numpy_dtype_of, parse_data_type
from .ops import attr_type

__all__ = [
    "AttrType", "Attr", "DataType", "XTensor", "XOp", "XSubGraph", "XGraph",
    "parse_data_type", "data_type_name", "numpy_dtype_of", "const_op", "data_op", "fix_op",
    "INT32_MIN", "INT32_MAX",
]


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

def const_op(name: str, array: Any, *, fixed: bool = False, data_type: str | None = None) -> XOp:
    """A ``const`` (or ``const-fix`` with ``fixed``) op holding ``array`` in C order, little
    endian. ``data_type`` defaults to the array's dtype name (``float32`` ...)."""
    a = np.asarray(array)
    if a.dtype == np.float64 and data_type is None and not isinstance(array, np.ndarray):
        a = a.astype(np.float32)  # plain Python floats -> float32, like XIR's create_const_op usage
    dname = data_type or const_dtype_name(a)
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
