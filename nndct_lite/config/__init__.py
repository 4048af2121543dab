"""The quantization config: load the JSON file, resolve it per node, explain the result.

``load_config(path, bitwidth=...)`` -> ``QuantConfig``; ``resolve(config, nodes)`` -> ``QuantPlan``;
``explain`` / ``write_resolved_config`` / ``format_explain`` say where every setting came from.
See docs/config.md.
"""
from .explain import RESOLVED_CONFIG_NAME, explain, format_explain, write_resolved_config
from .load import SCHEMA_PATH, config_schema, default_config, load_config, parse_config
from .resolve import TYPE_ALIASES, NodeInfo, NodePlan, QuantPlan, resolve, type_matches
from .rules import DPU_ROUNDING, HARDWARE_SOURCE
from .spec import (KIND_ORDER, CalibMethod, DataType, LayerRule, QuantConfig, QuantSpec,
                   ResolvedSpec, RoundMode, ScaleType, StatMethod, TargetDevice, TensorKind)

__all__ = [
    "load_config", "parse_config", "default_config", "config_schema", "SCHEMA_PATH",
    "resolve", "NodeInfo", "NodePlan", "QuantPlan", "type_matches", "TYPE_ALIASES",
    "explain", "format_explain", "write_resolved_config", "RESOLVED_CONFIG_NAME",
    "QuantConfig", "LayerRule", "ResolvedSpec", "QuantSpec", "KIND_ORDER",
    "CalibMethod", "DataType", "RoundMode", "ScaleType", "StatMethod", "TargetDevice",
    "TensorKind", "DPU_ROUNDING", "HARDWARE_SOURCE",
]
