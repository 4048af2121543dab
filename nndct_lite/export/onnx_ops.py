"""ONNX forms of ops torch's TorchScript exporter refuses, installed on the exporter's own copy.

``adaptive_avg_pool2d`` to an output size that does not divide the input size (an upsampling
adaptive pool, e.g. timm's VGG pre-logits on small inputs: 2x2 -> 7x7) has no symbolic in torch.
It is a fixed linear map per axis: output row ``i`` of ``o`` averages input rows
``floor(i*n/o) .. ceil((i+1)*n/o) - 1`` of ``n`` (torch's definition). The export writes it as
``MatMul(MatMul(A_h, x), A_w^T)`` with the two averaging matrices as constants; eager and traced
values stay torch's own op.
"""
from __future__ import annotations

import math
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ExportError
from ..graph.ops import OpKind
from ..quant.build import layer_of
from ..result import QuantResult

__all__ = ["averaging_matrix", "use_onnx_forms"]


def averaging_matrix(n: int, o: int) -> torch.Tensor:
    """The ``o x n`` float32 matrix of adaptive average pooling from ``n`` to ``o`` positions.

    >>> averaging_matrix(2, 3)
    tensor([[1.0000, 0.0000],
            [0.5000, 0.5000],
            [0.0000, 1.0000]])
    """
    a = torch.zeros(o, n, dtype=torch.float64)
    for i in range(o):
        lo, hi = (i * n) // o, math.ceil((i + 1) * n / o)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a.float()


class _AdaptiveAvgPoolMatmul(torch.autograd.Function):
    """torch's adaptive average pool in eager/trace; two MatMuls in the ONNX graph."""

    @staticmethod
    def forward(ctx, x, in_hw, out_hw, where):  # noqa: D401 - autograd signature
        if tuple(x.shape[-2:]) != in_hw:
            raise ExportError(f"adaptive_avg_pool2d input is {tuple(x.shape[-2:])}, the graph "
                              f"was captured with {in_hw}", where=where,
                              hint="export with the input size the quantizer was built with")
        return F.adaptive_avg_pool2d(x, out_hw)

    @staticmethod
    def symbolic(g, x, in_hw, out_hw, where):
        (oh, ow), (h, w) = out_hw, in_hw
        ah = g.op("Constant", value_t=averaging_matrix(h, oh))
        awt = g.op("Constant", value_t=averaging_matrix(w, ow).t().contiguous())
        return g.op("MatMul", g.op("MatMul", ah, x), awt)


def use_onnx_forms(result: QuantResult, model: nn.Module) -> None:
    """Make the adaptive average pools of ``model`` (the ONNX exporter's own copy of the deploy
    model) whose output size does not divide their input size compute through
    ``_AdaptiveAvgPoolMatmul`` (same values; an ONNX symbolic)."""
    for node in result.graph.nodes:
        if node.kind is not OpKind.ADAPTIVE_AVGPOOL2D or not node.inputs \
                or node.inputs[0].shape is None or node.shape is None \
                or len(node.shape) != 4:
            continue
        in_hw = tuple(node.inputs[0].shape[-2:])
        out_hw = tuple(node.shape[-2:])
        if in_hw[0] % out_hw[0] == 0 and in_hw[1] % out_hw[1] == 0:
            continue                      # torch's exporter writes these itself
        mod = layer_of(model, node)
        if getattr(mod, "replace", None) is not None:
            continue
        mod.replace = _replacement(in_hw, out_hw, node.name)


def _replacement(in_hw, out_hw, where: str):
    def replace(x, *args, **kwargs):
        return _AdaptiveAvgPoolMatmul.apply(x, tuple(in_hw), tuple(out_hw), where)
    return replace
