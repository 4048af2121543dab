"""nndct_lite: a post-training quantizer for PyTorch, drop-in compatible with vai_q_pytorch."""
from . import nn  # noqa: F401  (generated models use nndct_lite.nn)
from ._version import __version__
from .api import torch_quantizer
from .errors import (CalibrationError, ConfigError, ExportError, InputError, ModeError,
                     NndctError, OutputError, QuantInfoError, TraceError)

__all__ = ["torch_quantizer", "NndctError", "ConfigError", "TraceError", "CalibrationError",
           "QuantInfoError", "ExportError", "ModeError", "InputError", "OutputError",
           "__version__"]
