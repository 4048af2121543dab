"""Canonical forms right after capture.

``F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)`` calls (what a
traced-through BatchNorm subclass such as timm's ``BatchNormAct2d`` leaves in the graph, its
statistics read as ``get_attr`` constants) become BATCHNORM module nodes holding an exact
``nn.BatchNorm1d/2d/3d`` with those statistics, as if the model had called a BatchNorm module.
The constants they read are dropped when nothing else reads them. Folding, placement, code
generation and export then treat both forms alike.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..._log import get_logger
from ..ir import Graph, Node
from ..ops import OpKind, kind_of_module

__all__ = ["normalize", "batchnorm_calls_to_modules", "layer_calls_to_modules",
           "affine_constants_to_batchnorm"]

log = get_logger("passes")

_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
            "eps")
_BN_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}
_BN_CLASSES = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def normalize(graph: Graph) -> dict[str, list[str]]:
    """Every canonicalization, in order; returns what each one changed (node names)."""
    return {"batchnorm_calls": batchnorm_calls_to_modules(graph),
            "layer_calls": layer_calls_to_modules(graph),
            "affine_constants": affine_constants_to_batchnorm(graph)}


def _const_tensor(ref) -> torch.Tensor | None:
    if isinstance(ref, Node) and ref.kind is OpKind.CONST and \
            isinstance(ref.params.get("value"), torch.Tensor):
        return ref.params["value"]
    return None


def _checked_const(ref: Node) -> torch.Tensor:
    """The value of a constant node the caller has already accepted with ``_const_tensor``."""
    value = _const_tensor(ref)
    assert value is not None, ref
    return value


def _bn_call(node: Node) -> dict | None:
    """The bound arguments of an eval-mode ``F.batch_norm`` call, or None."""
    if node.op != "call_function" or node.target is not torch.nn.functional.batch_norm:
        return None
    bound = dict(_BN_DEFAULTS)
    bound.update(zip(_BN_ARGS, node.args))
    bound.update(node.kwargs)
    x = bound.get("input")
    if not isinstance(x, Node) or not x.shape or len(x.shape) not in _BN_CLASSES:
        return None
    if bound["training"] is not False or isinstance(bound["eps"], Node) or \
            isinstance(bound["momentum"], Node):
        return None                   # batch statistics: not an affine op
    stats = [_const_tensor(bound.get(k)) for k in ("running_mean", "running_var")]
    if any(s is None for s in stats):
        return None
    for k in ("weight", "bias"):
        if bound[k] is not None and _const_tensor(bound[k]) is None:
            return None               # a computed weight: leave the call as it is
    c = stats[0].numel()
    if x.shape[1] != c or stats[1].numel() != c:
        return None
    return bound


def _common_path(names: list[str]) -> str:
    heads = [n.rpartition(".")[0] for n in names]
    return heads[0] if heads and all(h == heads[0] for h in heads) and heads[0] else ""


def batchnorm_calls_to_modules(graph: Graph) -> list[str]:
    changed: list[str] = []
    for node in list(graph.nodes):
        bound = _bn_call(node)
        if bound is None:
            if node.op == "call_function" and node.target is torch.nn.functional.batch_norm:
                log.warning("F.batch_norm at %s uses batch statistics or computed parameters; "
                            "it stays a float op", node.name)
            continue
        x = bound["input"]
        refs = {k: bound[k] for k in ("running_mean", "running_var", "weight", "bias")
                if isinstance(bound[k], Node)}
        mean = _checked_const(refs["running_mean"])
        c = mean.numel()
        affine = "weight" in refs or "bias" in refs
        bn = _BN_CLASSES[len(x.shape)](c, eps=float(bound["eps"]), momentum=bound["momentum"],
                                       affine=affine)
        names = {k: r.param_names.get("value", r.meta.get("fx_name", "")) for k, r in refs.items()}
        path = _common_path(list(names.values())) or node.meta.get("fx_name", node.name)
        params = {k: _checked_const(r).detach().clone().reshape(-1) for k, r in refs.items()}
        if affine:
            params.setdefault("weight", torch.ones(c))
            params.setdefault("bias", torch.zeros(c))
            for k in ("weight", "bias"):
                names.setdefault(k, f"{path}.{k}")
        with torch.no_grad():
            for k, v in params.items():
                getattr(bn, k).copy_(v)
        bn.eval()
        node.kind, node.op, node.target = OpKind.BATCHNORM, "call_module", path
        node.module, node.module_path = bn, path
        node.params, node.param_names = params, names
        node.args, node.kwargs = (x,), {}
        node.meta["from_function"] = "torch.nn.functional.batch_norm"
        changed.append(node.name)
    _drop_dead_consts(graph, changed)
    if changed:
        log.debug("F.batch_norm -> BatchNorm module: %s", ", ".join(changed))
    return changed


F = torch.nn.functional
_LAYER_ARGS = {
    F.linear: ("input", "weight", "bias"),
    F.conv1d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.conv3d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
}
_CONV_CLASSES: dict[Callable[..., Any], type[nn.Module]] = {
    F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d}
_CONV_WEIGHT_DIMS: dict[type[nn.Module], int] = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _layer_module(node: Node):
    """An exact ``nn.Linear``/``nn.ConvNd`` for an ``F.linear``/``F.convNd`` call on constant
    parameters (what a traced-through subclass such as timm's ``Linear`` leaves), or None."""
    try:
        names = _LAYER_ARGS.get(node.target) if node.op == "call_function" else None
    except TypeError:
        return None
    if names is None:
        return None
    bound: dict[str, Any] = dict(_CONV_DEFAULTS)
    bound.update(zip(names, node.args))
    bound.update(node.kwargs)
    w = _const_tensor(bound.get("weight"))
    b = bound["bias"]
    if w is None or (b is not None and _const_tensor(b) is None) or \
            not isinstance(bound.get("input"), Node):
        return None
    if any(isinstance(bound[k], Node) for k in ("stride", "padding", "dilation", "groups")
           if k in names):
        return None
    mod: nn.Module
    if node.target is F.linear:
        if w.dim() != 2:
            return None
        mod = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    else:
        cls = _CONV_CLASSES[node.target]
        if w.dim() != _CONV_WEIGHT_DIMS[cls]:
            return None
        groups = int(bound["groups"])
        try:
            mod = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                      stride=bound["stride"], padding=bound["padding"],
                      dilation=bound["dilation"], groups=groups, bias=b is not None)
        except (ValueError, TypeError):
            return None
    return mod, bound


def layer_calls_to_modules(graph: Graph) -> list[str]:
    changed: list[str] = []
    for node in list(graph.nodes):
        found = _layer_module(node)
        if found is None:
            continue
        mod, bound = found
        fn_name = node.target.__name__
        refs = {k: bound[k] for k in ("weight", "bias") if isinstance(bound[k], Node)}
        names = {k: r.param_names.get("value", r.meta.get("fx_name", "")) for k, r in refs.items()}
        path = _common_path(list(names.values())) or node.meta.get("fx_name", node.name)
        params = {k: _checked_const(r).detach().clone() for k, r in refs.items()}
        with torch.no_grad():
            for k, v in params.items():
                getattr(mod, k).copy_(v)
        node.kind, node.op, node.target = kind_of_module(mod), "call_module", path
        node.module, node.module_path = mod.eval(), path
        node.params, node.param_names = params, names
        node.args, node.kwargs = (bound["input"],), {}
        node.meta["from_function"] = "torch.nn.functional." + fn_name
        changed.append(node.name)
    _drop_dead_consts(graph, changed)
    return changed


def _drop_dead_consts(graph: Graph, changed: list[str]) -> None:
    if not changed:
        return
    graph.refresh()
    outputs = set(graph.output_nodes())
    for n in [n for n in graph.nodes if n.kind is OpKind.CONST and not n.users
              and n not in outputs]:
        graph.nodes.remove(n)
    graph.refresh()


_LAYERS = {OpKind.CONV1D, OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.CONV3D,
           OpKind.CONV_TRANSPOSE2D}


def _binary(node: Node, kind: OpKind):
    """``(tensor operand, constant operand)`` of a two-operand ``kind`` node, or None."""
    if node.kind is not kind or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    if _const_tensor(b) is not None and isinstance(a, Node) and _const_tensor(a) is None:
        return a, _const_tensor(b)
    if _const_tensor(a) is not None and isinstance(b, Node) and _const_tensor(b) is None:
        return b, _const_tensor(a)
    return None


def _per_channel(c: torch.Tensor, shape) -> torch.Tensor | None:
    """``c`` as a vector when it broadcasts over channel axis 1 of ``shape`` only."""
    rank, channels = len(shape), shape[1]
    if not c.is_floating_point() or c.dim() > rank or c.numel() != channels:
        return None
    full = [1] * (rank - c.dim()) + list(c.shape)
    if full[1] != channels or any(d != 1 for i, d in enumerate(full) if i != 1):
        return None
    return c.detach().reshape(-1).clone()


def affine_constants_to_batchnorm(graph: Graph) -> list[str]:
    """``conv(x) * scale + shift`` with per-channel constants (``FrozenBatchNorm2d`` and timm's
    ``FrozenBatchNormAct2d`` compute their BN this way) becomes a BatchNorm node with mean 0,
    var 1, eps 0, so that it folds into the conv. Only where the conv feeds nothing else."""
    changed: list[str] = []
    for mul in list(graph.nodes):
        found = _binary(mul, OpKind.MUL)
        if found is None or len(mul.users) != 1:
            continue
        x, scale = found
        add = mul.users[0]
        found_add = _binary(add, OpKind.ADD)
        if found_add is None or found_add[0] is not mul or x.kind not in _LAYERS or \
                len(x.users) != 1 or not x.shape or len(x.shape) not in _BN_CLASSES or \
                add.shape != x.shape:
            continue
        gamma, beta = _per_channel(scale, x.shape), _per_channel(found_add[1], x.shape)
        if gamma is None or beta is None:
            continue
        c = gamma.numel()
        bn = _BN_CLASSES[len(x.shape)](c, eps=0.0)
        params = {"weight": gamma, "bias": beta, "running_mean": torch.zeros(c),
                  "running_var": torch.ones(c)}
        with torch.no_grad():
            for k, v in params.items():
                getattr(bn, k).copy_(v)
        path = add.meta.get("fx_name", add.name)
        add.kind, add.op, add.target = OpKind.BATCHNORM, "call_module", path
        add.module, add.module_path = bn.eval(), path
        add.params = params
        add.param_names = {k: f"{path}.{k}" for k in params}
        add.args, add.kwargs = (x,), {}
        add.meta["from_function"] = "affine constants"
        graph.nodes.remove(mul)
        graph.refresh()
        changed.append(add.name)
    _drop_dead_consts(graph, changed)
    return changed
