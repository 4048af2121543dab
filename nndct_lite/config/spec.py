"""Typed vocabulary of the quantization config: enums and the per-tensor ``QuantSpec``.

Enum values are the exact JSON words of vai_q_pytorch 3.5. Strings are parsed once, by
``config/load.py``; nothing inside the package takes a mode string.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from ..numerics.rounding import RoundMode
from ..numerics.fixpoint import IntRange, int_range

__all__ = ["CalibMethod", "ScaleType", "StatMethod", "TargetDevice", "TensorKind", "DataType",
           "QuantSpec", "RoundMode"]


class CalibMethod(enum.Enum):
    """How statistics become a range (``method`` in the JSON)."""
    DIFFS = "diffs"
    MAXMIN = "maxmin"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


class ScaleType(enum.Enum):
    POWER_OF_TWO = "poweroftwo"
    FLOAT = "float"


class StatMethod(enum.Enum):
    """How per-batch results combine (``calib_statistic_method``)."""
    MODAL = "modal"
    MAX = "max"
    MEAN = "mean"
    MEDIAN = "median"


class TargetDevice(enum.Enum):
    DPU = "DPU"
    CPU = "CPU"
    GPU = "GPU"


class TensorKind(enum.Enum):
    """The four tensor types a rule can address (``quantizable_data_type``)."""
    INPUT = "input"
    WEIGHTS = "weights"
    BIAS = "bias"
    ACTIVATION = "activation"


class DataType(enum.Enum):
    INT = "int"


@dataclass(frozen=True)
class QuantSpec:
    """Resolved settings of one tensor (one kind at one node).

    ``per_channel`` applies along the weight's output-channel axis (chosen by the layer).
    ``percentage`` is only read by the percentile method.
    """

    bit_width: int = 8
    method: CalibMethod = CalibMethod.DIFFS
    round_mode: RoundMode = RoundMode.STD_ROUND
    symmetry: bool = True
    per_channel: bool = False
    signed: bool = True
    narrow_range: bool = False
    scale_type: ScaleType = ScaleType.POWER_OF_TWO
    calib_statistic_method: StatMethod = StatMethod.MODAL
    percentage: float = 99.99

    @property
    def int_range(self) -> IntRange:
        return int_range(self.bit_width, self.signed, self.narrow_range, self.symmetry)

    @property
    def is_pof2(self) -> bool:
        return self.scale_type is ScaleType.POWER_OF_TWO

    def with_(self, **changes) -> "QuantSpec":
        return replace(self, **changes)


#: Defaults of the DPU target (vai_q_pytorch.md 6.4): params round std_round, activations half_up.
DPU_PARAM_SPEC = QuantSpec()
DPU_ACT_SPEC = QuantSpec(round_mode=RoundMode.HALF_UP)
