"""The torch arguments of a node written as a CPU op, so a reader can compute it.

A CPU op (``aten::<op>``) reads its tensors in argument order as ``input`` and carries every
other argument that has a plain value (numbers, bools, strings, int / float lists) as an
attribute named like the torch argument: ``aten::softmax`` gets ``dim``, ``aten::hardtanh``
``min_val`` / ``max_val``, ``aten::layer_norm`` ``normalized_shape`` / ``eps`` with the inputs
(input, weight, bias). A module's own parameters (``nn.LayerNorm``'s weight and bias) follow its
input as float consts. The ``input_args`` attribute names the torch argument of each input.

Names come from the function's Python signature, for builtins and tensor methods (which have
none) from :data:`POSITIONAL`, for a module from its ``__constants__`` (or its plain public
attributes)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from ...graph.ir import Node
from ...xmodel.model import Attr

__all__ = ["CallArgs", "call_args", "POSITIONAL"]

#: argument names after the first (tensor) argument, for callables without a Python signature
POSITIONAL: dict[str, tuple[str, ...]] = {
    "mean": ("dim", "keepdim"), "sum": ("dim", "keepdim"), "amax": ("dim", "keepdim"),
    "amin": ("dim", "keepdim"), "softmax": ("dim",), "log_softmax": ("dim",),
    "clamp": ("min", "max"), "clip": ("min", "max"), "hardtanh": ("min_val", "max_val"),
    "leaky_relu": ("negative_slope",), "elu": ("alpha",), "celu": ("alpha",),
    "layer_norm": ("normalized_shape", "weight", "bias", "eps"),
    "group_norm": ("num_groups", "weight", "bias", "eps"),
    "scaled_dot_product_attention": ("key", "value", "attn_mask", "dropout_p", "is_causal",
                                     "scale"),
    "gelu": ("approximate",), "add": ("other", "alpha"), "sub": ("other", "alpha"),
    "mul": ("other",), "div": ("other",), "pow": ("exponent",), "maximum": ("other",),
    "minimum": ("other",), "matmul": ("other",), "bmm": ("mat2",),
    "stochastic_depth": ("p", "mode", "training"),
}

#: arguments never written: they change how, not what, torch computes (or are the op's
#: reserved XIR attributes)
_SKIP = frozenset({"inplace", "_stacklevel", "dtype", "out", "name", "layout", "device",
                   "memory_format", "shape", "data_type", "training", "approximate_kernel"})


@dataclass
class CallArgs:
    """``inputs``: (argument name, tensor node or module parameter key) in call order;
    ``attrs``: the other arguments as XIR attributes."""

    inputs: list[tuple[str, Node | str]] = field(default_factory=list)
    attrs: dict[str, Attr] = field(default_factory=dict)


def _base(node: Node) -> str:
    t = node.target
    name = t if isinstance(t, str) else getattr(t, "__name__", "")
    return name.rstrip("_").lower()


def _attr(value: Any) -> Attr | None:
    """A plain value as an attribute (None for what has no attribute form)."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, bool):
        return Attr.bool(value)
    if isinstance(value, int):
        return Attr.int32(value) if -2 ** 31 <= value < 2 ** 31 else None
    if isinstance(value, float):
        return Attr.double(value)
    if isinstance(value, str):
        return Attr.string(value)
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, bool) for v in value):
            return Attr.bool_vec(list(value))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return Attr.int32_vec(list(value)) if all(-2 ** 31 <= v < 2 ** 31 for v in value) \
                else None
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return Attr.double_vec([float(v) for v in value])
    return None


def _named(node: Node) -> list[tuple[str, Any]]:
    """(name, value) of the call's arguments after the first; unnamed ones as ``arg<i>``."""
    args, kwargs = list(node.args[1:]), dict(node.kwargs)
    if node.op == "call_function" and callable(node.target):
        try:
            sig = inspect.signature(node.target)
            bound = sig.bind(*node.args, **node.kwargs)
        except (TypeError, ValueError):
            pass
        else:
            names = list(bound.arguments)
            return [(k, bound.arguments[k]) for k in names[1:]]
    pos = POSITIONAL.get(_base(node), ())
    out = [(pos[i] if i < len(pos) else f"arg{i + 1}", v) for i, v in enumerate(args)]
    return out + list(kwargs.items())


def _module_attrs(module: torch.nn.Module) -> list[tuple[str, Any]]:
    consts = getattr(type(module), "__constants__", None)
    if consts:
        return [(k, getattr(module, k, None)) for k in consts]
    return [(k, v) for k, v in vars(module).items() if not k.startswith("_")]


def call_args(node: Node) -> CallArgs:
    """The tensors and plain arguments of ``node``'s call (see the module docstring)."""
    res = CallArgs()

    def add(name: str, value: Any) -> None:
        if isinstance(value, Node):
            if value.is_tensor:
                res.inputs.append((name, value))
            return
        if isinstance(value, (list, tuple)) and any(isinstance(v, Node) for v in value):
            for v in value:
                if isinstance(v, Node) and v.is_tensor:
                    res.inputs.append((name, v))
            return
        if name in _SKIP or name in res.attrs:
            return
        a = _attr(value)
        if a is not None:
            res.attrs[name] = a

    first = node.args[0] if node.args else None
    if isinstance(first, Node) or (isinstance(first, (list, tuple))
                                   and any(isinstance(v, Node) for v in first)):
        add("input", first)
    if node.op == "call_module" and node.module is not None:
        for a in node.args[1:]:
            add("input", a)
        for k, v in node.kwargs.items():
            add(k, v)
        for key in node.params:
            res.inputs.append((key, key))
        for k, v in _module_attrs(node.module):
            add(k, v)
    else:
        for k, v in _named(node):
            add(k, v)
    return res
