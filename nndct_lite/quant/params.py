"""The numbers that quantize one tensor, frozen and serialisable."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["QuantParams"]

Num = Union[int, float]


@dataclass(frozen=True)
class QuantParams:
    """Quantization parameters of one tensor.

    Power-of-two tensors set ``fix_pos`` (an int, or a tuple per channel along ``axis``);
    float-scale tensors set ``scale`` and ``zero_point`` (scalars or tuples). ``fix_pos is None``
    together with ``scale is None`` means "never calibrated": the tensor stays float.
    ``float_max`` is ``scale * qmax`` (the CPU/GPU quant_info entry carries it).
    """

    bit_width: int
    fix_pos: int | tuple[int, ...] | None = None
    scale: float | tuple[float, ...] | None = None
    zero_point: int | tuple[int, ...] = 0
    float_max: float | tuple[float, ...] | None = None
    axis: int | None = None

    @property
    def is_pof2(self) -> bool:
        return self.fix_pos is not None

    @property
    def is_set(self) -> bool:
        return self.fix_pos is not None or self.scale is not None

    @property
    def per_channel(self) -> bool:
        return self.axis is not None
