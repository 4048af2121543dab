"""The simulator's op registry: op type -> implementation, and how CPU op names are resolved.

Every implementation takes ``(ctx, op, ins)`` where ``ins`` maps argument name to the list of
input values (:class:`~.values.Fixed` / :class:`~.values.Floating`) and returns one value. The op
families register themselves here (``ops_conv``, ``ops_act``, ``ops_eltwise``, ``ops_pool``,
``ops_shape``, ``ops_cpu``); :func:`resolve` is the only lookup the engine uses.

Op types that are not XIR built-ins are CPU ops: the original vai_q_pytorch writes them with
the aten name (``aten::mean``, ``aten::silu_``), our exporter as ``custom_<name>``. Both are
resolved through :data:`CPU_ALIASES` after stripping the ``aten::`` / ``custom_`` prefix and a
trailing in-place ``_`` (``aten::silu_`` -> ``silu``).
"""
from __future__ import annotations

import re
from typing import Callable

from nndct_lite.xmodel.model import XOp

from .values import SimError, Value

__all__ = ["IMPLS", "FLOAT_OPS", "CPU_ALIASES", "register", "resolve", "cpu_name",
           "supported_op_types", "supported_cpu_names", "unsupported_error"]

Impl = Callable[[object, XOp, dict[str, list[Value]]], Value]

#: XIR op type -> implementation
IMPLS: dict[str, Impl] = {}
#: op types that are computed in float64 (not fixed-point); their results are marked inexact
FLOAT_OPS: set[str] = set()
#: CPU op base names (``mean``, ``silu`` ...) -> implementation, for ``aten::*`` / ``custom_*``
CPU_ALIASES: dict[str, Impl] = {}


def register(*names: str, float_op: bool = False):
    """Decorator: register ``fn`` for each op type in ``names``."""
    def deco(fn):
        for n in names:
            IMPLS[n] = fn
            if float_op:
                FLOAT_OPS.add(n)
        return fn
    return deco


def register_cpu(*names: str):
    """Decorator: register ``fn`` for CPU op base names (see :func:`cpu_name`)."""
    def deco(fn):
        for n in names:
            CPU_ALIASES[n] = fn
        return fn
    return deco


_PREFIXES = ("aten::", "custom_", "torch_nn_functional_", "torch_", "aten_", "f_")


def cpu_name(op_type: str) -> str | None:
    """Base name of a CPU op type (``aten::silu_`` -> ``silu``, ``custom_mean`` -> ``mean``), or
    None when the type is neither an aten name nor a ``custom_`` op."""
    t = op_type
    if not (t.startswith("aten::") or t.startswith("custom_")):
        return None
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if t.startswith(p) and len(t) > len(p):
                t, changed = t[len(p):], True
    t = re.sub(r"_+$", "", t).lower()
    return t


def resolve(op: XOp) -> Impl | None:
    """The implementation for ``op`` (built-in XIR type first, then the CPU name), or None."""
    fn = IMPLS.get(op.type)
    if fn is not None:
        return fn
    base = cpu_name(op.type)
    if base is not None:
        return CPU_ALIASES.get(base)
    return None


def is_float_op(op_type: str) -> bool:
    return op_type in FLOAT_OPS or cpu_name(op_type) is not None


def supported_op_types() -> list[str]:
    """Every XIR op type the simulator runs (CPU op names: :func:`supported_cpu_names`)."""
    return sorted(IMPLS)


def supported_cpu_names() -> list[str]:
    """Base names accepted as ``aten::<name>`` or ``custom_<name>`` CPU ops."""
    return sorted(CPU_ALIASES)


def unsupported_error(ops: list[XOp]) -> SimError:
    """A clear error naming the unsupported ops, their types and what is supported."""
    first = ops[0]
    types = sorted({o.type for o in ops})
    names = ", ".join(f"{o.name!r} ({o.type})" for o in ops[:5])
    more = f" and {len(ops) - 5} more" if len(ops) > 5 else ""
    base = cpu_name(first.type)
    if base is not None:
        what = (f"CPU op names (as aten::<name> or custom_<name>): "
                f"{', '.join(supported_cpu_names())}")
    else:
        what = f"op types: {', '.join(supported_op_types())}"
    return SimError(f"op types not supported by the simulator: {types}; ops {names}{more}. "
                    f"Supported {what}", where=first.name,
                    hint="see nndct_lite.sim.supported_op_types() and docs/xmodel.md")
