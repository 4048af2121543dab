"""Quantization arithmetic: pure functions, no modules, no state."""
from .rounding import RoundMode, round_tensor, round_numpy
from .fixpoint import IntRange, int_range, max_fix_pos, fix_pos_from_range, scale_of_fix_pos
from .fake_quant import (
    quantize_pof2, dequantize_pof2, fake_quantize_pof2,
    quantize_affine, dequantize_affine, fake_quantize_affine, channel_view, ste,
)

__all__ = [
    "RoundMode", "round_tensor", "round_numpy", "IntRange", "int_range", "max_fix_pos",
    "fix_pos_from_range", "scale_of_fix_pos", "quantize_pof2", "dequantize_pof2",
    "fake_quantize_pof2", "quantize_affine", "dequantize_affine", "fake_quantize_affine",
    "channel_view", "ste",
]
