"""The numbers that quantize one tensor (frozen, serialisable) and the role of a tensor.

A neutral module: calibration, the quantized modules, quant_info.json and the exporters all
speak in these types."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

__all__ = ["QuantParams", "Role"]

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


class Role(enum.Enum):
    """What the observed tensor is; decides the scope of the power-of-two search and whether
    later batches count."""

    PARAM = "param"              #: weight or bias: calibrated once, on the first batch
    ACTIVATION = "activation"    #: an output quantizer: one result per batch, combined
    MODEL_INPUT = "model_input"  #: the model input / QuantStub output: power-of-two scope 1
