"""Cross-field rules of a tensor's settings per target device (vai_q_pytorch.md 6.5, decisions 6).

``SpecState`` is a spec under construction: the value of each ``QuantSpec`` field with the config
level (``source``) and the JSON pointer it came from. ``check_spec`` raises a ``ConfigError`` that
points at the offending value; ``dpu_round`` applies the DPU's fixed rounding (hardware rule wins).
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import ConfigError
from ..numerics.rounding import RoundMode
from .spec import (SPEC_KEYS, CalibMethod, DataType, QuantSpec, ResolvedSpec, ScaleType,
                   StatMethod, TargetDevice, TensorKind)

__all__ = ["SpecState", "check_spec", "dpu_round", "dpu_bias_matches_activation", "DPU_ROUNDING",
           "HARDWARE_SOURCE"]

HARDWARE_SOURCE = "DPU hardware rule"

#: How the DPU rounds each tensor kind (numerics.md 2.3): parameters std_round, the rest half_up.
DPU_ROUNDING = {TensorKind.INPUT: RoundMode.HALF_UP, TensorKind.ACTIVATION: RoundMode.HALF_UP,
                TensorKind.WEIGHTS: RoundMode.STD_ROUND, TensorKind.BIAS: RoundMode.STD_ROUND}

_CONVERT: dict[str, Callable[[Any], Any]] = {
    "bit_width": int, "method": CalibMethod, "round_mode": RoundMode, "scale_type": ScaleType,
    "calib_statistic_method": StatMethod, "percentage": float, "symmetry": bool,
    "per_channel": bool, "signed": bool, "narrow_range": bool, "datatype": DataType,
}

_ACT_LIKE = (TensorKind.ACTIVATION, TensorKind.INPUT)
Where = Callable[[str | None], str]


class SpecState:
    """Field values of one tensor kind's spec, each with its source label and JSON pointer."""

    def __init__(self, base: QuantSpec, source: str):
        self.values = {k: getattr(base, k) for k in SPEC_KEYS}
        self.sources = dict.fromkeys(SPEC_KEYS, source)
        self.pointers: dict[str, str | None] = dict.fromkeys(SPEC_KEYS)

    def set(self, key: str, value: Any, source: str, pointer: str | None) -> None:
        self.values[key] = _CONVERT[key](value)
        self.sources[key] = source
        self.pointers[key] = pointer

    def copy(self) -> "SpecState":
        new = SpecState.__new__(SpecState)
        new.values, new.sources, new.pointers = (dict(self.values), dict(self.sources),
                                                 dict(self.pointers))
        return new

    def frozen(self) -> ResolvedSpec:
        return ResolvedSpec(QuantSpec(**self.values), dict(self.sources))


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(getattr(value, "value", value))


def _said(state: SpecState, key: str) -> str:
    """``method 'diffs' (set at /x/method)`` or ``... (default)``."""
    ptr = state.pointers[key]
    origin = f"set at {ptr}" if ptr else state.sources[key]
    return f"{key} {_word(state.values[key])} ({origin})"


def _fail(state: SpecState, keys: tuple[str, ...], message: str, hint: str,
          where: Where) -> ConfigError:
    pointer = next((state.pointers[k] for k in keys if state.pointers[k]), None)
    return ConfigError(message, where=where(pointer), hint=hint)


def dpu_round(kind: TensorKind, state: SpecState,
              device: TargetDevice) -> tuple[str, str, RoundMode] | None:
    """On the DPU, force the hardware's rounding. Returns ``(pointer, value, hardware)`` when a
    value from the file was replaced (the caller warns once per pointer), else ``None``."""
    if device is not TargetDevice.DPU:
        return None
    hardware = DPU_ROUNDING[kind]
    value = state.values["round_mode"]
    if value is hardware:
        return None
    pointer = state.pointers["round_mode"]
    state.set("round_mode", hardware, HARDWARE_SOURCE, None)
    return None if pointer is None else (pointer, value.value, hardware)


def check_spec(kind: TensorKind, state: SpecState, device: TargetDevice, context: str,
               where: Where) -> None:
    """Raise ``ConfigError`` when the settings of ``kind`` cannot work on ``device``."""
    v = state.values
    ctx = f"{context}, {kind.value}"
    if v["datatype"] is not DataType.INT:      # a float cast: the integer settings are not used
        if device is TargetDevice.DPU and v["datatype"] is not DataType.FLOAT32:
            raise _fail(state, ("datatype",),
                        f"{ctx}: {_said(state, 'datatype')} is not possible on target_device "
                        f"'DPU': the DPU computes with integers; a tensor left float32 runs its "
                        f"layer on the CPU", "allowed on the DPU: datatype 'int' or 'float32'; "
                        "bfloat16/float16 need target_device 'CPU' or 'GPU'", where)
        return
    _check_bit_width(kind, state, device, ctx, where)
    if device is TargetDevice.DPU:
        _check_dpu(kind, state, ctx, where)
        return
    if v["per_channel"] and kind is not TensorKind.WEIGHTS:
        raise _fail(state, ("per_channel",),
                    f"{ctx}: {_said(state, 'per_channel')}: only weights can be quantized per "
                    f"channel (one scale per output channel)",
                    f"allowed for {kind.value}: per_channel false", where)
    is_float = v["scale_type"] is ScaleType.FLOAT
    method = v["method"]
    if v["per_channel"]:
        allowed = (CalibMethod.MAXMIN,) if is_float else (CalibMethod.DIFFS, CalibMethod.MAXMIN)
        if method not in allowed:
            names = " or ".join(repr(m.value) for m in allowed)
            raise _fail(state, ("method", "per_channel"),
                        f"{ctx}: {_said(state, 'method')} cannot compute per-channel "
                        f"{v['scale_type'].value} scales; per-channel ranges come from each "
                        f"channel's min/max", f"allowed with per_channel true: method {names}",
                        where)
    if is_float:
        if method is CalibMethod.DIFFS:
            raise _fail(state, ("method", "scale_type"),
                        f"{ctx}: {_said(state, 'method')} with {_said(state, 'scale_type')}: diffs "
                        f"searches power-of-two fix positions and cannot produce a float scale",
                        "allowed with scale_type 'float': method 'maxmin', 'percentile', 'mse' "
                        "or 'entropy'", where)
        if kind in _ACT_LIKE and v["calib_statistic_method"] is StatMethod.MODAL:
            raise _fail(state, ("calib_statistic_method", "scale_type"),
                        f"{ctx}: {_said(state, 'calib_statistic_method')} with "
                        f"{_said(state, 'scale_type')}: per-batch float scales almost never repeat, "
                        f"so their most frequent value is meaningless",
                        "allowed with scale_type 'float': calib_statistic_method 'max', 'mean' "
                        "or 'median'", where)
        if not v["symmetry"] and method in (CalibMethod.PERCENTILE, CalibMethod.ENTROPY,
                                             CalibMethod.MSE):
            raise _fail(state, ("symmetry", "method"),
                        f"{ctx}: {_said(state, 'symmetry')} with {_said(state, 'method')}: "
                        f"percentile, entropy and mse search a symmetric range",
                        "allowed with symmetry false: method 'maxmin'; or set symmetry true",
                        where)
        return
    if not v["symmetry"]:
        raise _fail(state, ("symmetry", "scale_type"),
                    f"{ctx}: {_said(state, 'symmetry')} with {_said(state, 'scale_type')}: a "
                    f"power-of-two scale has no zero point",
                    "allowed with scale_type 'poweroftwo': symmetry true; asymmetric ranges need "
                    "scale_type 'float'", where)
    if not v["signed"]:
        raise _fail(state, ("signed", "scale_type"),
                    f"{ctx}: {_said(state, 'signed')} with {_said(state, 'scale_type')}: "
                    f"power-of-two tensors are signed (as in vai_q_pytorch)",
                    "allowed with scale_type 'poweroftwo': signed true; unsigned ranges need "
                    "scale_type 'float'", where)
    if kind in _ACT_LIKE and v["calib_statistic_method"] is not StatMethod.MODAL:
        raise _fail(state, ("calib_statistic_method", "scale_type"),
                    f"{ctx}: {_said(state, 'calib_statistic_method')} with "
                    f"{_said(state, 'scale_type')}: per-batch power-of-two fix positions are "
                    f"combined by their most frequent value",
                    "allowed with scale_type 'poweroftwo': calib_statistic_method 'modal' "
                    "(max, mean and median combine float scales)", where)


def _check_bit_width(kind: TensorKind, state: SpecState, device: TargetDevice, ctx: str,
                     where: Where) -> None:
    """2 to 16 bits; 32 only for a float-scale bias (the int32 bias of integer GPU/CPU kernels)."""
    bw = state.values["bit_width"]
    if bw <= 16:
        return
    if bw == 32 and kind is TensorKind.BIAS and device is not TargetDevice.DPU \
            and state.values["scale_type"] is ScaleType.FLOAT:
        return
    raise _fail(state, ("bit_width",),
                f"{ctx}: {_said(state, 'bit_width')}: above 16 bits only a 32-bit bias with "
                f"scale_type 'float' on target_device 'CPU'/'GPU' is supported (the int32 bias "
                f"of integer kernels)", "allowed: bit_width 2 to 16, or 32 for a float-scale "
                "bias", where)


_DPU_FORBIDDEN = (
    ("scale_type", ScaleType.FLOAT, "the DPU computes with power-of-two scales (fix positions)",
     "allowed on the DPU: scale_type 'poweroftwo'; float scales need target_device 'CPU' or 'GPU'"),
    ("per_channel", True, "the DPU has one fix position per tensor",
     "allowed on the DPU: per_channel false; per-channel weights need target_device 'CPU' or 'GPU'"),
    ("symmetry", False, "the DPU's fix ops have no zero point",
     "allowed on the DPU: symmetry true"),
    ("narrow_range", True, "the DPU uses the full signed range [-2^(bw-1), 2^(bw-1)-1]",
     "allowed on the DPU: narrow_range false"),
    ("signed", False, "the DPU's fix ops are signed", "allowed on the DPU: signed true"),
)


def _check_dpu(kind: TensorKind, state: SpecState, ctx: str, where: Where) -> None:
    for key, bad, reason, hint in _DPU_FORBIDDEN:
        if state.values[key] == bad:
            raise _fail(state, (key,), f"{ctx}: {_said(state, key)} is not possible on target_device "
                        f"'DPU': {reason}", hint, where)
    if kind in _ACT_LIKE and state.values["calib_statistic_method"] is not StatMethod.MODAL:
        raise _fail(state, ("calib_statistic_method",),
                    f"{ctx}: {_said(state, 'calib_statistic_method')} is not possible on "
                    f"target_device 'DPU': the DPU combines the per-batch fix positions of "
                    f"activations and inputs by their most frequent value",
                    "allowed on the DPU: calib_statistic_method 'modal'", where)


def dpu_bias_matches_activation(glob: dict, device: TargetDevice, context: str,
                                where: Where) -> None:
    """DPU: the global bias bit width must equal the activation bit width (as vai_q_pytorch
    checks). Layer rules are checked per node by ``resolve``."""
    if device is not TargetDevice.DPU:
        return
    bias, act = glob[TensorKind.BIAS], glob[TensorKind.ACTIVATION]
    b, a = bias.values["bit_width"], act.values["bit_width"]
    if a == b or DataType.FLOAT32 in (bias.values["datatype"], act.values["datatype"]):
        return      # a float32 tensor keeps its layer on the CPU: no DPU bias rule
    raise ConfigError(
        f"{context}: bias bit_width {b} differs from activation bit_width {a}: the DPU needs the "
        f"bias and the output of a layer at the same bit width",
        where=where(bias.pointers["bit_width"] or act.pointers["bit_width"]),
        hint=f"allowed on the DPU: bias bit_width {a} (equal to activation); set both, e.g. in "
             f"overall_quantize_config")
