"""The schema phase of reading a config: normalise the enum spellings of both vai_q_pytorch
dialects (``power_of_two``/``poweroftwo``, ``Maxmin``, ``Float`` ..., case-insensitive), then check
``schema.json`` and turn its first violation into a ``ConfigError`` that names the JSON pointer,
the value, what is allowed and, for a misspelt key or word, the closest known one."""
from __future__ import annotations

import copy
import difflib
import functools
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema

from ..errors import ConfigError
from .jsonfile import json_pointer_escape as _esc
from .jsonfile import show_value as _show
from .spec import SPEC_KEYS, SWITCH_KEYS, FinetuneMethod, TensorKind

__all__ = ["SCHEMA_PATH", "config_schema", "normalise", "check_schema"]

SCHEMA_PATH = Path(__file__).with_name("schema.json")

# accepted spellings (lower-cased) -> canonical JSON word, per enum-valued key
_SPELLINGS: dict[str, dict[str, str]] = {
    "target_device": {"dpu": "DPU", "cpu": "CPU", "gpu": "GPU"},
    "datatype": {w: w for w in ("int", "bfloat16", "float16", "float32")},
    "method": {w: w for w in ("diffs", "maxmin", "percentile", "entropy", "mse")},
    "round_mode": {w: w for w in ("std_round", "half_up", "half_down", "half_even")},
    "scale_type": {"poweroftwo": "poweroftwo", "power_of_two": "poweroftwo", "float": "float"},
    "calib_statistic_method": {w: w for w in ("modal", "max", "mean", "median")},
    "quantizable_data_type": {k.value: k.value for k in TensorKind},
    "fast_finetune_method": {m.value: m.value for m in FinetuneMethod},
}

# why a number outside its range cannot work
_RANGE_REASONS = {
    "bit_width": "0 bits hold no code and 1 bit only [-1, 0] (no positive value); above 32 bits "
                 "no integer kernel holds the codes (17 to 31 bits: see the bit_width entry of "
                 "docs/config.md)",
    "percentage": "a percentile must keep a positive share of the values and at most all of them",
    "onnx_opset_version": "torch.onnx exports opset 7 and newer",
}

# keys that users put at the wrong level -> where they belong
_ELSEWHERE = {k: "inside overall_quantize_config or tensor_quantize_config.<kind>"
              for k in SPEC_KEYS}
_ELSEWHERE.update({k: "at the top level of the file" for k in SWITCH_KEYS})
_ELSEWHERE.update({"layer_type": "inside an entry of layer_quantize_config",
                   "layer_name": "inside an entry of layer_quantize_config"})


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def config_schema() -> dict:
    """A copy of the shipped JSON Schema (``schema.json``)."""
    return copy.deepcopy(_validator().schema)


# ---------------------------------------------------------------- reading and the schema phase

def _norm_params(params: Any) -> Any:
    if not isinstance(params, dict):
        return params
    out = dict(params)
    for key, value in out.items():
        if key in _SPELLINGS and isinstance(value, str):
            out[key] = _SPELLINGS[key].get(value.lower(), value)
    return out


def _norm_kinds(kinds: Any) -> Any:
    if not isinstance(kinds, list):
        return kinds
    table = _SPELLINGS["quantizable_data_type"]
    return [table.get(k.lower(), k) if isinstance(k, str) else k for k in kinds]


def _norm_level(level: dict) -> dict:
    """Normalise one level (the file's top level or one layer rule) in a copy."""
    out = dict(level)
    if "overall_quantize_config" in out:
        out["overall_quantize_config"] = _norm_params(out["overall_quantize_config"])
    if isinstance(out.get("tensor_quantize_config"), dict):
        out["tensor_quantize_config"] = {k: _norm_params(v)
                                         for k, v in out["tensor_quantize_config"].items()}
    if "quantizable_data_type" in out:
        out["quantizable_data_type"] = _norm_kinds(out["quantizable_data_type"])
    return out


def normalise(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    out = _norm_level(data)
    for key in ("target_device", "fast_finetune_method"):
        word = out.get(key)
        if isinstance(word, str):
            out[key] = _SPELLINGS[key].get(word.lower(), word)
    if isinstance(out.get("layer_quantize_config"), list):
        out["layer_quantize_config"] = [_norm_level(e) if isinstance(e, dict) else e
                                        for e in out["layer_quantize_config"]]
    return out


def _pointer(path: Iterable[object]) -> str:
    return "".join(f"/{_esc(str(p))}" for p in path)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array"}.get(type(value), "object")


def _describe(schema: Mapping) -> str:
    """What a schema location allows, in words."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        schema = {**_validator().schema["$defs"][ref[len("#/$defs/"):]], **schema}
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    nullable = " (or null)" if "null" in types else ""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"]) + " (case-insensitive)"
    if "integer" in types:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and hi is not None:
            return f"an integer from {lo} to {hi}{nullable}"
        return (f"an integer >= {lo}" if lo is not None else "an integer") + nullable
    if "number" in types:
        return f"a number in ({schema.get('exclusiveMinimum', 0)}, {schema.get('maximum', 100)}]"
    if "boolean" in types:
        return "true or false (a JSON boolean)"
    if "array" in types:
        items = schema.get("items", {})
        return f"a list (each item {_describe(items)})" if items else "a list"
    if "object" in types:
        keys = ", ".join(schema.get("properties", {}))
        return f"an object with keys among: {keys}"
    if "string" in types:
        return f"a non-empty string{nullable}"
    return "a valid value"


def _closest(word: str, choices: Iterable[str]) -> str | None:
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


def check_schema(data: Any, label: str) -> None:
    errors = list(_validator().iter_errors(data))
    if errors:
        raise _schema_error(jsonschema.exceptions.best_match(errors), label)


def _schema_error(err: jsonschema.ValidationError, label: str) -> ConfigError:
    path = list(err.absolute_path)
    pointer = _pointer(path)
    names = [p for p in path if isinstance(p, str)]
    name = names[-1] if names else "the config"
    if path and isinstance(path[-1], int):
        name = f"{name}[{path[-1]}]" if names else f"item {path[-1]}"
    where = f"{label}, at {pointer or '/ (the top level)'}"
    kind = err.validator
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        key = next(k for k in err.instance if k not in known)
        hint = f"known keys here: {', '.join(known)}"
        guess = _closest(key, known)
        if guess:
            hint = f"did you mean {guess!r}? " + hint
        elif key in _ELSEWHERE:
            hint = f"{key!r} belongs {_ELSEWHERE[key]}; " + hint
        return ConfigError(f"unknown key {key!r} {('in ' + name) if path else 'at the top level'}",
                           where=f"{label}, at {pointer}/{_esc(key)}", hint=hint)
    value = _show(err.instance)
    allowed = _describe(err.schema)
    if kind == "enum":
        hint = f"allowed: {allowed}"
        guess = _closest(str(err.instance), err.validator_value)
        if guess:
            hint = f"did you mean {guess!r}? " + hint
        return ConfigError(f"{name} {value} is not an accepted value; allowed: {allowed}",
                           where=where, hint=hint)
    if kind == "type":
        return ConfigError(f"{name} must be {allowed}, got {value} (a JSON {_json_type(err.instance)})",
                           where=where, hint=f"allowed: {allowed}")
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        reason = _RANGE_REASONS.get(name)
        message = f"{name} must be {allowed}, got {value}"
        return ConfigError(message + (f": {reason}" if reason else ""), where=where,
                           hint=f"allowed: {allowed}")
    if kind == "minItems":
        return ConfigError(f"{name} is {value}; it must list at least one tensor kind",
                           where=where, hint=f"allowed: {allowed}; leave the key out for all four")
    if kind == "uniqueItems":
        return ConfigError(f"{name} lists a tensor kind twice: {value}", where=where,
                           hint=f"allowed: {allowed}, each at most once")
    if kind == "minLength":
        return ConfigError(f"{name} must not be an empty string, got {value}", where=where,
                           hint=f"allowed: {allowed}")
    return ConfigError(f"{name} {value}: {err.message}", where=where, hint=f"allowed: {allowed}")
