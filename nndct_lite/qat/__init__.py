"""Quantization-aware training (docs/qat.md).

* tensor level (pytorch-quantization semantics): ``tensor_quant``, ``fake_tensor_quant``,
  ``QuantDescriptor``, ``TensorQuantizer``, ``QuantConv2d``, ``QuantLinear``;
* model level (vai_q_pytorch's ``QatProcessor``): power-of-two fix positions for the DPU
  (TQT or fixed), or float scales with a CPU/GPU ``config`` (LSQ or fixed), trained from a
  calibration of the whole model, deployed through ``quantize_result/``.
"""
from .processor import (QAT_CONFIG_FILE, QatProcessor, TrainablePof2Quantizer,
                        TrainableScaleQuantizer)
from ..tensor_quant import (QuantConv2d, QuantDescriptor, QuantLinear, TensorQuantizer,
                           fake_tensor_quant, fake_tensor_quant_learned, max_bound, min_bound,
                           tensor_quant)

__all__ = ["tensor_quant", "fake_tensor_quant", "fake_tensor_quant_learned", "max_bound",
           "min_bound", "QuantDescriptor", "TensorQuantizer", "QuantConv2d", "QuantLinear",
           "QatProcessor", "TrainablePof2Quantizer", "TrainableScaleQuantizer",
           "QAT_CONFIG_FILE"]
