"""``nndct_lite.nn`` (imported as ``py_nndct.nn`` by generated models): runtime modules.

Conv/linear layers have their own classes; every other ``torch.nn`` module class ``X`` is
available as ``nndct_lite.nn.X``, a quantization-aware subclass made on first use.
"""
import torch.nn as _tnn

from ..tensor_quant import QuantConv2d, QuantLinear  # noqa: F401  (tensor-level QAT layers)
from ..quant.modules import (  # noqa: F401
    Const, Opaque, Conv1d, Conv2d, Conv3d, ConvTranspose2d, Input, Linear, Method, Module,
    NndctQuantModel, QuantOp, wrap_module_class,
)


def __getattr__(name: str):
    cls = getattr(_tnn, name, None)
    if isinstance(cls, type) and issubclass(cls, _tnn.Module):
        return wrap_module_class(cls)
    raise AttributeError(f"module 'nndct_lite.nn' has no attribute {name!r}")
