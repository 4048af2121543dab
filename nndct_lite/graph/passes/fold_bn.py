"""Fold BatchNorm into the preceding convolution (numerics.md 8)."""
from __future__ import annotations

import torch

from ..._log import get_logger
from ..ir import Graph, Node
from ..ops import OpKind

__all__ = ["fold_batchnorm"]

log = get_logger("passes")

_FOLDABLE = {OpKind.CONV1D, OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.CONV3D,
             OpKind.CONV_TRANSPOSE2D, OpKind.LINEAR}


def _out_axis(src) -> int:
    return 1 if src.kind is OpKind.CONV_TRANSPOSE2D else 0


def _why_not(bn, src) -> str | None:
    """Why ``bn`` cannot be folded into ``src`` (None when it can)."""
    if bn.module is None or "running_mean" not in bn.params or "running_var" not in bn.params:
        return "it has no running statistics"
    if src is None or getattr(src, "kind", None) not in _FOLDABLE or src.module is None:
        return "its input is not a conv/linear layer"
    if len(src.users) != 1:
        return "its conv has other consumers"
    if src.kind is OpKind.CONV_TRANSPOSE2D and getattr(src.module, "groups", 1) > 1:
        return "grouped transposed conv"
    if src.kind is OpKind.LINEAR and (not src.shape or len(src.shape) != 2):
        return "BatchNorm1d over a 3-d linear output normalizes the sequence axis"
    w = src.params.get("weight")
    n = bn.params["running_mean"].numel()
    if w is None or w.shape[_out_axis(src)] != n:
        return "its channel count differs from the layer's outputs"
    return None


def _bn_scale_offset(bn) -> tuple[torch.Tensor, torch.Tensor]:
    p = bn.params
    n = p["running_mean"].numel()
    gamma = p.get("weight", torch.ones(n))
    beta = p.get("bias", torch.zeros(n))
    a = gamma / torch.sqrt(p["running_var"] + bn.module.eps)
    return a, beta - p["running_mean"] * a


def fold_batchnorm(graph: Graph) -> list[str]:
    """Fold every BN whose input is a single-consumer conv or linear layer (conv1d/2d/3d,
    depthwise, transposed, linear + BatchNorm1d); returns the folded BN names. BN module nodes
    made from ``F.batch_norm`` calls (passes/normalize.py) fold the same way.

    ``W'[c] = W[c] * a_c`` and ``b'_c = b_c * a_c + (beta_c - mean_c * a_c)`` with
    ``a = gamma / sqrt(var + eps)``; a conv without bias gets one (named like its weight).
    BNs that cannot be folded stay in the graph (quantized as their own layer).
    """
    folded: list[str] = []
    for bn in [n for n in graph.nodes if n.kind is OpKind.BATCHNORM]:
        src = bn.args[0] if bn.args else None
        why = _why_not(bn, src)
        if why is not None:
            log.info("BatchNorm %s is not folded (%s); it is quantized as its own layer",
                     bn.name, why)
            continue
        assert isinstance(src, Node)        # _why_not accepts only a conv/linear node
        a, offset = _bn_scale_offset(bn)
        w = src.params["weight"]
        axis = _out_axis(src)
        shape = [1] * w.dim()
        shape[axis] = -1
        src.params["weight"] = w * a.reshape(shape)
        if "bias" in src.params:
            src.params["bias"] = src.params["bias"] * a + offset
        else:
            src.params["bias"] = offset.clone()
            src.param_names["bias"] = _bias_name(src.param_names["weight"])
        src.meta["folded_bn"] = bn.module_path
        folded.append(bn.name)
        graph.remove(bn, src)
    if folded:
        log.info("folded %d BatchNorm layers into their convolutions", len(folded))
    return folded


def _bias_name(weight_name: str) -> str:
    head, _, last = weight_name.rpartition(".")
    return f"{head}.{last.replace('weight', 'bias')}" if head else last.replace("weight", "bias")
