"""The frozen quantization result: what calibration produced, as plain data.

A :class:`QuantResult` is taken from a test-mode session when something is deployed
(``QuantSession.freeze()``). It holds the graph, the resolved config and plan, every tensor's
:class:`~nndct_lite.quant.params.QuantParams`, and per node the parameters the deployed model
computes with (BN folded, bias corrected, fast-finetuned, already fake-quantized). The XModel
builder, the deploy-check dump, the ONNX and TorchScript exporters read only this object: they
never reach into the live quantized modules, so exporting cannot change the session.

The result also owns ``deploy_model``: a private copy of the quantized module in test mode with
the calibration-only shortcuts off (no ReLU folded into a quantizer clamp, no in-place
quantization), for the exporters that trace a module. Mutating it cannot affect the session.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn as nn

if TYPE_CHECKING:  # type-only: the result is data; these modules sit below it
    from .config.resolve import QuantPlan
    from .config.spec import QuantConfig
    from .graph.ir import Graph, Node
    from .numerics.params import QuantParams

__all__ = ["NodeResult", "QuantResult"]


@dataclass(frozen=True)
class NodeResult:
    """What one graph node deploys with.

    ``output`` is the output quantizer's parameters (``None``: the node's output is not
    quantized, or it was never calibrated), keyed in quant_info.json by ``output_key``.
    ``weight`` / ``bias`` are the values the deployed layer multiplies with: folded,
    bias-corrected and fake-quantized (``None`` when the node has none). ``output_factor`` is
    the DPU approximation's multiplier on the op's result (average pooling and mean), 1.0 else.
    """

    output: QuantParams | None = None
    output_key: str | None = None
    output_bits: int | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    weight_params: QuantParams | None = None
    bias_params: QuantParams | None = None
    weight_key: str | None = None
    bias_key: str | None = None
    output_factor: float = 1.0

    @property
    def quantized_output(self) -> bool:
        return self.output_key is not None


@dataclass(frozen=True)
class QuantResult:
    """The frozen result of a quantization, read by every exporter (see the module doc)."""

    graph: Graph
    config: QuantConfig
    plan: QuantPlan
    nodes: Mapping[str, NodeResult]
    params: Mapping[str, QuantParams]
    example: tuple
    device: torch.device
    deploy_model: nn.Module = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def model_name(self) -> str:
        return self.graph.model_name

    def of(self, node: Node) -> NodeResult:
        """The node's entry (an empty one for nodes that carry nothing)."""
        return self.nodes.get(node.name, _EMPTY)

    @property
    def is_pof2(self) -> bool:
        """True when every calibrated tensor has a power-of-two fix position (the DPU grid)."""
        set_ = [p for p in self.params.values() if p.is_set]
        return bool(set_) and all(p.is_pof2 for p in set_)


_EMPTY = NodeResult()
