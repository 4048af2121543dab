"""Random mutations of the example config: loading and resolving succeed or raise ConfigError."""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config_helpers import EXAMPLE, resnet20_nodes
from nndct_lite.config import (QuantConfig, QuantPlan, explain, format_explain, load_config,
                               parse_config, resolve)
from nndct_lite.errors import ConfigError

NODES = resnet20_nodes()
BASES = [json.loads(EXAMPLE.read_text(encoding="utf-8")), {
    "target_device": "DPU", "convert_relu6_to_relu": False, "keep_add_layer_accuracy": True,
    "quantizable_data_type": ["input", "weights", "bias", "activation"],
    "overall_quantize_config": {"bit_width": 8, "method": "diffs", "round_mode": "std_round",
                                "scale_type": "power_of_two", "calib_statistic_method": "modal"},
    "tensor_quantize_config": {"activation": {"round_mode": "half_up"},
                               "input": {"method": "maxmin"}},
    "layer_quantize_config": [
        {"layer_type": "relu", "quantizable_data_type": ["activation", "bias"],
         "overall_quantize_config": {"bit_width": 8, "method": "percentile", "percentage": 99}},
        {"layer_name": NODES[3].name, "tensor_quantize_config": {"weights": {"bit_width": 4}}},
        {"layer_type": "torch.nn.Linear", "quantizable_data_type": ["activation", "bias"]}]}]
WORDS = ["DPU", "cpu", "Float", "power_of_two", "maxmin", "Entropy", "percentile", "mse", "diffs",
         "half_up", "std_round", "modal", "max", "weights", "bias", "activation", "input", "int",
         "float16", "torch.nn.Conv2d", "Linear", "relu", "add", NODES[3].name, ""]

scalars = (st.none() | st.booleans() | st.integers(-5, 40) | st.integers()
           | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(WORDS)
           | st.text(max_size=12))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8) | st.sampled_from(WORDS), inner,
                                      max_size=3), max_leaves=8)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        op = draw(st.sampled_from(["delete", "replace", "rename", "add", "case"]))
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(junk)
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10) | st.sampled_from(WORDS))] = parent.pop(last)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(WORDS + ["bit_width", "method", "layer_name"]))] = \
                draw(junk)
        elif op == "add" and isinstance(parent, list):
            parent.append(draw(junk))
        elif op == "case" and isinstance(parent[last], str):
            parent[last] = draw(st.sampled_from([str.upper, str.lower, str.title]))(parent[last])
    return doc


def _check(config: QuantConfig) -> None:
    plan = resolve(config, NODES)
    assert isinstance(plan, QuantPlan)
    json.dumps(explain(config, plan), allow_nan=False)
    format_explain(config, plan)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_dicts_load_or_raise_config_error(doc):
    try:
        _check(parse_config(doc, source="fuzz.json"))
    except ConfigError as exc:
        assert exc.where and "fuzz.json" in exc.where, str(exc)


_TMP = Path(tempfile.mkdtemp(prefix="nndct_cfg_fuzz_"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.integers(0, 200), st.sampled_from(["", "}", ",", "\x00", "NaN", "{{"]))
def test_mutated_files_load_or_raise_config_error(doc, cut, noise):
    text = json.dumps(doc, indent=2)
    if noise:
        cut = min(cut, len(text))
        text = text[:cut] + noise + text[cut:]
    path = _TMP / "cfg.json"
    path.write_text(text, encoding="utf-8")
    try:
        _check(load_config(path))
    except ConfigError:
        pass
