"""Graph IR -> ``<Model>.py``: one attribute per node with its name in a comment, ``forward`` in
topological order. The file imports ``nndct_lite`` only and runs on its own."""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn

from ..errors import TraceError
from ..graph.ir import Graph, Node
from ..graph.ops import OpKind

__all__ = ["generate_source", "module_ctor"]

HEADER = "# GENETARED BY NNDCT, DO NOT EDIT!\n"
_PARAM_CLASSES = {nn.Conv1d: "Conv1d", nn.Conv2d: "Conv2d", nn.Conv3d: "Conv3d",
                  nn.ConvTranspose2d: "ConvTranspose2d", nn.Linear: "Linear"}
_SKIP_ARGS = {"self", "device", "dtype"}


def _literal(v) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, float) and not math.isfinite(v):
        return f"float({str(v)!r})"
    if isinstance(v, (bool, int, float, str, type(None), list)):
        return repr(v)
    if isinstance(v, torch.dtype):
        return str(v)
    if isinstance(v, torch.device):
        return f"torch.device({str(v)!r})"
    raise TraceError(f"cannot write constructor value {v!r} into generated code")


def module_ctor(node: Node) -> str:
    """Constructor expression of the generated module for ``node``."""
    m = node.module
    if node.kind is OpKind.INPUT:
        return "py_nndct.nn.Input()"
    if node.kind is OpKind.CONST:
        return "py_nndct.nn.Const()"
    if node.op == "call_function":
        fn = node.target
        mod = getattr(fn, "__module__", None) or "builtins"
        mod = {"_operator": "operator", "torch._C._nn": "torch.nn.functional",
               "torch._C._VariableFunctions": "torch", "torch.functional": "torch"}.get(mod, mod)
        if mod.startswith("torch._ops") or mod == "torch._C":
            mod = "torch"
        return f"py_nndct.nn.Module({mod + '.' + fn.__name__!r})"
    if node.op == "call_method":
        return f"py_nndct.nn.Method({node.target!r})"
    if m is None:
        raise TraceError(f"node {node.name} has no module to generate")
    cls = type(m)
    name = _PARAM_CLASSES.get(cls)
    if name is None:
        if getattr(nn, cls.__name__, None) is not cls:
            return f"py_nndct.nn.Opaque({cls.__module__ + '.' + cls.__qualname__!r})"
        name = cls.__name__
    kwargs = []
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname in _SKIP_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if pname == "bias" and isinstance(p.default, bool) is not False and \
                isinstance(getattr(m, "bias", None), (torch.Tensor, type(None))):
            kwargs.append(f"bias={'bias' in node.params}")
            continue
        if pname == "inplace":
            kwargs.append("inplace=False")
            continue
        if hasattr(m, pname):
            value = getattr(m, pname)
            if isinstance(value, (torch.Tensor, nn.Module)) or callable(value):
                continue
            kwargs.append(f"{pname}={_literal(value)}")
    return f"py_nndct.nn.{name}({', '.join(kwargs)})"


def _render(obj, var) -> str:
    if isinstance(obj, Node):
        return var[obj]
    if isinstance(obj, tuple):
        inner = ", ".join(_render(o, var) for o in obj)
        return f"({inner},)" if len(obj) == 1 else f"({inner})"
    if isinstance(obj, list):
        return "[" + ", ".join(_render(o, var) for o in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {_render(v, var)}" for k, v in obj.items()) + "}"
    if isinstance(obj, slice):
        return f"slice({_render(obj.start, var)}, {_render(obj.stop, var)}, {_render(obj.step, var)})"
    if obj is Ellipsis:
        return "..."
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"float({str(obj)!r})"
    if isinstance(obj, (bool, int, float, str, type(None))):
        return repr(obj)
    if isinstance(obj, torch.dtype):
        return str(obj)
    if isinstance(obj, torch.device):
        return f"torch.device({str(obj)!r})"
    if isinstance(obj, torch.memory_format):
        return str(obj)
    raise TraceError(f"cannot write argument {obj!r} into generated code",
                     hint="pass such values through a module attribute instead of a literal")


def _call(node: Node, var) -> str:
    if node.kind is OpKind.INPUT:
        return f"self.module_{node.index}(args[{node.meta['input_index']}])"
    if node.kind is OpKind.CONST:
        return f"self.module_{node.index}()"
    parts = [_render(a, var) for a in node.args]
    parts += [f"{k}={_render(v, var)}" for k, v in node.kwargs.items()]
    return f"self.module_{node.index}({', '.join(parts)})"


def generate_source(graph: Graph) -> str:
    """Python source of the generated model class (deterministic for a given graph)."""
    outputs = set(graph.output_nodes())
    lines = [HEADER, "import torch", "from torch import tensor", "import nndct_lite as py_nndct",
             "", "", f"class {graph.model_name}(py_nndct.nn.NndctQuantModel):",
             "    def __init__(self):", f"        super({graph.model_name}, self).__init__()"]
    k = 0
    for n in graph.nodes:
        if n.kind is OpKind.INPUT:
            n.meta["input_index"] = k
            k += 1
        lines.append(f"        self.module_{n.index} = {module_ctor(n)} #{n.name}({n.normalized})")
    lines += ["", "    def forward(self, *args):"]
    var: dict[Node, str] = {}
    for n in graph.nodes:
        ins = n.inputs
        if len(ins) == 1 and len(ins[0].users) == 1 and ins[0] not in outputs \
                and ins[0].kind is not OpKind.INPUT:
            var[n] = var[ins[0]]
        else:
            var[n] = f"output_module_{n.index}"
    kept = {var[n] for n in outputs}
    last_read: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for src in n.inputs:
            last_read[var[src]] = i
    for i, n in enumerate(graph.nodes):
        lines.append(f"        {var[n]} = {_call(n, var)}")
        # free a branch's tensor after its last reader, so that test mode runs in the float
        # model's memory instead of keeping every block's output alive to the end of forward
        dead = sorted({var[s] for s in n.inputs if last_read.get(var[s]) == i
                       and var[s] != var[n] and var[s] not in kept})
        if dead:
            lines.append(f"        del {', '.join(dead)}")
    lines.append(f"        return {_render(graph.output, var)}")
    return "\n".join(lines) + "\n"
