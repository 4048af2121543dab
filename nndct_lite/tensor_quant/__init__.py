"""Tensor-level quantization with pytorch-quantization's semantics (docs/qat.md).

``tensor_quant`` / ``fake_tensor_quant`` (clipped straight-through gradient), ``QuantDescriptor``,
``TensorQuantizer`` (calibration through the project's observers, ``load_calib_amax``) and the
``QuantConv2d`` / ``QuantLinear`` layers (also ``nndct_lite.nn.QuantConv2d`` / ``QuantLinear``).
Model-level QAT for the DPU is :class:`nndct_lite.qat.QatProcessor`.
"""
from .functions import fake_tensor_quant, max_bound, min_bound, tensor_quant
from .quantizer import (QuantConv2d, QuantDescriptor, QuantLinear, TensorQuantizer,
                        fake_tensor_quant_learned)

__all__ = ["tensor_quant", "fake_tensor_quant", "fake_tensor_quant_learned", "max_bound",
           "min_bound", "QuantDescriptor", "TensorQuantizer", "QuantConv2d", "QuantLinear"]
