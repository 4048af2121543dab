"""Every key of the file changes what is resolved (nothing configured is silently ignored)."""
from __future__ import annotations

import pytest

from config_helpers import LINEAR, resnet20_nodes
from nndct_lite.config import (KIND_ORDER, CalibMethod, DataType, RoundMode,
                               ScaleType, StatMethod, TargetDevice, TensorKind, parse_config,
                               resolve)
from nndct_lite.config.spec import SPEC_KEYS, SWITCH_KEYS

W, B, A, I = TensorKind.WEIGHTS, TensorKind.BIAS, TensorKind.ACTIVATION, TensorKind.INPUT
TOP = "CifarResNet::CifarResNet"
CONV = f"{TOP}/Sequential[layer1]/_Block[0]/Conv2d[conv1]/ret.3"
RELU = f"{TOP}/Sequential[layer1]/_Block[0]/ret.4"
FLOAT = {"scale_type": "float", "method": "maxmin", "calib_statistic_method": "max"}


def run(data):
    config = parse_config(data, source="cfg.json")
    return config, resolve(config, resnet20_nodes())


def w(cfg, plan):
    return plan.specs(CONV)[W]


def act(cfg, plan):
    return plan.specs(RELU)[A]


# name, file, accessor of the resolved spec, field, expected value, expected source
SPEC_CASES = [
    ("bit_width", {"overall_quantize_config": {"bit_width": 4}}, w, 4, "overall_quantize_config"),
    ("method", {"overall_quantize_config": {"method": "mse"}}, act, CalibMethod.MSE,
     "overall_quantize_config"),
    ("round_mode", {"target_device": "CPU", "overall_quantize_config": {"round_mode": "half_even"}},
     act, RoundMode.HALF_EVEN, "overall_quantize_config"),
    ("symmetry", {"target_device": "CPU", "overall_quantize_config": {**FLOAT, "symmetry": False}},
     act, False, "overall_quantize_config"),
    ("per_channel", {"target_device": "CPU", "tensor_quantize_config": {
        "weights": {"per_channel": True}}}, w, True, "tensor_quantize_config.weights"),
    ("signed", {"target_device": "CPU", "overall_quantize_config": {**FLOAT, "signed": False}},
     act, False, "overall_quantize_config"),
    ("narrow_range", {"target_device": "GPU", "overall_quantize_config": {"narrow_range": True}},
     w, True, "overall_quantize_config"),
    ("scale_type", {"target_device": "CPU", "overall_quantize_config": FLOAT}, w,
     ScaleType.FLOAT, "overall_quantize_config"),
    ("calib_statistic_method", {"target_device": "CPU", "overall_quantize_config": {
        **FLOAT, "calib_statistic_method": "median"}}, act, StatMethod.MEDIAN,
     "overall_quantize_config"),
    ("percentage", {"overall_quantize_config": {"method": "percentile", "percentage": 99.5}}, act,
     99.5, "overall_quantize_config"),
    ("datatype", {"target_device": "CPU", "tensor_quantize_config": {
        "activation": {"datatype": "bfloat16"}}}, act, DataType.BFLOAT16,
     "tensor_quantize_config.activation"),
]


def test_the_table_covers_every_spec_key():
    assert {c[0] for c in SPEC_CASES} == set(SPEC_KEYS)


@pytest.mark.parametrize("field, data, get, value, source", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_each_spec_key_changes_the_resolved_spec(field, data, get, value, source):
    default = get(*run({"target_device": data.get("target_device", "DPU")}))
    changed = get(*run(data))
    assert getattr(changed.spec, field) == value != getattr(default.spec, field)
    assert changed.sources[field] == source


@pytest.mark.parametrize("key", sorted(SWITCH_KEYS))
def test_each_switch_is_read(key):
    config, _ = run({key: not SWITCH_KEYS[key]})
    assert getattr(config, key) is (not SWITCH_KEYS[key]) and config.sources[key] == "file"
    assert getattr(run({})[0], key) is SWITCH_KEYS[key]


def test_target_device_and_onnx_opset():
    config, _ = run({"target_device": "GPU", "onnx_opset_version": 13})
    assert config.target_device is TargetDevice.GPU and config.onnx_opset_version == 13
    assert config.sources["target_device"] == config.sources["onnx_opset_version"] == "file"
    assert run({"onnx_opset_version": None})[0].onnx_opset_version is None


def test_top_level_quantizable_data_type_limits_the_overall_config():
    config, plan = run({"quantizable_data_type": ["weights", "input"],
                        "overall_quantize_config": {"bit_width": 4}})
    assert w(config, plan).spec.bit_width == 4 and act(config, plan).spec.bit_width == 8
    assert config.spec(B).bit_width == 8 and config.spec(I).bit_width == 4


@pytest.mark.parametrize("kind", KIND_ORDER)
def test_each_tensor_kind_override_changes_only_that_kind(kind):
    config, _ = run({"target_device": "CPU",
                     "tensor_quantize_config": {kind.value: {"bit_width": 5}}})
    assert {k for k in KIND_ORDER if config.spec(k).bit_width == 5} == {kind}
    assert config.global_specs[kind].sources["bit_width"] == f"tensor_quantize_config.{kind.value}"


LAYER_CASES = [
    ("layer_type", {"layer_type": "torch.nn.Linear", "overall_quantize_config": {"bit_width": 4}},
     LINEAR, W, 4),
    ("layer_name", {"layer_name": CONV, "overall_quantize_config": {"bit_width": 4}}, CONV, W, 4),
    ("quantizable_data_type", {"layer_name": CONV, "quantizable_data_type": ["bias"],
                               "overall_quantize_config": {"bit_width": 4}}, CONV, W, 8),
    ("overall_quantize_config", {"layer_name": CONV, "overall_quantize_config": {
        "method": "maxmin"}}, CONV, B, CalibMethod.MAXMIN),
    ("tensor_quantize_config", {"layer_name": CONV, "tensor_quantize_config": {
        "activation": {"bit_width": 12}}}, RELU, A, 12),
]


@pytest.mark.parametrize("key, entry, node, kind, value", LAYER_CASES,
                         ids=[c[0] for c in LAYER_CASES])
def test_each_layer_key_is_honoured(key, entry, node, kind, value):
    _, plan = run({"target_device": "CPU", "layer_quantize_config": [entry]})
    spec = plan.specs(node)[kind].spec
    got = spec.method if isinstance(value, CalibMethod) else spec.bit_width
    assert got == value
