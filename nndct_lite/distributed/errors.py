"""The error every rank raises when the run cannot go on together."""
from __future__ import annotations

from ..errors import NndctError

__all__ = ["DistributedError"]


class DistributedError(NndctError, RuntimeError):
    """Another rank failed, stopped answering, or holds something that must agree (the model,
    its weights, the config, merged results). The message names the rank(s)."""

    code = "QUANTIZER_TORCH_DISTRIBUTED"
