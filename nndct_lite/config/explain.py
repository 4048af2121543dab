"""Say which settings apply to every tensor and which config level each field came from.

``explain`` builds a JSON-ready dict, ``write_resolved_config`` writes it to
``quantize_result/resolved_config.json`` (atomic, deterministic), ``format_explain`` renders a
table for people.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._text import text_table
from ..state.layout import RESOLVED_CONFIG_FILE
from ..state.files import ensure_dir
from .resolve import QuantPlan
from .spec import (KIND_ORDER, SPEC_KEYS, SWITCH_KEYS, LayerRule, QuantConfig, QuantSpec,
                   ResolvedSpec, TensorKind)

__all__ = ["explain", "write_resolved_config", "format_explain", "spec_json", "plan_settings",
           "RESOLVED_CONFIG_NAME", "RESOLVED_CONFIG_VERSION"]

RESOLVED_CONFIG_NAME = RESOLVED_CONFIG_FILE
RESOLVED_CONFIG_VERSION = 1

#: how a tensor kind is called in the per-node listing
_SLOT = {TensorKind.INPUT: "input", TensorKind.WEIGHTS: "weights", TensorKind.BIAS: "bias",
         TensorKind.ACTIVATION: "output"}


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def spec_json(resolved: ResolvedSpec) -> dict:
    """``{field: {"value": ..., "source": ...}}`` of one resolved spec; a float ``datatype``
    lists only itself (the integer settings are not used by a cast)."""
    keys = SPEC_KEYS if resolved.spec.is_int else ("datatype",)
    return {key: {"value": _plain(getattr(resolved.spec, key)), "source": resolved.sources[key]}
            for key in keys}


def plan_settings(config: QuantConfig, plan: QuantPlan) -> dict[str, Any]:
    """What a calibration ran with, as quant_info.json records it: the target and, per node and
    tensor kind, every resolved setting (an index into a table of the distinct settings)."""
    table: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    nodes: dict[str, dict[str, int]] = {}
    for name in plan:
        row = {}
        for kind, resolved in plan.specs(name).items():
            values = {key: _plain(getattr(resolved.spec, key)) for key in SPEC_KEYS}
            text = json.dumps(values, sort_keys=True)
            if text not in index:
                index[text] = len(table)
                table.append(values)
            row[kind.value] = index[text]
        if row:
            nodes[name] = row
    return {"target_device": config.target_device.value, "table": table, "nodes": nodes}


def explain(config: QuantConfig, plan: QuantPlan | None = None) -> dict:
    """Everything that was resolved, with sources, as a JSON-ready dict."""
    switches = {key: {"value": getattr(config, key), "source": config.sources.get(key, "default")}
                for key in (*SWITCH_KEYS, "target_device", "onnx_opset_version",
                            "fast_finetune_method")}
    switches["target_device"]["value"] = config.target_device.value
    switches["fast_finetune_method"]["value"] = config.fast_finetune_method.value
    switches["convert_relu6_to_relu"]["effective"] = config.effective_relu6_to_relu
    out: dict[str, Any] = {
        "version": RESOLVED_CONFIG_VERSION,
        "config_file": config.path,
        "switches": switches,
        "quantizable_data_type": [k.value for k in KIND_ORDER if k in config.quantizable_data_type],
        "global": {k.value: spec_json(s) for k, s in config.global_specs.items()},
        "layer_rules": [_rule_json(config, plan, r) for r in config.layer_rules],
        "warnings": list(config.warnings) + (list(plan.warnings) if plan else []),
    }
    if plan is not None:
        out["nodes"] = [_node_json(plan, name) for name in plan]
    return out


def _rule_json(config: QuantConfig, plan: QuantPlan | None, rule: LayerRule) -> dict:
    item = {"index": rule.index, "label": rule.label, "layer_type": rule.layer_type,
            "layer_name": rule.layer_name,
            "quantizable_data_type": [k.value for k in KIND_ORDER if k in rule.kinds]}
    if plan is not None:
        item["matched_nodes"] = list(plan.rule_matches.get(rule.index, ()))
    return item


def _node_json(plan: QuantPlan, name: str) -> dict:
    node = plan.node(name)
    item: dict[str, Any] = {"name": name, "layer_type": node.layer_type}
    reason = plan.float_reason(name)
    if reason is not None:
        item["float"] = reason
    specs = plan.specs(name)
    for kind in KIND_ORDER:
        if kind in specs:
            item[_SLOT[kind]] = spec_json(specs[kind])
    if TensorKind.ACTIVATION not in specs and node.group is not None and reason is None:
        item["output"] = {"quantized_by": node.group}
    return item


def _dumps(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_resolved_config(path: str | os.PathLike, config: QuantConfig,
                          plan: QuantPlan | None) -> Path:
    """Write ``explain(config, plan)`` as JSON; ``path`` is the file or an existing folder (then
    ``resolved_config.json`` inside it). Atomic: a temp file in the same folder + ``os.replace``."""
    target = Path(path)
    if target.is_dir():
        target = target / RESOLVED_CONFIG_NAME
    ensure_dir(target.parent)
    text = _dumps(explain(config, plan))
    from ..state.files import atomic_write_text
    atomic_write_text(target, text)
    return target


_COLUMNS = (("datatype", "dtype"), ("bit_width", "bits"), ("method", "method"), ("round_mode", "round"),
            ("scale_type", "scale"), ("symmetry", "sym"), ("per_channel", "per_ch"),
            ("signed", "signed"), ("narrow_range", "narrow"),
            ("calib_statistic_method", "stat"), ("percentage", "pct"))


def _cells(spec: QuantSpec) -> list[str]:
    """A spec's table cells; a float datatype shows only itself (the rest is not used)."""
    return [_cell(getattr(spec, f)) if spec.is_int or f == "datatype" else "-"
            for f, _ in _COLUMNS]


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _origin(resolved: ResolvedSpec) -> str:
    """The non-default sources of a spec, shortest first-come listing."""
    seen: list[str] = []
    for key in SPEC_KEYS:
        src = resolved.sources[key]
        if src != "default" and src not in seen:
            seen.append(src)
    return "; ".join(seen) or "default"


def _table(rows: list[list[str]]) -> list[str]:
    return text_table(rows[0], rows[1:])


def format_explain(config: QuantConfig, plan: QuantPlan | None = None) -> str:
    """A human-readable report: switches, global settings and (with a plan) every node."""
    lines = [f"config file: {config.path or '(none: default configuration)'}",
             f"target_device: {config.target_device.value} "
             f"({config.sources.get('target_device', 'default')})"]
    for key in (*SWITCH_KEYS, "onnx_opset_version", "fast_finetune_method"):
        lines.append(f"{key}: {_cell(getattr(config, key))} ({config.sources.get(key, 'default')})")
    header = ["tensor"] + [h for _, h in _COLUMNS] + ["from"]
    rows = [header] + [[k.value] + _cells(s.spec) + [_origin(s)]
                       for k, s in config.global_specs.items()]
    lines += ["", "global settings:"] + _table(rows)
    if config.layer_rules:
        lines += ["", "layer rules:"]
        for rule in config.layer_rules:
            kinds = ", ".join(k.value for k in KIND_ORDER if k in rule.kinds)
            hits = "" if plan is None else \
                f" -> {len(plan.rule_matches.get(rule.index, ()))} node(s)"
            lines.append(f"- {rule.label} [{kinds}]{hits}")
    if plan is not None:
        rows = [["node", "type", "tensor"] + [h for _, h in _COLUMNS] + ["from"]]
        for name in plan:
            node, specs = plan.node(name), plan.specs(name)
            reason = plan.float_reason(name)
            if reason is not None:
                rows.append([name, node.layer_type, "float"] + [""] * len(_COLUMNS) + [reason])
            for kind in KIND_ORDER:
                if kind in specs:
                    s = specs[kind]
                    rows.append([name, node.layer_type, _SLOT[kind]]
                                + _cells(s.spec) + [_origin(s)])
        lines += ["", "per node:"] + _table(rows)
    warnings = list(config.warnings) + (list(plan.warnings) if plan else [])
    if warnings:
        lines += ["", "warnings:"] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"
