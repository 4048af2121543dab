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
from ..errors import TraceError
from .naming import model_name_of
from .ir import Graph, Node
from .ops import OpKind, kind_of_function, kind_of_method, kind_of_module

__all__ = ["capture"]

_NOT_USER = (os.path.dirname(os.path.realpath(torch.__file__)) + os.sep,
             os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep)

log = get_logger("graph")


class _ScopeTracer(fx.Tracer):
    """Records, for every created node, the module call stack as ``Class[attr]`` labels."""

    def __init__(self, root: nn.Module):
        super().__init__()
        self._root = root
        self._scopes = [type(root).__name__]
        self._paths = [""]

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        parent = self._paths[-1]
        rel = path[len(parent) + 1:] if parent and path.startswith(parent + ".") else path
        labels, owner = [], self._root.get_submodule(parent) if parent else self._root
        for comp in rel.split("."):
            owner = getattr(owner, comp)
            labels.append(f"{type(owner).__name__}[{comp}]")
        self._scopes.append(self._scopes[-1] + "/" + "/".join(labels))
        self._paths.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:
            if not hasattr(exc, "_nndct_scope"):     # the innermost module names the failure
                try:
                    exc._nndct_scope = self._scopes[-1]
                except AttributeError:
                    pass
            raise
        finally:
            self._scopes.pop()
            self._paths.pop()

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["nndct_scope"] = self._scopes[-1]
        return node

    @property
    def current_scope(self) -> str:
        return self._scopes[-1]


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch: the user's file and line."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not os.path.realpath(f.filename).startswith(_NOT_USER)]
    if not user:
        return "unknown location"
    f = user[-1]
    return f"{f.filename}:{f.lineno} ({f.line})"


def _trace(model: nn.Module) -> fx.GraphModule:
    tracer = _ScopeTracer(model)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many kinds; report where it happened
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}",
            where=f"module {getattr(exc, '_nndct_scope', tracer.current_scope)}, "
                  f"at {_user_frame(exc)}",
            hint="the quantizer needs a forward() without data-dependent Python control flow; "
                 "move pre/post-processing out of the model or make the branch depend on "
                 "attributes, not on tensor values") from exc
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
        return kind_of_module(gm.get_submodule(fxn.target))
    if fxn.op == "call_method":
        kind = kind_of_method(fxn.target)
    else:
        kind = kind_of_function(fxn.target)
    if fxn.target is operator.getitem:
        src = fxn.args[0]
        src_tensor = isinstance(src, fx.Node) and src.meta.get("nndct_value", {}).get("is_tensor")
        if not src_tensor:
            kind = OpKind.PYOP
    if not meta.get("is_tensor") and kind is not OpKind.SIZE:
        kind = OpKind.PYOP
    return kind


def capture(model: nn.Module, input_args) -> tuple[Graph, fx.GraphModule]:
    """Trace ``model`` (in eval mode, on a deep copy) and run it once on ``input_args``.

    Returns the IR and the traced GraphModule (whose submodules are the copied model's).
    Raises ``TraceError`` with the module and source line when tracing fails, and when the
    example input does not fit the model.
    """
    model = copy.deepcopy(model).eval()
    gm = _trace(model)
    args = _flatten_inputs(input_args)
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
