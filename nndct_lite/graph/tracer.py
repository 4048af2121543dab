"""The torch.fx tracer of the front end: vai-style scopes and concrete values.

``ScopeTracer`` records, for every created node, the module call stack as ``Class[attr]`` labels
(``Model/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]``).

``ConcreteTracer`` also evaluates every node eagerly on the example input while it is created and
remembers whether a value is *static*: derived only from tensor shapes (``size()``, ``.shape``,
``dim()``, ``numel()``, ``.dtype``) and Python constants. Python control flow on a static value is
resolved with the example input's value, the way the original's ``torch.jit.trace`` freezes it;
the shape reads themselves stay traced nodes, so the graph keeps working for other batch sizes.
Control flow on a value computed from tensor *data* still raises a ``TraceError``.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_arg

from .._log import get_logger
from ..errors import TraceError

__all__ = ["ScopeTracer", "ConcreteTracer", "UNKNOWN", "leaf_replacement", "called_module"]

log = get_logger("graph")


def called_module(root: nn.Module, node: fx.Node) -> nn.Module:
    """The submodule a ``call_module`` node calls (its target is the dotted path)."""
    assert isinstance(node.target, str), node.op
    return root.get_submodule(node.target)


class _RealModules:
    """Inside the block, modules run for real while fx is tracing: the tracer's
    ``call_module``/``getattr`` hooks pass calls and attribute reads straight through.

    (Swapping ``nn.Module.__call__``/``__getattr__`` back on the class would do the same, but every
    assignment to a class attribute invalidates CPython's type cache for all subclasses of
    ``nn.Module``: with thousands of them loaded, that cost dominated tracing and grew with
    every model class the process had seen.)"""

    def __init__(self, tracer: "ScopeTracer"):
        self._tracer = tracer

    def __enter__(self):
        self._tracer._real_modules += 1

    def __exit__(self, *exc):
        self._tracer._real_modules -= 1
        return False


class _Unknown:
    def __repr__(self):
        return "<unknown>"


#: the concrete value of a node that could not be evaluated
UNKNOWN = _Unknown()

#: ``x.<attr>`` reads and ``x.<method>()`` calls that read a tensor's metadata, not its data
_SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "layout",
                          "requires_grad", "is_floating_point"})
_SHAPE_METHODS = frozenset({"size", "dim", "ndimension", "numel", "nelement", "type",
                            "get_device", "is_contiguous", "is_floating_point", "element_size"})
_SHAPE_FUNCTIONS = {torch.numel, torch.is_tensor, torch.is_floating_point}


#: (module, class name) of composite activation classes traced as one leaf and replaced by the
#: equal ``torch.nn`` module in the IR. Matched by name, so timm (optional) is never imported.
_LEAF_REPLACEMENTS: dict[tuple[str, str], type[nn.Module]] = {
    ("timm.layers.activations", "HardSwish"): nn.Hardswish,
    ("timm.layers.activations", "HardSigmoid"): nn.Hardsigmoid,
    ("timm.layers.activations", "Swish"): nn.SiLU,
    ("timm.layers.activations", "Mish"): nn.Mish,
}


def leaf_replacement(cls: type) -> type[nn.Module] | None:
    """The ``torch.nn`` class a composite activation class is captured as, else None."""
    return _LEAF_REPLACEMENTS.get((cls.__module__, cls.__name__))


class ScopeTracer(fx.Tracer):
    """Records, for every created node, the module call stack as ``Class[attr]`` labels."""

    def __init__(self, root: nn.Module):
        super().__init__()
        self._root = root
        self._scopes = [type(root).__name__]
        self._paths = [""]
        self._real_modules = 0      # > 0 inside _RealModules: no tracing, real calls

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if leaf_replacement(type(m)) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        if self._real_modules:
            return forward(*args, **kwargs)
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

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._real_modules:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["nndct_scope"] = self._scopes[-1]
        return node

    @property
    def current_scope(self) -> str:
        return self._scopes[-1]


class _ConcreteProxy(fx.Proxy):
    """A Proxy that answers ``len``/``int``/``float``/``index`` from static concrete values and
    records ``math.ceil``/``floor``/``trunc`` as graph nodes."""

    tracer: ConcreteTracer          # only ConcreteTracer creates these proxies

    def __len__(self) -> int:
        return self.tracer.concrete_len(self)

    def __int__(self) -> int:
        return self.tracer.freeze(self, int, "int()")

    def __index__(self) -> int:
        return self.tracer.freeze(self, operator.index, "an index")

    def __float__(self) -> float:
        return self.tracer.freeze(self, float, "float()")

    def __getattr__(self, k):
        if k in ("type", "index") and isinstance(self, fx.proxy.Attribute) and \
                self.attr == "device":
            # x.device.type (e.g. for torch.autocast): the example input's device type
            device = self.tracer.values.get(self.root.node, UNKNOWN)
            if isinstance(device, torch.Tensor):
                value = getattr(device.device, k)
                self.tracer.note_frozen(self.root.node, f"device.{k}", value)
                return value
        return _ConcreteAttribute(self, k)

    def __ceil__(self):
        return self.tracer.create_proxy("call_function", math.ceil, (self,), {})

    def __floor__(self):
        return self.tracer.create_proxy("call_function", math.floor, (self,), {})

    def __trunc__(self):
        return self.tracer.create_proxy("call_function", math.trunc, (self,), {})


class _ConcreteAttribute(fx.proxy.Attribute, _ConcreteProxy):
    """``proxy.attr`` (created lazily, as in torch.fx) with the concrete answers above."""


class ConcreteTracer(ScopeTracer):
    """``ScopeTracer`` that evaluates each node on the example inputs as it is created."""

    def __init__(self, root: nn.Module, example: tuple):
        super().__init__(root)
        self._example = list(example)
        self._placeholders = 0
        self.values: dict[fx.Node, Any] = {}
        self.static: dict[fx.Node, bool] = {}
        self.errors: dict[fx.Node, str] = {}
        self.frozen: list[str] = []

    # ------------------------------------------------------------------ node creation
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None,
                     proxy_factory_fn=None):
        if kind == "call_function" and target is torch._assert and args \
                and isinstance(args[0], fx.Proxy):
            cond = args[0].node
            if self.static.get(cond) and self.values.get(cond, UNKNOWN) is not UNKNOWN:
                if not bool(self.values[cond]):
                    msg = args[1] if len(args) > 1 else kwargs.get("message", "assertion")
                    raise AssertionError(msg)
                return None     # a shape assertion that holds: dropped, as torch.jit.trace does
        return super().create_proxy(kind, target, args, kwargs, name, type_expr,
                                    proxy_factory_fn)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind != "output":
            self._evaluate(node)
        return node

    def _evaluate(self, node: fx.Node) -> None:
        deps = node.all_input_nodes
        if node.op == "placeholder":
            i = self._placeholders
            self._placeholders += 1
            value = self._example[i] if i < len(self._example) else UNKNOWN
            if isinstance(value, torch.Tensor):
                value = value.clone()          # in-place ops must not touch the user's tensor
            self.values[node], self.static[node] = value, False
            return
        if node.op == "get_attr":
            with _RealModules(self):
                try:
                    value = self.root
                    assert isinstance(node.target, str)
                    for part in node.target.split("."):
                        value = getattr(value, part)
                except AttributeError:
                    value = UNKNOWN
            self.values[node], self.static[node] = value, False
            return
        self.static[node] = self._reads_metadata(node) or \
            all(self.static.get(d, False) for d in deps)
        if any(self.values.get(d, UNKNOWN) is UNKNOWN for d in deps):
            self.values[node] = UNKNOWN
            return
        args = map_arg(node.args, self.values.__getitem__)
        kwargs = map_arg(node.kwargs, self.values.__getitem__)
        try:
            with torch.no_grad(), _RealModules(self):
                target = node.target
                if node.op == "call_function":
                    assert callable(target)
                    value = target(*args, **kwargs)
                elif node.op == "call_method":
                    assert isinstance(target, str)
                    value = getattr(args[0], target)(*args[1:], **kwargs)
                else:
                    value = called_module(self.root, node)(*args, **kwargs)
        except Exception as exc:   # the example input run reports real failures later
            self.errors[node] = f"{type(exc).__name__}: {exc}"
            log.debug("no concrete value for %s: %s", node.name, self.errors[node])
            value = UNKNOWN
        self.values[node] = value

    @staticmethod
    def _reads_metadata(node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in _SHAPE_METHODS
        if node.op == "call_function":
            if node.target is getattr:
                return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
            try:
                return node.target in _SHAPE_FUNCTIONS
            except TypeError:
                return False
        return False

    # ------------------------------------------------------------------ Python uses of proxies
    def _static_value(self, obj: fx.Proxy, use: str):
        node = obj.node
        value = self.values.get(node, UNKNOWN)
        if not self.static.get(node, False):
            raise TraceError(
                f"data-dependent control flow: {use} needs the value of '{node.name}', which is "
                f"computed from tensor data, not only from shapes")
        if value is UNKNOWN:
            raise TraceError(f"control flow: {use} needs the value of '{node.name}', which could "
                             f"not be computed on the example input "
                             f"({self._first_error(node) or 'unknown reason'})")
        return value

    def _first_error(self, node: fx.Node) -> str | None:
        seen, todo = set(), [node]
        while todo:
            n = todo.pop()
            if n in self.errors:
                return self.errors[n]
            if n not in seen:
                seen.add(n)
                todo.extend(n.all_input_nodes)
        return None

    def note_frozen(self, node: fx.Node, what: str, value) -> None:
        text = f"{self.current_scope}: {what} of {node.name} frozen to {value!r}"
        self.frozen.append(text)
        log.debug("control flow resolved with the example input's shapes: %s", text)

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = bool(self._static_value(obj, "a Python condition (if/while/and/or)"))
        self.note_frozen(obj.node, "condition", value)
        return value

    def freeze(self, obj: fx.Proxy, fn, use: str):
        value = fn(self._static_value(obj, use))
        self.note_frozen(obj.node, use, value)
        return value

    def concrete_len(self, obj: fx.Proxy) -> int:
        value = self.values.get(obj.node, UNKNOWN)
        if isinstance(value, (tuple, list, torch.Size, dict)):
            return len(value)          # the structure of the value, not its data
        if isinstance(value, torch.Tensor):
            raise TraceError(f"len() of the tensor '{obj.node.name}' would freeze its first "
                             f"(batch) dimension into the graph (control flow on a shape)",
                             hint="use x.size(0) / x.shape[0] instead of len(x)")
        return len(self._static_value(obj, "len()"))

    def iter(self, obj: fx.Proxy):
        value = self.values.get(obj.node, UNKNOWN)
        if isinstance(value, (tuple, list, torch.Size)):
            # torch.fx installs Proxy.__getitem__ at run time; its stubs do not declare it
            return iter([obj[i] for i in range(len(value))])  # type: ignore[index]
        raise TraceError(f"control flow: iterating over '{obj.node.name}' "
                         f"({type(value).__name__}) cannot be traced",
                         hint="iterate over a Python range or over a tuple/list of tensors")

    def trace(self, root, concrete_args=None):
        with torch.no_grad():
            return super().trace(root, concrete_args)


_DROPOUTS = {torch.nn.functional.dropout, torch.nn.functional.dropout1d,
             torch.nn.functional.dropout2d, torch.nn.functional.dropout3d,
             torch.nn.functional.alpha_dropout, torch.dropout}


def _is_passthrough(node: fx.Node, root: nn.Module) -> bool:
    """``nn.Identity`` and eval-mode dropout: the original's graph has no node for them."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        mod = called_module(root, node)
        if type(mod) is nn.Identity:
            return len(node.args) == 1 and not node.kwargs
        return isinstance(mod, nn.modules.dropout._DropoutNd) and not mod.training \
            and len(node.args) == 1 and not node.kwargs
    if node.op == "call_function":
        try:
            if node.target not in _DROPOUTS:
                return False
        except TypeError:
            return False
        key = "train" if node.target is torch.dropout else "training"
        training = node.args[2] if len(node.args) > 2 else node.kwargs.get(
            key, node.target is not torch.dropout)
        return training is False
    return False


def prune(graph: fx.Graph, tracer: ConcreteTracer) -> list[str]:
    """Drop ``nn.Identity`` calls and eval-mode dropout (``torch.jit.trace`` in the original
    leaves no node for them) and shape/constant computations that nothing reads any more (e.g.
    the condition of a resolved ``if``)."""
    removed = []
    root = tracer.root
    for node in list(graph.nodes):
        if _is_passthrough(node, root):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            removed.append(node.name)
    for node in reversed(list(graph.nodes)):
        if node.op in ("call_function", "call_method") and not node.users \
                and tracer.static.get(node) \
                and not getattr(node.target, "__name__", str(node.target)).endswith("_"):
            graph.erase_node(node)
            removed.append(node.name)
    return removed
