"""load_config: defaults, the bitwidth argument, reading errors, dialects, schema and rule errors."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from nndct_lite.config import (CalibMethod, DataType, load_config, parse_config,
                               RoundMode, ScaleType, StatMethod, TargetDevice, TensorKind)
from nndct_lite.errors import ConfigError

W, B, A, I = TensorKind.WEIGHTS, TensorKind.BIAS, TensorKind.ACTIVATION, TensorKind.INPUT
ALL = (I, W, B, A)
CPU_FLOAT = {"target_device": "CPU",
             "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                         "calib_statistic_method": "max"}}


def err(path_or_data, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        if isinstance(path_or_data, str):
            load_config(path_or_data, **kw)
        else:
            parse_config(path_or_data, source="cfg.json", **kw)
    return str(info.value)


# ------------------------------------------------------------------ defaults and bitwidth

def test_default_config_matches_the_original():
    c = load_config(None)
    assert c.path is None and c.target_device is TargetDevice.DPU
    assert (c.include_cle, c.include_bias_corr, c.convert_relu6_to_relu) == (True, True, False)
    assert c.effective_relu6_to_relu  # CLE replaces ReLU6 unless the file says otherwise
    for kind in ALL:
        s = c.spec(kind)
        assert (s.bit_width, s.method, s.scale_type, s.calib_statistic_method) == (
            8, CalibMethod.DIFFS, ScaleType.POWER_OF_TWO, StatMethod.MODAL)
        assert s.symmetry and s.signed and not s.per_channel and not s.narrow_range
    assert c.spec(W).round_mode is c.spec(B).round_mode is RoundMode.STD_ROUND
    assert c.spec(A).round_mode is c.spec(I).round_mode is RoundMode.HALF_UP
    assert c.layer_rules == () and c.warnings == ()


def test_bitwidth_sets_all_four_kinds_without_a_file():
    c = load_config(None, bitwidth=4)
    assert {c.spec(k).bit_width for k in ALL} == {4}
    assert c.global_specs[W].sources["bit_width"] == "torch_quantizer(bitwidth=4)"


def test_bitwidth_is_ignored_with_one_warning_when_a_file_differs(write, caplog):
    path = write({"overall_quantize_config": {"bit_width": 8}})
    with caplog.at_level(logging.WARNING, logger="nndct_lite.config"):
        c = load_config(path, bitwidth=4)
    assert {c.spec(k).bit_width for k in ALL} == {8}
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "bitwidth=4" in msgs[0] and "ignored" in msgs[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nndct_lite.config"):
        load_config(path, bitwidth=8)
    assert not caplog.records


@pytest.mark.parametrize("bad", [0, 1, 17, 32, True, "8", 8.0])
def test_bad_bitwidth_argument(bad):
    msg = err({}, bitwidth=bad)
    assert "bitwidth" in msg and "2 to 16" in msg


def test_path_like_and_empty_object(write, tmp_path):
    from pathlib import Path
    c = load_config(Path(write({})))
    assert c.target_device is TargetDevice.DPU and c.path.endswith("cfg.json")


# ------------------------------------------------------------------ reading errors

def test_missing_file(tmp_path):
    msg = err(str(tmp_path / "nope.json"))
    assert "not found" in msg and "nope.json" in msg


def test_directory_is_not_a_file(tmp_path):
    assert "the config path is a directory" in err(str(tmp_path))


def test_not_json_gives_line_and_column(write):
    path = write('{\n  "include_cle": true,\n  "include_bias_corr": false,\n}\n')
    msg = err(path)
    assert "not valid JSON" in msg and f"{path}:4:1" in msg and "line 4, column 1" in msg


def test_duplicate_keys_are_errors(write):
    path = write('{"overall_quantize_config": {"method": "maxmin", "method": "diffs"}}')
    msg = err(path)
    assert "'method' is given twice" in msg and "/overall_quantize_config/method" in msg


def test_nan_and_bad_encoding(write, tmp_path):
    assert "NaN" in err(write('{"overall_quantize_config": {"percentage": NaN}}'))
    p = tmp_path / "latin.json"
    p.write_bytes(b'{"target_device": "\xe9"}')
    assert "UTF-8" in err(str(p))


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf{}")
    assert load_config(str(p)).target_device is TargetDevice.DPU


def test_wrong_path_type():
    with pytest.raises(ConfigError, match="must be a path"):
        load_config(42)


# ------------------------------------------------------------------ dialects

@pytest.mark.parametrize("key, word, expected", [
    ("scale_type", "power_of_two", ScaleType.POWER_OF_TWO),
    ("scale_type", "Power_Of_Two", ScaleType.POWER_OF_TWO),
    ("scale_type", "POWEROFTWO", ScaleType.POWER_OF_TWO),
    ("method", "Maxmin", CalibMethod.MAXMIN),
    ("method", "Entropy", CalibMethod.ENTROPY),
    ("method", "DIFFS", CalibMethod.DIFFS),
    ("round_mode", "STD_ROUND", RoundMode.STD_ROUND),
    ("calib_statistic_method", "Max", StatMethod.MAX),
])
def test_both_dialects_case_insensitive(key, word, expected):
    c = parse_config({"tensor_quantize_config": {"weights": {key: word}}})
    assert getattr(c.spec(W), key) is expected


def test_float_spellings_on_cpu():
    c = parse_config({"target_device": "cpu", "overall_quantize_config": {
        "scale_type": "Float", "method": "MaxMin", "calib_statistic_method": "MEDIAN"}})
    assert c.spec(A).scale_type is ScaleType.FLOAT and c.spec(A).method is CalibMethod.MAXMIN
    assert c.spec(A).calib_statistic_method is StatMethod.MEDIAN


@pytest.mark.parametrize("device", ["dpu", "Cpu", "GPU", "gPu"])
def test_target_device_case_insensitive(device):
    assert parse_config({"target_device": device}).target_device.value == device.upper()


def test_kind_and_datatype_words_case_insensitive():
    c = parse_config({"quantizable_data_type": ["Weights", "INPUT"],
                      "overall_quantize_config": {"datatype": "INT", "bit_width": 4}})
    assert c.spec(W).bit_width == 4 and c.spec(A).bit_width == 8


# ------------------------------------------------------------------ schema errors

SCHEMA_CASES = [
    # data, pointer, shown value, words of the allowed values
    ({"layer_quantize_config": [{"layer_type": "Conv2d"},
                                {"layer_type": "Linear", "tensor_quantize_config": {
                                    "weights": {"bit_width": "8"}}}]},
     "/layer_quantize_config/1/tensor_quantize_config/weights/bit_width", '"8"',
     "an integer from 2 to 32"),
    ({"overall_quantize_config": {"method": "maxmn"}}, "/overall_quantize_config/method",
     '"maxmn"', "'diffs', 'maxmin', 'percentile', 'entropy', 'mse'"),
    ({"overall_quantize_config": {"round_mode": "half_awayfromzero"}},
     "/overall_quantize_config/round_mode", '"half_awayfromzero"', "'std_round', 'half_up'"),
    ({"tensor_quantize_config": {"bias": {"scale_type": "pow2"}}},
     "/tensor_quantize_config/bias/scale_type", '"pow2"', "'poweroftwo', 'float'"),
    ({"target_device": "FPGA"}, "/target_device", '"FPGA"', "'DPU', 'CPU', 'GPU'"),
    ({"include_cle": "yes"}, "/include_cle", '"yes"', "true or false"),
    ({"include_cle": 1}, "/include_cle", "1", "true or false"),
    ({"overall_quantize_config": {"symmetry": "true"}}, "/overall_quantize_config/symmetry",
     '"true"', "true or false"),
    ({"overall_quantize_config": {"bit_width": True}}, "/overall_quantize_config/bit_width",
     "true", "an integer from 2 to 32"),
    ({"overall_quantize_config": {"bit_width": 0}}, "/overall_quantize_config/bit_width", "0",
     "an integer from 2 to 32"),
    ({"overall_quantize_config": {"bit_width": 1}}, "/overall_quantize_config/bit_width", "1",
     "an integer from 2 to 32"),
    ({"overall_quantize_config": {"bit_width": 33}}, "/overall_quantize_config/bit_width", "33",
     "an integer from 2 to 32"),
    ({"overall_quantize_config": {"percentage": 0}}, "/overall_quantize_config/percentage", "0",
     "a number in (0, 100]"),
    ({"overall_quantize_config": {"percentage": 100.5}}, "/overall_quantize_config/percentage",
     "100.5", "a number in (0, 100]"),
    ({"overall_quantize_config": {"percentage": "99"}}, "/overall_quantize_config/percentage",
     '"99"', "a number in (0, 100]"),
    ({"onnx_opset_version": 5}, "/onnx_opset_version", "5", "an integer >= 7"),
    ({"layer_quantize_config": {"layer_type": "Conv2d"}}, "/layer_quantize_config",
     '{"layer_type": "Conv2d"}', "a list (each item an object"),
    ({"layer_quantize_config": [{"layer_type": "Conv2d", "quantizable_data_type": ["weight"]}]},
     "/layer_quantize_config/0/quantizable_data_type/0", '"weight"',
     "'input', 'weights', 'bias', 'activation'"),
    ({"layer_quantize_config": [{"layer_type": "Conv2d", "quantizable_data_type": []}]},
     "/layer_quantize_config/0/quantizable_data_type", "[]", "input"),
    ({"layer_quantize_config": [{"layer_type": "Conv2d",
                                 "quantizable_data_type": ["bias", "bias"]}]},
     "/layer_quantize_config/0/quantizable_data_type", '["bias", "bias"]', "each at most once"),
    ({"layer_quantize_config": [{"layer_type": ""}]}, "/layer_quantize_config/0/layer_type",
     '""', "non-empty string"),
    ([1, 2], "/ (the top level)", "[1, 2]", "an object with keys among: target_device"),
    ({"tensor_quantize_config": {"weights": 8}}, "/tensor_quantize_config/weights", "8",
     "an object with keys among: datatype, bit_width"),
]


@pytest.mark.parametrize("data, pointer, value, allowed", SCHEMA_CASES)
def test_schema_errors_name_file_pointer_value_allowed(write, data, pointer, value, allowed):
    path = write(data)
    msg = err(path)
    assert path in msg, msg
    assert f"at {pointer}" in msg, msg
    assert value in msg, msg
    assert allowed in msg, msg


def test_enum_error_suggests_the_closest_value(write):
    msg = err(write({"overall_quantize_config": {"method": "maxmn"}}))
    assert "did you mean 'maxmin'" in msg


@pytest.mark.parametrize("bad", [0, 1, 33])
def test_bit_width_range_is_explained(bad):
    msg = err({"overall_quantize_config": {"bit_width": bad}})
    assert "0 bits hold no code" in msg and "above 32 bits" in msg


@pytest.mark.parametrize("data", [
    {"overall_quantize_config": {"bit_width": 17}},
    {"target_device": "CPU", "tensor_quantize_config": {"weights": {"bit_width": 32}}},
    {"tensor_quantize_config": {"bias": {"bit_width": 32}}},                  # DPU
    {"target_device": "GPU", "tensor_quantize_config": {"bias": {"bit_width": 24}}},
])
def test_above_16_bits_only_a_32_bit_float_scale_bias(data):
    msg = err(data)
    assert "above 16 bits only a 32-bit bias with scale_type 'float'" in msg


def test_32_bit_float_scale_bias_is_accepted():
    c = parse_config({"target_device": "GPU", "overall_quantize_config": {
        "scale_type": "float", "method": "maxmin", "calib_statistic_method": "max"},
        "tensor_quantize_config": {"bias": {"bit_width": 32}}})
    assert c.spec(B).bit_width == 32 and c.spec(W).bit_width == 8


def test_integral_float_bit_width_and_int_percentage_are_accepted():
    c = parse_config({"overall_quantize_config": {"bit_width": 4.0, "percentage": 99,
                                                  "method": "percentile"}})
    assert c.spec(W).bit_width == 4 and isinstance(c.spec(W).bit_width, int)
    assert c.spec(W).percentage == 99.0 and isinstance(c.spec(W).percentage, float)
    assert parse_config({"overall_quantize_config": {"percentage": 100,
                                                     "method": "percentile"}}).spec(A).percentage == 100


# ------------------------------------------------------------------ unknown keys

@pytest.mark.parametrize("data, pointer, suggestion", [
    ({"include_cl": True}, "/include_cl", "did you mean 'include_cle'"),
    ({"Include_CLE": True}, "/Include_CLE", "did you mean 'include_cle'"),
    ({"overall_quantize_config": {"bitwidth": 8}}, "/overall_quantize_config/bitwidth",
     "did you mean 'bit_width'"),
    ({"tensor_quantize_config": {"activations": {}}}, "/tensor_quantize_config/activations",
     "did you mean 'activation'"),
    ({"layer_quantize_config": [{"layer_types": "Conv2d"}]},
     "/layer_quantize_config/0/layer_types", "did you mean 'layer_type'"),
    ({"bit_width": 8}, "/bit_width", "belongs inside overall_quantize_config"),
    ({"zzz": 1}, "/zzz", "known keys here: target_device"),
])
def test_unknown_key_suggests(write, data, pointer, suggestion):
    path = write(data)
    msg = err(path)
    assert "unknown key" in msg and path in msg and f"at {pointer}" in msg and suggestion in msg


# ------------------------------------------------------------------ semantic errors

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_float_cast_datatype_is_refused_on_the_dpu(dtype):
    msg = err({"tensor_quantize_config": {"activation": {"datatype": dtype}}})
    assert f"datatype {dtype!r}" in msg and "not possible on target_device 'DPU'" in msg
    assert "/tensor_quantize_config/activation/datatype" in msg and "'float32'" in msg


def test_float_datatypes_resolve_and_skip_the_integer_checks():
    # float scale + modal would be an error for an int tensor; a cast does not use them
    c = parse_config({"target_device": "CPU", "overall_quantize_config": {
        "datatype": "bfloat16", "scale_type": "float"},
        "tensor_quantize_config": {"bias": {"datatype": "float16"}}})
    assert c.spec(A).datatype is DataType.BFLOAT16 and c.spec(B).datatype is DataType.FLOAT16
    assert not c.spec(A).is_int and c.spec(W).datatype.torch_dtype is torch.bfloat16
    dpu = parse_config({"overall_quantize_config": {"datatype": "float32"}})
    assert dpu.spec(W).datatype is DataType.FLOAT32 and dpu.spec(W).datatype.torch_dtype \
        is torch.float32


@pytest.mark.parametrize("entry, word", [
    ({"layer_type": "Conv2d", "layer_name": "M::x"}, "both"),
    ({"layer_type": None, "layer_name": None}, "neither"),
    ({"quantizable_data_type": ["weights"]}, "neither"),
])
def test_layer_rule_needs_exactly_one_selector(entry, word):
    msg = err({"layer_quantize_config": [entry]})
    assert f"gives {word} of layer_type and layer_name" in msg
    assert "/layer_quantize_config/0" in msg and "cfg.json" in msg


def test_tensor_config_for_an_unlisted_kind_is_an_error():
    msg = err({"layer_quantize_config": [{"layer_type": "Conv2d",
                                          "quantizable_data_type": ["weights"],
                                          "tensor_quantize_config": {"bias": {"bit_width": 4}}}]})
    assert "/layer_quantize_config/0/tensor_quantize_config/bias" in msg
    assert "not in its quantizable_data_type ['weights']" in msg


DPU_ERRORS = [
    ({"overall_quantize_config": {"scale_type": "float"}}, "/overall_quantize_config/scale_type",
     "scale_type 'float'", "power-of-two scales", "'poweroftwo'"),
    ({"tensor_quantize_config": {"weights": {"per_channel": True}}},
     "/tensor_quantize_config/weights/per_channel", "per_channel true", "one fix position",
     "per_channel false"),
    ({"overall_quantize_config": {"symmetry": False}}, "/overall_quantize_config/symmetry",
     "symmetry false", "no zero point", "symmetry true"),
    ({"overall_quantize_config": {"narrow_range": True}}, "/overall_quantize_config/narrow_range",
     "narrow_range true", "full signed range", "narrow_range false"),
    ({"tensor_quantize_config": {"bias": {"signed": False}}}, "/tensor_quantize_config/bias/signed",
     "signed false", "signed", "signed true"),
    ({"tensor_quantize_config": {"activation": {"calib_statistic_method": "max"}}},
     "/tensor_quantize_config/activation/calib_statistic_method", "calib_statistic_method 'max'",
     "most frequent", "'modal'"),
    ({"tensor_quantize_config": {"input": {"calib_statistic_method": "median"}}},
     "/tensor_quantize_config/input/calib_statistic_method", "'median'", "most frequent",
     "'modal'"),
    ({"tensor_quantize_config": {"activation": {"bit_width": 16}}},
     "/tensor_quantize_config/activation/bit_width", "bias bit_width 8", "same bit width",
     "bias bit_width 16"),
    ({"layer_quantize_config": [{"layer_type": "Conv2d", "tensor_quantize_config": {
        "weights": {"per_channel": True}}}]},
     "/layer_quantize_config/0/tensor_quantize_config/weights/per_channel",
     "layer_quantize_config[0] (layer_type Conv2d), weights", "one fix position", "CPU"),
]


@pytest.mark.parametrize("data, pointer, value, reason, allowed", DPU_ERRORS)
def test_dpu_rules(write, data, pointer, value, reason, allowed):
    path = write(data)
    msg = err(path)
    for part in (path, f"at {pointer}", value, reason, allowed):
        assert part in msg, (part, msg)


def test_dpu_default_statistic_for_weights_is_free():
    c = parse_config({"tensor_quantize_config": {"weights": {"calib_statistic_method": "max"}}})
    assert c.spec(W).calib_statistic_method is StatMethod.MAX
    assert any("no effect on weights" in w for w in c.warnings)


def test_dpu_honours_every_method():
    for m in ("diffs", "maxmin", "percentile", "entropy", "mse"):
        assert parse_config({"overall_quantize_config": {"method": m}}).spec(A).method.value == m


def _cpu(over=None, **tensor):
    data = json.loads(json.dumps(CPU_FLOAT))
    data["overall_quantize_config"].update(over or {})
    if tensor:
        data["tensor_quantize_config"] = tensor
    return data


CPU_ERRORS = [
    (_cpu(activation={"per_channel": True}), "/tensor_quantize_config/activation/per_channel",
     "per_channel true", "only weights", "per_channel false"),
    (_cpu(weights={"per_channel": True, "method": "entropy"}),
     "/tensor_quantize_config/weights/method", "method 'entropy'", "per-channel",
     "method 'maxmin'"),
    (_cpu({"method": "diffs"}), "/overall_quantize_config/method", "method 'diffs'",
     "power-of-two fix positions", "'maxmin', 'percentile', 'mse' or 'entropy'"),
    ({"target_device": "GPU", "overall_quantize_config": {"scale_type": "float",
                                                         "calib_statistic_method": "max"}},
     "/overall_quantize_config/scale_type", "method 'diffs' (default)",
     "power-of-two fix positions", "'maxmin', 'percentile'"),
    ({"target_device": "CPU", "overall_quantize_config": {"scale_type": "float",
                                                         "method": "maxmin"}},
     "/overall_quantize_config/scale_type", "calib_statistic_method 'modal' (default)",
     "most frequent", "'max', 'mean' or 'median'"),
    (_cpu({"symmetry": False, "method": "percentile"}), "/overall_quantize_config/symmetry",
     "symmetry false", "symmetric range", "method 'maxmin'"),
    ({"target_device": "CPU", "overall_quantize_config": {"symmetry": False}},
     "/overall_quantize_config/symmetry", "scale_type 'poweroftwo' (default)", "no zero point",
     "scale_type 'float'"),
    ({"target_device": "CPU", "tensor_quantize_config": {"activation": {
        "calib_statistic_method": "mean"}}},
     "/tensor_quantize_config/activation/calib_statistic_method", "'mean'", "most frequent",
     "'modal'"),
]


@pytest.mark.parametrize("data, pointer, value, reason, allowed", CPU_ERRORS)
def test_cpu_gpu_rules(write, data, pointer, value, reason, allowed):
    path = write(data)
    msg = err(path)
    for part in (path, f"at {pointer}", value, reason, allowed):
        assert part in msg, (part, msg)


def test_cpu_allows_what_the_dpu_cannot():
    c = parse_config(_cpu({"narrow_range": True}, weights={"per_channel": True},
                          activation={"symmetry": False, "signed": False}))
    assert c.spec(W).per_channel and c.spec(W).narrow_range and not c.spec(A).symmetry


# ------------------------------------------------------------------ DPU rounding: hardware wins

def test_dpu_round_mode_warns_once_per_path_and_uses_the_hardware(write, caplog):
    path = write({"overall_quantize_config": {"round_mode": "half_even"},
                  "layer_quantize_config": [{"layer_type": "Conv2d", "tensor_quantize_config": {
                      "activation": {"round_mode": "std_round"}}}]})
    with caplog.at_level(logging.WARNING, logger="nndct_lite.config"):
        c = load_config(path)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2
    assert "at /overall_quantize_config/round_mode" in msgs[0] and "'half_even'" in msgs[0]
    assert "'std_round' for weights, bias" in msgs[0] and "'half_up' for input, activation" in msgs[0]
    assert "/layer_quantize_config/0/tensor_quantize_config/activation/round_mode" in msgs[1]
    assert c.spec(A).round_mode is RoundMode.HALF_UP and c.spec(W).round_mode is RoundMode.STD_ROUND
    assert c.global_specs[A].sources["round_mode"] == "DPU hardware rule"
    assert c.layer_rules[0].specs[A].spec.round_mode is RoundMode.HALF_UP


def test_dpu_round_mode_matching_the_hardware_is_silent():
    c = parse_config({"tensor_quantize_config": {"weights": {"round_mode": "std_round"},
                                                 "activation": {"round_mode": "half_up"}}})
    assert c.warnings == ()


def test_cpu_round_mode_is_honoured():
    c = parse_config(_cpu({"round_mode": "half_down"}))
    assert {c.spec(k).round_mode for k in ALL} == {RoundMode.HALF_DOWN}


# ------------------------------------------------------------------ other warnings

def test_unused_percentage_warns():
    c = parse_config({"overall_quantize_config": {"percentage": 99.9}})
    assert any("/overall_quantize_config/percentage" in w and "no effect" in w for w in c.warnings)
    c = parse_config({"overall_quantize_config": {"percentage": 99.9},
                      "tensor_quantize_config": {"activation": {"method": "percentile"}}})
    assert c.warnings == () and c.spec(A).percentage == 99.9


def test_duplicate_rules_warn_and_last_wins():
    c = parse_config({"layer_quantize_config": [
        {"layer_type": "torch.nn.Conv2d", "overall_quantize_config": {"bit_width": 4}},
        {"layer_type": "Conv2d", "quantizable_data_type": ["weights"],
         "overall_quantize_config": {"bit_width": 6}}]})
    assert any("layer_quantize_config[0]" in w and "overridden for weights" in w
               and "last rule wins" in w for w in c.warnings)


def test_layer_rule_starts_from_resolved_global():
    c = parse_config(_cpu({"bit_width": 6}, weights={"method": "mse"}, activation={
        "method": "percentile", "percentage": 99.5}), source=None)
    assert c.warnings == ()
    c = parse_config({**_cpu({"bit_width": 6}, activation={"method": "percentile",
                                                           "percentage": 99.5}),
                      "layer_quantize_config": [{"layer_type": "Linear",
                                                 "overall_quantize_config": {"bit_width": 12}}]})
    rule = c.layer_rules[0].specs[A].spec
    assert (rule.bit_width, rule.method, rule.percentage) == (12, CalibMethod.PERCENTILE, 99.5)


def test_relu6_replacement_follows_cle_and_warns_on_explicit_false():
    c = parse_config({"convert_relu6_to_relu": False})
    assert c.effective_relu6_to_relu
    assert any("/convert_relu6_to_relu" in w and "include_cle" in w for w in c.warnings)
    c = parse_config({"include_cle": False, "convert_relu6_to_relu": False})
    assert not c.effective_relu6_to_relu and c.warnings == ()
    assert parse_config({"include_cle": False, "convert_relu6_to_relu": True}).effective_relu6_to_relu


def test_unlisted_top_level_kind_is_still_quantized_and_the_warning_says_how_to_stop_it():
    c = parse_config({"quantizable_data_type": ["weights", "bias"]})
    assert c.spec(A).is_int and c.spec(I).is_int
    [w] = c.warnings
    assert "input, activation not listed" in w and "still quantized" in w
    assert 'tensor_quantize_config.<kind>.datatype to "float32"' in w
    c = parse_config({"quantizable_data_type": ["weights", "bias"], "tensor_quantize_config": {
        "activation": {"datatype": "float32"}, "input": {"datatype": "float32"}}})
    assert c.warnings == () and c.spec(A).datatype is DataType.FLOAT32
