"""torch.fx front end: capture an ``nn.Module`` into the graph IR with vai-style scope names."""
from __future__ import annotations

import copy
import operator
import os
import traceback
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from .._log import get_logger
from ..errors import InputError, TraceError
from .naming import model_name_of
from .ir import Graph, Node
from .ops import OpKind, kind_of_call, kind_of_module
from .passes.normalize import normalize
from .tracer import ConcreteTracer, called_module, leaf_replacement, prune

__all__ = ["capture"]

_NOT_USER = (os.path.dirname(os.path.realpath(torch.__file__)) + os.sep,
             os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep)

log = get_logger("graph")


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch: the user's file and line."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not os.path.realpath(f.filename).startswith(_NOT_USER)]
    if not user:
        return "unknown location"
    f = user[-1]
    return f"{f.filename}:{f.lineno} ({f.line})"


def _trace(model: nn.Module, args: tuple) -> fx.GraphModule:
    tracer = ConcreteTracer(model, args)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many kinds; report where it happened
        hint = getattr(exc, "hint", None) or (
            "the quantizer needs a forward() without data-dependent Python control flow "
            "(branches on shapes are resolved with the example input); move pre/post-processing "
            "out of the model or make the branch depend on attributes or shapes, not on tensor "
            "values")
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: "
            f"{getattr(exc, 'message', exc)}",
            where=f"module {getattr(exc, '_nndct_scope', tracer.current_scope)}, "
                  f"at {_user_frame(exc)}",
            hint=hint) from exc
    removed = prune(graph, tracer)
    if tracer.frozen:
        log.debug("%d Python value(s) frozen with the example input's shapes", len(tracer.frozen))
    if removed:
        log.debug("dropped %d identity/shape-only node(s): %s", len(removed), ", ".join(removed))
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


def _flatten_inputs(input_args) -> tuple:
    if isinstance(input_args, tuple):
        return input_args
    return (input_args,)


def _describe(value: Any) -> dict:
    if isinstance(value, torch.Tensor):
        return {"is_tensor": True, "shape": tuple(value.shape), "dtype": value.dtype}
    return {"is_tensor": False, "shape": None, "dtype": None, "value_type": type(value).__name__}


class _Recorder(fx.Interpreter):
    def run_node(self, n):
        out = super().run_node(n)
        n.meta["nndct_value"] = _describe(out)
        return out


def _kind(fxn: fx.Node, gm: fx.GraphModule) -> OpKind:
    meta = fxn.meta.get("nndct_value", {})
    if fxn.op == "placeholder":
        return OpKind.INPUT
    if fxn.op == "get_attr":
        return OpKind.CONST
    if fxn.op == "call_module":
        return kind_of_module(called_module(gm, fxn))
    kind = kind_of_call(fxn.op, fxn.target, fxn.args, fxn.kwargs)
    if fxn.target is operator.getitem:
        src = fxn.args[0]
        src_tensor = isinstance(src, fx.Node) and src.meta.get("nndct_value", {}).get("is_tensor")
        if not src_tensor:
            kind = OpKind.PYOP
    if not meta.get("is_tensor") and kind is not OpKind.SIZE:
        kind = OpKind.PYOP
    return kind


def _refuse_float64(model: nn.Module, input_args) -> None:
    tensors = [("parameter " + n, t) for n, t in model.named_parameters()] + \
        [("buffer " + n, t) for n, t in model.named_buffers()]
    args = input_args if isinstance(input_args, (tuple, list)) else (input_args,)
    tensors += [(f"input_args[{i}]", a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    for what, t in tensors:
        if t.dtype is torch.float64:
            raise InputError(f"{what} is float64: quantization starts from a float32 model",
                             where=what, hint="call model.float() and pass float32 inputs")


def capture(model: nn.Module, input_args) -> tuple[Graph, fx.GraphModule]:
    """Trace ``model`` (in eval mode, on a deep copy) and run it once on ``input_args``.

    Returns the IR and the traced GraphModule (whose submodules are the copied model's).
    Raises ``TraceError`` with the module and source line when tracing fails, and when the
    example input does not fit the model.
    """
    _refuse_float64(model, input_args)
    try:
        model = copy.deepcopy(model).eval()
    except Exception as exc:   # a lock, an open file, a C handle held by the module
        raise InputError(f"{type(model).__name__} cannot be copied: {type(exc).__name__}: {exc}",
                         where=f"module={type(model).__name__}",
                         hint="the quantizer works on a deep copy of the model; keep objects "
                              "that cannot be copied (locks, open files, sessions) outside the "
                              "nn.Module, or give their class a __deepcopy__") from None
    args = _flatten_inputs(input_args)
    gm = _trace(model, args)
    try:
        with torch.no_grad():
            _Recorder(gm).run(*args)
    except Exception as exc:
        raise TraceError(
            f"running {type(model).__name__} on the example input_args failed: "
            f"{type(exc).__name__}: {exc}",
            where=f"input_args={_shapes(args)}",
            hint="pass input_args as a tensor (one input) or a tuple of tensors (one per "
                 "forward argument) with the shapes the model expects") from exc
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(args):
        raise TraceError(f"forward() takes {len(placeholders)} inputs but input_args has "
                         f"{len(args)}", where=f"input_args={_shapes(args)}",
                         hint="pass a tuple with one tensor per forward argument")
    mapping: dict[fx.Node, Node] = {}
    nodes: list[Node] = []
    output = None
    for fxn in gm.graph.nodes:
        if fxn.op == "output":
            output = _to_py(fxn.args[0], mapping)
            continue
        kind = _kind(fxn, gm)
        node = Node(kind=kind, op=fxn.op, target=fxn.target,
                    args=_to_py(tuple(fxn.args), mapping),
                    kwargs=_to_py(dict(fxn.kwargs), mapping),
                    scope=fxn.meta.get("nndct_scope", type(model).__name__))
        node.meta.update(fxn.meta.get("nndct_value", {}))
        node.meta["fx_name"] = fxn.name
        if fxn.op == "call_module":
            mod = gm.get_submodule(fxn.target)
            replacement = leaf_replacement(type(mod))
            if replacement is not None:             # e.g. timm HardSwish -> nn.Hardswish
                mod = replacement()
                node.kind = kind_of_module(mod)
            node.module, node.module_path = mod, fxn.target
            for pname, p in list(mod.named_parameters(recurse=False)) + \
                    list(mod.named_buffers(recurse=False)):
                if p is None:
                    continue
                node.params[pname] = p.detach().clone()
                node.param_names[pname] = f"{fxn.target}.{pname}"
        elif fxn.op == "get_attr":
            value = _get_attr(gm, fxn.target)
            node.params["value"] = value.detach().clone() if isinstance(value, torch.Tensor) \
                else value
            node.param_names["value"] = fxn.target
        mapping[fxn] = node
        nodes.append(node)
    graph = Graph(model_name=model_name_of(type(model).__name__), nodes=nodes, output=output)
    graph.refresh()
    normalize(graph)
    return graph, gm


def _get_attr(gm: fx.GraphModule, target: str):
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _to_py(obj, mapping):
    """fx containers (immutable_list/dict) into plain tuples/lists/dicts, fx.Node -> IR Node."""
    if isinstance(obj, fx.Node):
        return mapping[obj]
    if isinstance(obj, tuple):
        return tuple(_to_py(o, mapping) for o in obj)
    if isinstance(obj, list):
        return [_to_py(o, mapping) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_py(v, mapping) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(_to_py(obj.start, mapping), _to_py(obj.stop, mapping),
                     _to_py(obj.step, mapping))
    return obj


def _shapes(args) -> str:
    return "(" + ", ".join(tuple(a.shape).__repr__() if isinstance(a, torch.Tensor)
                           else type(a).__name__ for a in args) + ")"
