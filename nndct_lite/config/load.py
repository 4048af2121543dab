"""Read a quantization config (``quant_config_file``) into a frozen ``QuantConfig``.

Phases, in order: read and parse the JSON (duplicate keys and NaN are errors) -> normalise the
enum spellings of both dialects (``power_of_two``/``poweroftwo``, ``Maxmin``, ``Float`` ...,
case-insensitive) -> check ``schema.json`` -> semantic and cross-field rules -> dataclasses.
Every failure is a ``ConfigError`` naming the file, the JSON pointer, the value and what is allowed.
``parse_config`` never logs; ``load_config`` logs each of the config's warnings once.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from .._log import get_logger
from ..errors import ConfigError
from .jsonfile import read_json
from .jsonfile import show_value as _show
from .rules import SpecState, check_spec, dpu_round, dpu_bias_matches_activation
from .schema_check import SCHEMA_PATH, check_schema, config_schema, normalise
from .spec import (KIND_ORDER, SWITCH_KEYS, DPU_ACT_SPEC, DataType, FinetuneMethod, LayerRule,
                   QuantConfig, QuantSpec, TargetDevice, TensorKind)

__all__ = ["load_config", "parse_config", "default_config", "config_schema", "SCHEMA_PATH"]

_LOG = get_logger("config")

def load_config(path: str | os.PathLike | None, *, bitwidth: int | None = None) -> QuantConfig:
    """Load ``path`` (``None``: the default configuration) and log its warnings once.

    ``bitwidth`` is ``torch_quantizer``'s argument: with no file it sets the bit width of all four
    tensor kinds; with a file it is ignored (one warning when it differs from the file's widths).
    """
    if path is None:
        config = default_config(bitwidth)
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"quant_config_file must be a path or None, got {type(path).__name__}",
                              where="torch_quantizer(quant_config_file=...)",
                              hint="pass the path of a JSON file, or None for the default config")
        name = os.fspath(path)
        config = parse_config(read_json(name), source=name, bitwidth=bitwidth)
    for message in config.warnings:
        _LOG.warning(message)
    return config


def default_config(bitwidth: int | None = None) -> QuantConfig:
    """The configuration used when no file is given (vai_q_pytorch.md 6.4)."""
    return parse_config({}, source=None, bitwidth=bitwidth)


def parse_config(data: Any, *, source: str | None = "<config>",
                 bitwidth: int | None = None) -> QuantConfig:
    """Check an already-parsed JSON document and build the ``QuantConfig`` (no logging).

    ``source`` is the file name used in messages and stored as ``QuantConfig.path``; ``None``
    means "no file" (the default configuration, where ``bitwidth`` applies).
    """
    label = source if source is not None else "<default configuration>"
    bitwidth = _check_bitwidth(bitwidth)
    try:
        data = normalise(data)
        check_schema(data, label)
        return _Builder(data, source, label, bitwidth).build()
    except RecursionError:
        raise ConfigError("the config is nested too deeply to be a quantization config",
                          where=label, hint="see docs/config.md for the file's shape") from None


def _check_bitwidth(bitwidth: Any) -> int | None:
    if bitwidth is None:
        return None
    if isinstance(bitwidth, bool) or not isinstance(bitwidth, int) or not 2 <= bitwidth <= 16:
        raise ConfigError(f"bitwidth must be an integer from 2 to 16, got {bitwidth!r}: 0 bits "
                          "hold no code and 1 bit only [-1, 0] (no positive value); above 16 "
                          "bits the DPU/XIR fix ops and nndct_lite's integer arithmetic cannot "
                          "represent the codes (a config file may give a float-scale bias 32)",
                          where="torch_quantizer(bitwidth=...)",
                          hint="allowed: an integer from 2 to 16, or None (8)")
    return bitwidth


# ---------------------------------------------------------------- semantic phase

class _Builder:
    def __init__(self, data: dict, path: str | None, label: str, bitwidth: int | None):
        self.data, self.path, self.label, self.bitwidth = data, path, label, bitwidth
        self.device = TargetDevice(data.get("target_device", "DPU"))
        self.warnings: list[str] = []
        self.round_notes: dict[str, list] = {}
        self.states: list[tuple[TensorKind, SpecState]] = []

    def where(self, pointer: str | None) -> str:
        return f"{self.label}, at {pointer}" if pointer else self.label

    def build(self) -> QuantConfig:
        data = self.data
        top_kinds = frozenset(TensorKind(k) for k in data.get("quantizable_data_type",
                                                                [k.value for k in TensorKind]))
        glob = {k: self._global_state(k, top_kinds) for k in KIND_ORDER}
        left = [k.value for k in KIND_ORDER if k not in top_kinds
                and glob[k].values["datatype"] is DataType.INT]
        if left:   # UG1414 readers expect an unlisted kind to stay float; say what happens
            self.warnings.append(
                f"{self.label}, at /quantizable_data_type: {', '.join(left)} not listed, so "
                f"overall_quantize_config does not apply to {'it' if len(left) == 1 else 'them'}"
                f", but {'it is' if len(left) == 1 else 'they are'} still quantized with the "
                f"built-in defaults (as in vai_q_pytorch 2.5); to leave a kind unquantized, set "
                f"tensor_quantize_config.<kind>.datatype to \"float32\"")
        dpu_bias_matches_activation(glob, self.device, "global settings", self.where)
        rules = tuple(self._rule(i, e, glob)
                      for i, e in enumerate(data.get("layer_quantize_config", [])))
        self._late_warnings(rules, glob)
        switches = {k: data.get(k, default) for k, default in SWITCH_KEYS.items()}
        sources = {k: ("file" if k in data else "default")
                   for k in (*SWITCH_KEYS, "target_device", "onnx_opset_version",
                             "fast_finetune_method")}
        return QuantConfig(path=self.path, target_device=self.device, **switches,
                           onnx_opset_version=data.get("onnx_opset_version"),
                           fast_finetune_method=FinetuneMethod(
                               data.get("fast_finetune_method", "adaquant")),
                           global_specs={k: s.frozen() for k, s in glob.items()},
                           layer_rules=rules, quantizable_data_type=top_kinds,
                           sources=sources, warnings=tuple(self.warnings))

    def _apply(self, state: SpecState, kind: TensorKind, params: Mapping | None, source: str,
               pointer: str) -> None:
        for key, value in (params or {}).items():
            state.set(key, value, source, f"{pointer}/{key}")

    def _finish(self, kind: TensorKind, state: SpecState, context: str) -> SpecState:
        note = dpu_round(kind, state, self.device)
        if note is not None:
            self.round_notes.setdefault(note[0], [note[1], {}])[1].setdefault(
                note[2].value, []).append(kind.value)
        check_spec(kind, state, self.device, context, self.where)
        self.states.append((kind, state))
        return state

    def _global_state(self, kind: TensorKind, top_kinds: frozenset) -> SpecState:
        state = SpecState(DPU_ACT_SPEC if kind is TensorKind.ACTIVATION else QuantSpec(), "default")
        if self.path is None and self.bitwidth is not None:
            state.set("bit_width", self.bitwidth, f"torch_quantizer(bitwidth={self.bitwidth})", None)
        if kind in top_kinds:
            self._apply(state, kind, self.data.get("overall_quantize_config"),
                        "overall_quantize_config", "/overall_quantize_config")
        tensor = self.data.get("tensor_quantize_config", {}).get(kind.value)
        self._apply(state, kind, tensor, f"tensor_quantize_config.{kind.value}",
                    f"/tensor_quantize_config/{kind.value}")
        return self._finish(kind, state, "global settings")

    def _rule(self, index: int, entry: dict, glob: dict) -> LayerRule:
        pointer = f"/layer_quantize_config/{index}"
        layer_type, layer_name = entry.get("layer_type"), entry.get("layer_name")
        if (layer_type is None) == (layer_name is None):
            given = "both" if layer_type is not None else "neither"
            raise ConfigError(
                f"layer_quantize_config[{index}] gives {given} of layer_type and layer_name "
                f"(layer_type {_show(layer_type)}, layer_name {_show(layer_name)}); a rule needs "
                f"exactly one", where=self.where(pointer),
                hint="allowed: a layer_type string (e.g. \"torch.nn.Conv2d\") or a layer_name "
                     "string copied from quantize_result/<Model>.py, the other null or absent")
        kinds = frozenset(TensorKind(k) for k in entry.get("quantizable_data_type",
                                                           [k.value for k in TensorKind]))
        tensor = entry.get("tensor_quantize_config", {})
        for key in tensor:
            if TensorKind(key) not in kinds:
                raise ConfigError(
                    f"layer_quantize_config[{index}] has tensor_quantize_config.{key} but "
                    f"{key!r} is not in its quantizable_data_type "
                    f"{sorted(k.value for k in kinds)}; the settings would be ignored",
                    where=self.where(f"{pointer}/tensor_quantize_config/{key}"),
                    hint=f"add {key!r} to quantizable_data_type (allowed: input, weights, bias, "
                         f"activation), or remove tensor_quantize_config.{key}")
        rule = LayerRule(index, layer_type, layer_name, kinds, {})  # for its label
        states = {}
        for kind in KIND_ORDER:
            if kind in kinds:
                state = glob[kind].copy()
                self._apply(state, kind, entry.get("overall_quantize_config"), rule.label,
                            f"{pointer}/overall_quantize_config")
                self._apply(state, kind, tensor.get(kind.value), rule.label,
                            f"{pointer}/tensor_quantize_config/{kind.value}")
                states[kind] = self._finish(kind, state, rule.label)
        return LayerRule(index, layer_type, layer_name, kinds,
                         {k: s.frozen() for k, s in states.items()},
                         kinds_given="quantizable_data_type" in entry)

    def _late_warnings(self, rules: tuple[LayerRule, ...], glob: dict) -> None:
        src = self.label
        for pointer, (value, by_hw) in self.round_notes.items():
            names = ", ".join(k for ks in by_hw.values() for k in ks)
            used_hw = "; ".join(f"{hw!r} for {', '.join(ks)}" for hw, ks in by_hw.items())
            self.warnings.append(
                f"{src}, at {pointer}: round_mode {value!r} is not the DPU's rounding for "
                f"{names}; using the hardware's: {used_hw} (the DPU rounds activations and inputs "
                f"half_up, weights and biases std_round)")
        if self.data.get("convert_relu6_to_relu") is False and self.data.get("include_cle", True):
            self.warnings.append(
                f"{src}, at /convert_relu6_to_relu: false is overridden because include_cle is "
                f"true: cross-layer equalization needs an unbounded activation, so ReLU6 is still "
                f"replaced by ReLU; set include_cle to false to keep ReLU6")
        used: dict[str, bool] = {}
        for kind, state in self.states:
            ptr = state.pointers["percentage"]
            if ptr is not None:
                used[ptr] = used.get(ptr, False) or state.values["method"].value == "percentile"
            ptr = state.pointers["calib_statistic_method"]
            if (ptr is not None and kind in (TensorKind.WEIGHTS, TensorKind.BIAS)
                    and f"/tensor_quantize_config/{kind.value}/" in ptr):
                message = (f"{src}, at {ptr}: calib_statistic_method has no effect on "
                           f"{kind.value}: parameters are calibrated once, not per batch")
                if message not in self.warnings:
                    self.warnings.append(message)
        for ptr, was_used in used.items():
            if not was_used:
                self.warnings.append(f"{src}, at {ptr}: percentage has no effect: no tensor it "
                                     f"applies to uses method 'percentile'")
        # per (layer type, layer name) and kind, the last rule that sets the kind: a rule is
        # overridden by the last later rule of the same key sharing a kind (linear, not a scan
        # of every later rule per rule)
        last: dict[tuple, dict[TensorKind, int]] = {}
        for i, rule in enumerate(rules):
            for kind in rule.kinds:
                last.setdefault((rule.type_key, rule.layer_name), {})[kind] = i
        for i, rule in enumerate(rules):
            by_kind = last[(rule.type_key, rule.layer_name)] if rule.kinds else {}
            j = max((by_kind[k] for k in rule.kinds), default=i)
            if j > i:
                winner = rules[j]
                kinds = sorted((k.value for k in rule.kinds & winner.kinds),
                               key=[k.value for k in KIND_ORDER].index)
                self.warnings.append(
                    f"{src}, at {rule.pointer}: {rule.label} is overridden for "
                    f"{', '.join(kinds)} by {winner.label}; the last rule wins")
        if self.path is not None and self.bitwidth is not None:
            widths = {k.value: glob[k].values["bit_width"] for k in KIND_ORDER}
            if any(w != self.bitwidth for w in widths.values()):
                shown = ", ".join(f"{k} {w}" for k, w in widths.items())
                self.warnings.append(
                    f"torch_quantizer(bitwidth={self.bitwidth}) is ignored because a config file "
                    f"is given ({src}); its bit widths are used ({shown}) "
                    f"[QUANTIZER_TORCH_BITWIDTH_MISMATCH]")
