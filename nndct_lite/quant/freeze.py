"""Live test-mode model -> the frozen :class:`~nndct_lite.result.QuantResult` exporters read."""
from __future__ import annotations

import copy
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from ..config.resolve import QuantPlan
from ..config.spec import QuantConfig
from ..errors import ExportError
from ..graph.ir import Graph
from ..result import NodeResult, QuantResult
from ..state.modes import QuantMode
from .build import layer_of, set_mode
from .fake_quantizer import FakeQuantizer, quantizer_of
from .modules import QuantOp
from ..numerics.params import QuantParams

__all__ = ["freeze", "deploy_copy", "batch1"]


def batch1(example: tuple, device: torch.device, what: str) -> tuple[torch.Tensor, ...]:
    """The example input cut to batch size 1 (first row of every tensor), on ``device``.
    Exports trace this pass, whatever batch size the user ran."""
    out = []
    for i, a in enumerate(example):
        if not isinstance(a, torch.Tensor):
            raise ExportError(
                f"{what} traces tensor inputs only; example input {i} is a "
                f"{type(a).__name__}", where=f"input_args[{i}]",
                hint="pass every forward input of the model as a tensor in input_args")
        if a.dim() >= 1:
            if a.shape[0] == 0:
                raise ExportError(f"example input {i} has batch size 0; {what} needs one row",
                                  where=f"input_args[{i}] of shape {tuple(a.shape)}",
                                  hint="pass an example input with at least one row")
            a = a[:1]
        out.append(a.detach().to(device).clone())
    return tuple(out)


def deploy_copy(model: nn.Module) -> nn.Module:
    """A private test-mode copy of ``model`` without the test-mode shortcuts (a ReLU folded into
    its quantizer's clamp, in-place quantization of fresh tensors) and without the session's
    hooks: exporters trace it and may not see either."""
    dup = copy.deepcopy(model)
    for m in dup.modules():
        m._forward_pre_hooks.clear()
        m._forward_hooks.clear()
        if isinstance(m, QuantOp):
            m.__dict__.pop("_wcache", None)
            op: QuantOp = m
            if "relu_fused" in op.__dict__:
                op.relu_fused = False
            if isinstance(getattr(m, "inplace", None), bool) and not isinstance(m, nn.ReLU):
                # torch's stubs type Module.__setattr__'s value as Tensor | Module; any value works
                m.inplace = False  # type: ignore[assignment]
        if isinstance(m, FakeQuantizer):
            m.relu_fused = False
            m.inplace = False
    set_mode(dup, QuantMode.TEST)
    dup.eval()
    for p in dup.parameters():
        p.requires_grad_(False)
    return dup


@runtime_checkable
class _ParamLayer(Protocol):
    """A conv/linear layer of the quantized model: its deployed (quantized) weight and bias."""

    def _qweight(self) -> torch.Tensor | None: ...

    def _qbias(self) -> torch.Tensor | None: ...


def _params(q: FakeQuantizer | None) -> QuantParams | None:
    if q is None or q.params is None or not q.params.is_set:
        return None
    return q.params


def freeze(graph: Graph, config: QuantConfig, plan: QuantPlan, model: nn.Module,
           example: tuple, device: torch.device) -> QuantResult:
    """Snapshot a test-mode quantized ``model`` into a :class:`QuantResult`."""
    dup = deploy_copy(model)
    nodes: dict[str, NodeResult] = {}
    params: dict[str, QuantParams] = {}
    with torch.no_grad():
        for node in graph.nodes:
            mod = layer_of(dup, node)
            out_q = quantizer_of(mod, "out_q")
            wq = quantizer_of(mod, "weight_q")
            bq = quantizer_of(mod, "bias_q")
            for q in (out_q, wq, bq):
                if q is not None:
                    params[q.key] = q.params if q.params is not None else \
                        QuantParams(q.spec.bit_width)
            weight = bias = None
            if isinstance(mod, _ParamLayer):
                w = mod._qweight()
                b = mod._qbias()
                weight = None if w is None else w.detach().clone()
                bias = None if b is None else b.detach().clone()
            post = getattr(mod, "post", None)
            factor = float(post(torch.ones(1))) if post is not None else 1.0
            if out_q is None and weight is None and factor == 1.0:
                continue
            nodes[node.name] = NodeResult(
                output=_params(out_q), output_key=out_q.key if out_q is not None else None,
                output_bits=out_q.spec.bit_width if out_q is not None else None,
                weight=weight, bias=bias, weight_params=_params(wq), bias_params=_params(bq),
                weight_key=wq.key if wq is not None else None,
                bias_key=bq.key if bq is not None else None, output_factor=factor)
    return QuantResult(graph=graph, config=config, plan=plan, nodes=nodes, params=params,
                       example=tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a
                                     for a in example), device=device, deploy_model=dup)
