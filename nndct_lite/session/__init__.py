"""The quantization session: orchestration above the pipeline's stages.

``prepare`` (capture, passes, placement, config, generated model) builds a :class:`QuantSession`;
calibration, bias correction, fast finetune, the report and distributed runs act on it; deploy
exports read its frozen :class:`~nndct_lite.result.QuantResult`."""
from .core import QuantSession
from .prepare import prepare

__all__ = ["QuantSession", "prepare"]
