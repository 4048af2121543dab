"""Typed vocabulary of the quantization config: enums and the per-tensor ``QuantSpec``.

Enum values are the exact JSON words of vai_q_pytorch 3.5. Strings are parsed once, by
``config/load.py``; nothing inside the package takes a mode string.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from ..numerics.rounding import RoundMode
from ..numerics.fixpoint import IntRange, int_range

__all__ = ["CalibMethod", "FinetuneMethod", "ScaleType", "StatMethod", "TargetDevice",
           "TensorKind", "DataType", "QuantSpec", "RoundMode", "ResolvedSpec", "LayerRule",
           "QuantConfig", "KIND_ORDER", "SPEC_KEYS", "SWITCH_KEYS"]


class CalibMethod(enum.Enum):
    """How statistics become a range (``method`` in the JSON)."""
    DIFFS = "diffs"
    MAXMIN = "maxmin"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


class FinetuneMethod(enum.Enum):
    """The layer-wise reconstruction ``fast_finetune`` runs (``fast_finetune_method``)."""
    ADAQUANT = "adaquant"    #: the original's AdaQuant (learns float weights and biases)
    GPTQ = "gptq"            #: Hessian-based column-wise rounding with error feedback
    ADAROUND = "adaround"    #: learned rounding (up or down per weight)


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
    """What a tensor becomes (``datatype``): integer codes, or a float type it is rounded to."""
    INT = "int"              #: quantized to integers with the other settings
    BFLOAT16 = "bfloat16"    #: rounded to bfloat16 and back (CPU/GPU targets)
    FLOAT16 = "float16"      #: rounded to float16 and back (CPU/GPU targets)
    FLOAT32 = "float32"      #: left as it is: not quantized

    @property
    def torch_dtype(self):
        """The float type a cast rounds through (None for ``int``)."""
        import torch
        return {DataType.BFLOAT16: torch.bfloat16, DataType.FLOAT16: torch.float16,
                DataType.FLOAT32: torch.float32}.get(self)


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
    datatype: DataType = DataType.INT

    @property
    def is_int(self) -> bool:
        """Integer quantization (``datatype`` int); otherwise a float cast and no calibration."""
        return self.datatype is DataType.INT

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


#: Fixed order of the tensor kinds in every listing (files, tables, messages).
KIND_ORDER: tuple[TensorKind, ...] = (TensorKind.INPUT, TensorKind.WEIGHTS, TensorKind.BIAS,
                                      TensorKind.ACTIVATION)

#: JSON keys of a quantization-parameter object that map onto ``QuantSpec`` fields (same names).
SPEC_KEYS: tuple[str, ...] = tuple(f.name for f in fields(QuantSpec))


@dataclass(frozen=True)
class ResolvedSpec:
    """A ``QuantSpec`` plus, for every field, the config level its value came from.

    Sources are ``"default"``, ``"torch_quantizer(bitwidth=N)"``, ``"overall_quantize_config"``,
    ``"tensor_quantize_config.<kind>"``, ``"layer_quantize_config[i] (layer_type X)"``,
    ``"layer_quantize_config[i] (layer_name X)"`` or ``"DPU hardware rule"``.
    """

    spec: QuantSpec
    sources: Mapping[str, str]

    def source(self, field_name: str) -> str:
        return self.sources[field_name]


@dataclass(frozen=True)
class LayerRule:
    """One entry of ``layer_quantize_config``, already resolved per tensor kind.

    ``specs`` holds, for each kind in ``kinds``, the full spec the rule gives: the resolved global
    spec of that kind with the rule's ``overall_quantize_config`` and then its
    ``tensor_quantize_config[kind]`` applied (vai_q_pytorch 3.5 semantics).
    """

    index: int
    layer_type: str | None
    layer_name: str | None
    kinds: frozenset[TensorKind]
    specs: Mapping[TensorKind, ResolvedSpec]
    kinds_given: bool = True  # False: quantizable_data_type was absent (all four kinds)

    @property
    def type_key(self) -> str | None:
        """The part of ``layer_type`` after the last ``.`` (``torch.nn.Conv2d`` -> ``Conv2d``)."""
        return None if self.layer_type is None else self.layer_type.rsplit(".", 1)[-1]

    @property
    def label(self) -> str:
        if self.layer_name is not None:
            return f"layer_quantize_config[{self.index}] (layer_name {self.layer_name})"
        return f"layer_quantize_config[{self.index}] (layer_type {self.layer_type})"

    @property
    def pointer(self) -> str:
        return f"/layer_quantize_config/{self.index}"


def _switch(default: Any, description: str) -> Any:
    return field(default=default, metadata={"switch": True, "description": description})


@dataclass(frozen=True)
class QuantConfig:
    """The loaded quantization config (see ``docs/config.md``). Build it with ``load_config``.

    ``global_specs`` is the global setting of each tensor kind (built-in default <
    ``overall_quantize_config`` < ``tensor_quantize_config[kind]``); ``layer_rules`` are in file
    order. ``sources`` says where each top-level switch came from (``"default"`` or ``"file"``).
    ``warnings`` are the messages ``load_config`` logged (one each).
    """

    path: str | None = None
    target_device: TargetDevice = TargetDevice.DPU
    convert_relu6_to_relu: bool = _switch(False, "Replace every torch.nn.ReLU6 by torch.nn.ReLU.")
    convert_silu_to_hswish: bool = _switch(False, "Replace every torch.nn.SiLU by torch.nn.Hardswish.")
    include_cle: bool = _switch(True, "Run cross-layer equalization before calibration.")
    include_bias_corr: bool = _switch(True, "Run bias correction during calibration (bias_corr.pth).")
    keep_first_last_layer_accuracy: bool = _switch(
        False, "Keep the first and the last compute layer (conv/linear) in float.")
    keep_add_layer_accuracy: bool = _switch(False, "Keep every add layer in float.")
    change_concat_input_fix: bool = _switch(
        False, "Give concat inputs the fix position of the concat output.")
    change_pool_input_fix: bool = _switch(
        False, "Give pooling inputs the fix position of the pooling output.")
    onnx_opset_version: int | None = None
    fast_finetune_method: FinetuneMethod = FinetuneMethod.ADAQUANT
    global_specs: Mapping[TensorKind, ResolvedSpec] = field(default_factory=dict)
    layer_rules: tuple[LayerRule, ...] = ()
    quantizable_data_type: frozenset[TensorKind] = frozenset(TensorKind)
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def is_dpu(self) -> bool:
        return self.target_device is TargetDevice.DPU

    def spec(self, kind: TensorKind) -> QuantSpec:
        """The global ``QuantSpec`` of one tensor kind."""
        return self.global_specs[kind].spec

    @property
    def effective_relu6_to_relu(self) -> bool:
        """Whether ReLU6 is replaced by ReLU: ``convert_relu6_to_relu``, or ``include_cle`` (CLE
        needs an unbounded activation, as in vai_q_pytorch; the loader warns when the file says
        ``convert_relu6_to_relu: false`` together with CLE on)."""
        return self.convert_relu6_to_relu or self.include_cle


#: Top-level boolean switches: JSON key -> default (from the field definitions above).
def _switch_defaults() -> dict[str, bool]:
    out: dict[str, bool] = {}
    for f in fields(QuantConfig):
        if f.metadata.get("switch"):
            if not isinstance(f.default, bool):
                raise TypeError(f"QuantConfig.{f.name} is a switch without a bool default")
            out[f.name] = f.default
    return out


SWITCH_KEYS: dict[str, bool] = _switch_defaults()
