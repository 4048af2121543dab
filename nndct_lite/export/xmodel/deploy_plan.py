"""Which nodes the XModel builder writes as CPU ops: the builder's own decision, for ``inspect``."""
from __future__ import annotations

import logging

import torch

from ...result import QuantResult
from .build import _Builder

__all__ = ["cpu_ops_of"]


def cpu_ops_of(result: QuantResult) -> dict[str, str]:
    """``{node name: CPU op type}`` of the XModel ``export_xmodel`` would write for ``result``
    (built in memory, nothing written, the builder's own messages silenced)."""
    logger = logging.getLogger("nndct_lite.export")
    was = logger.disabled
    logger.disabled = True
    try:
        builder = _Builder(result)
        with torch.no_grad():
            builder.build()
    finally:
        logger.disabled = was
    return dict(zip(builder.cpu_ops, builder.cpu_types))
