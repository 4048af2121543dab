"""Replace ``nn.ReLU6`` modules by ReLU (convert_relu6_to_relu, or implied by CLE)."""
from __future__ import annotations

import torch.nn as nn

from ..._log import get_logger
from ..ir import Graph
from ..ops import OpKind

__all__ = ["relu6_to_relu"]

log = get_logger("passes")


def relu6_to_relu(graph: Graph) -> list[str]:
    """Turn every ``nn.ReLU6`` module node into ReLU; functional relu6/hardtanh stay clamps."""
    changed = []
    for n in graph.nodes:
        if n.kind is OpKind.RELU6 and n.op == "call_module" and isinstance(n.module, nn.ReLU6):
            n.kind, n.module = OpKind.RELU, nn.ReLU()
            n.meta["rewritten_from"] = "ReLU6"
            changed.append(n.name)
    if changed:
        graph.refresh()
        log.warning("[QUANTIZER_TORCH_REPLACE_RELU6] replaced %d nn.ReLU6 module(s) by ReLU "
                    "(include_cle or convert_relu6_to_relu), e.g. %s; the full list is in "
                    "resolved_config.json", len(changed), changed[0])
        log.debug("ReLU6 -> ReLU: %s", ", ".join(changed))
    return changed
