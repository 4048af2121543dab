"""resolve: the precedence table, groups, the model input, rule matching, the plan object."""
from __future__ import annotations

import json
import logging

import pytest

from config_helpers import EXAMPLE, LINEAR, resnet20_nodes
from nndct_lite.config import (NodeInfo, RoundMode, ScaleType, TensorKind, load_config,
                               parse_config, resolve, type_matches)
from nndct_lite.errors import ConfigError

W, B, A, I = TensorKind.WEIGHTS, TensorKind.BIAS, TensorKind.ACTIVATION, TensorKind.INPUT
TOP = "CifarResNet::CifarResNet"
CONV1 = f"{TOP}/Conv2d[conv1]/ret.1"
RELU1 = f"{TOP}/ret.2"
B0 = f"{TOP}/Sequential[layer1]/_Block[0]"
B0_CONV1, B0_RELU1, B0_CONV2 = f"{B0}/Conv2d[conv1]/ret.3", f"{B0}/ret.4", f"{B0}/Conv2d[conv2]/ret.5"
B0_ADD, B0_RELU2 = f"{B0}/ret.6", f"{B0}/ret.7"
INPUT = "CifarResNet::input_0"


def plan_of(data, nodes=None):
    return resolve(parse_config(data, source="cfg.json"), nodes or resnet20_nodes())


def rule(sel, kinds=None, **tensor):
    key = "layer_name" if "::" in sel else "layer_type"
    entry = {key: sel}
    if kinds:
        entry["quantizable_data_type"] = kinds
    over = tensor.pop("overall", None)
    if over:
        entry["overall_quantize_config"] = over
    if tensor:
        entry["tensor_quantize_config"] = tensor
    return entry


NAME_LABEL = f"layer_quantize_config[{{}}] (layer_name {B0_CONV1})"

# (config, node, kind, expected bit width, expected source of bit_width)
PRECEDENCE = [
    ({}, B0_CONV1, W, 8, "default"),
    ({"overall_quantize_config": {"bit_width": 7}}, B0_CONV1, W, 7, "overall_quantize_config"),
    ({"overall_quantize_config": {"bit_width": 7},
      "tensor_quantize_config": {"weights": {"bit_width": 5}}}, B0_CONV1, W, 5,
     "tensor_quantize_config.weights"),
    ({"tensor_quantize_config": {"weights": {"bit_width": 5}},
      "layer_quantize_config": [rule("torch.nn.Conv2d", weights={"bit_width": 6})]},
     B0_CONV1, W, 6, "layer_quantize_config[0] (layer_type torch.nn.Conv2d)"),
    ({"layer_quantize_config": [rule("Conv2d", weights={"bit_width": 6}),
                                rule(B0_CONV1, weights={"bit_width": 4})]},
     B0_CONV1, W, 4, NAME_LABEL.format(1)),
    # file order does not matter between levels: the name rule still wins
    ({"layer_quantize_config": [rule(B0_CONV1, weights={"bit_width": 4}),
                                rule("Conv2d", weights={"bit_width": 6})]},
     B0_CONV1, W, 4, NAME_LABEL.format(0)),
    ({"layer_quantize_config": [rule(B0_CONV1, weights={"bit_width": 4}),
                                rule("Conv2d", weights={"bit_width": 6})]},
     CONV1, W, 6, "layer_quantize_config[1] (layer_type Conv2d)"),
    # a rule only changes the kinds it lists
    ({"layer_quantize_config": [rule("Conv2d", ["bias"], overall={"bit_width": 8},
                                     bias={"bit_width": 8})]}, B0_CONV1, W, 8, "default"),
    ({"layer_quantize_config": [rule("Conv2d", ["weights"], overall={"bit_width": 3})]},
     B0_CONV1, B, 8, "default"),
    # same level: the last matching rule wins
    ({"layer_quantize_config": [rule("Conv2d", weights={"bit_width": 6}),
                                rule("torch.nn.Conv2d", weights={"bit_width": 5})]},
     B0_CONV1, W, 5, "layer_quantize_config[1] (layer_type torch.nn.Conv2d)"),
    # a rule starts from the resolved global spec (inherits tensor_quantize_config.weights)
    ({"tensor_quantize_config": {"weights": {"bit_width": 5}},
      "layer_quantize_config": [rule("Conv2d", weights={"method": "maxmin"})]},
     B0_CONV1, W, 5, "tensor_quantize_config.weights"),
    # rules do not stack: a name rule starts from global, not from the type rule
    ({"layer_quantize_config": [rule("Conv2d", weights={"bit_width": 6}),
                                rule(B0_CONV1, weights={"method": "maxmin"})]},
     B0_CONV1, W, 8, "default"),
]


@pytest.mark.parametrize("data, node, kind, bits, source", PRECEDENCE)
def test_precedence_table(data, node, kind, bits, source):
    r = plan_of(data).specs(node)[kind]
    assert (r.spec.bit_width, r.sources["bit_width"]) == (bits, source)


CPU = {"target_device": "CPU"}  # power-of-two CPU: no bias == activation rule, rounding free


def test_rule_on_conv_changes_the_relu_output_of_its_group():
    p = plan_of({**CPU, "layer_quantize_config": [rule(B0_CONV1, ["activation"],
                                                       activation={"bit_width": 16})]})
    assert p.specs(B0_RELU1)[A].spec.bit_width == 16
    assert p.specs(RELU1)[A].spec.bit_width == 8
    assert A not in p.specs(B0_CONV1)


def test_group_name_match_beats_type_match():
    p = plan_of({**CPU, "layer_quantize_config": [
        rule("relu", ["activation"], activation={"bit_width": 12}),
        rule(B0_CONV1, ["activation"], activation={"bit_width": 16})]})
    assert p.specs(B0_RELU1)[A].spec.bit_width == 16
    assert p.specs(RELU1)[A].spec.bit_width == 12


def test_two_activation_specs_in_one_group_are_an_error():
    with pytest.raises(ConfigError) as info:
        plan_of({**CPU, "layer_quantize_config": [
            rule(B0_ADD, ["activation"], activation={"bit_width": 12}),
            rule(B0_RELU2, ["activation"], activation={"bit_width": 16})]})
    msg = str(info.value)
    assert B0_ADD in msg and B0_RELU2 in msg and "one quantization group" in msg
    assert "cfg.json, at /layer_quantize_config/1" in msg


def test_equal_activation_specs_in_one_group_are_fine():
    p = plan_of({**CPU, "layer_quantize_config": [
        rule("add", ["activation"], activation={"bit_width": 12}),
        rule("relu", ["activation"], activation={"bit_width": 12})]})
    assert p.specs(B0_RELU2)[A].spec.bit_width == 12


def test_model_input_uses_the_activation_settings():
    p = plan_of({**CPU, "tensor_quantize_config": {"activation": {"bit_width": 6}}})
    s = p.specs(INPUT)[I]
    assert s.spec.bit_width == 6 and s.sources["bit_width"] == "tensor_quantize_config.activation"
    assert s.spec.round_mode is RoundMode.HALF_UP  # the activation default, not input's std_round


def test_input_specific_fields_override_on_the_model_input():
    p = plan_of({**CPU, "tensor_quantize_config": {"activation": {"bit_width": 6},
                                                   "input": {"bit_width": 10}}})
    s = p.specs(INPUT)[I]
    assert s.spec.bit_width == 10 and s.sources["bit_width"] == "tensor_quantize_config.input"
    assert s.spec.round_mode is RoundMode.HALF_UP


def test_model_input_on_the_dpu_rounds_half_up():
    s = plan_of({}).specs(INPUT)[I]
    assert s.spec.round_mode is RoundMode.HALF_UP


def test_model_input_declared_as_activation_carrier():
    nodes = resnet20_nodes(input_kinds=frozenset({A}))
    p = plan_of({**CPU, "layer_quantize_config": [rule("input", ["activation"],
                                                       activation={"bit_width": 10})]}, nodes)
    assert p.specs(INPUT)[A].spec.bit_width == 10


def test_unknown_layer_name_lists_the_five_closest_names():
    with pytest.raises(ConfigError) as info:
        plan_of({"layer_quantize_config": [rule(f"{B0}/Conv2d[conv9]/ret.3")]})
    msg = str(info.value)
    assert "matches no node" in msg and "cfg.json, at /layer_quantize_config/0/layer_name" in msg
    closest = msg.split("closest node names: ")[1].split("; ")
    assert len(closest) == 5 and closest[0] == B0_CONV1
    assert "quantize_result/<Model>.py" in msg


def test_layer_name_as_printed_with_its_normalised_suffix_is_accepted():
    p = plan_of({"layer_quantize_config": [rule(f"{CONV1}(CifarResNet::nndct_conv2d_1)")]})
    assert p.rule_matches[0] == (CONV1,)


def test_layer_name_with_the_originals_numbering_matches_by_module_path(caplog):
    """vai_q_pytorch numbers ResNet-20's first conv ret.3, we number it ret.1: the module path
    names one node, so the rule applies to it, with an INFO line."""
    with caplog.at_level(logging.INFO, logger="nndct_lite.config"):
        p = plan_of({"layer_quantize_config": [rule(f"{TOP}/Conv2d[conv1]/ret.3")]})
    assert p.rule_matches[0] == (CONV1,)
    assert any("is taken as" in r.getMessage() and CONV1 in r.getMessage()
               for r in caplog.records if r.levelno == logging.INFO)


def test_layer_name_whose_module_path_holds_several_nodes_lists_them():
    block = [n.name for n in resnet20_nodes() if n.name.rpartition("/")[0] == B0]
    assert len(block) >= 2                  # the block's add and relu are functional ops
    with pytest.raises(ConfigError, match="holds") as info:
        plan_of({"layer_quantize_config": [rule(f"{B0}/ret.999")]})
    assert all(n in str(info.value) for n in block)


def test_unmatched_layer_type_is_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="nndct_lite.config"):
        p = plan_of({"layer_quantize_config": [rule("torch.nn.Conv3d")]})
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "no 'Conv3d' layer" in msgs[0] and "Conv2d" in msgs[0]
    assert p.rule_matches[0] == ()


def test_rule_with_no_effect_warns():
    p = plan_of({"layer_quantize_config": [rule("relu", ["weights"],
                                                overall={"bit_width": 4})]})
    assert any("sets nothing for weights" in w for w in p.warnings)


@pytest.mark.parametrize("rule_type, node_type, hit", [
    ("torch.nn.Conv2d", "Conv2d", True), ("Conv2d", "Conv2d", True),
    ("BatchNorm", "BatchNorm2d", True), ("BatchNorm", "BatchNorm1d", True),
    ("BatchNorm2d", "BatchNorm1d", False), ("torch.add", "add", True), ("add", "add_", True),
    ("cat", "concat", True), ("Conv2d", "ConvTranspose2d", False), ("conv2d", "Conv2d", False),
    ("torch.nn.Linear", "torch.nn.modules.linear.Linear", True),
])
def test_type_matching(rule_type, node_type, hit):
    assert type_matches(rule_type, node_type) is hit


def test_conv2d_rule_covers_depthwise_convs_too():
    nodes = [NodeInfo("M::M/Conv2d[dw]/ret.0", "Conv2d", frozenset({W})),
             NodeInfo("M::M/Conv2d[pw]/ret.1", "Conv2d", frozenset({W}))]
    p = plan_of({"layer_quantize_config": [rule("Conv2d", ["weights"], weights={"bit_width": 4})]},
                nodes)
    assert {p.specs(n.name)[W].spec.bit_width for n in nodes} == {4}


def test_float_nodes_are_reported():
    nodes = resnet20_nodes()
    nodes[1] = NodeInfo(CONV1, "Conv2d", frozenset(), RELU1, float_reason="keep_first_last")
    p = resolve(parse_config({"keep_first_last_layer_accuracy": True,
                              "layer_quantize_config": [rule(CONV1, ["weights"])]}), nodes)
    assert p.float_reason(CONV1) == "keep_first_last" and p.specs(CONV1) == {}
    assert p.float_reason(B0_CONV1) is None
    assert any("stay float" in w for w in p.warnings)


def test_plan_api():
    nodes = resnet20_nodes()
    p = plan_of({}, nodes)
    assert list(p) == [n.name for n in nodes] and len(p) == len(nodes) and CONV1 in p
    assert set(p.specs(B0_CONV2)) == {W, B, A} and set(p.specs(B0_ADD)) == set()
    p.specs(CONV1).clear()
    assert p.specs(CONV1)  # a copy each time
    with pytest.raises(KeyError, match="closest"):
        p.specs("CifarResNet::nope")
    json.dumps(p.to_json_dict())


def test_bad_node_lists():
    with pytest.raises(ValueError, match="duplicate"):
        resolve(parse_config({}), [NodeInfo("a", "relu"), NodeInfo("a", "relu")])
    with pytest.raises(ValueError, match="not a node"):
        resolve(parse_config({}), [NodeInfo("a", "relu", group="zzz")])


def test_example_file_resolves_for_resnet20(caplog):
    with caplog.at_level(logging.WARNING, logger="nndct_lite.config"):
        config = load_config(EXAMPLE)
        p = resolve(config, resnet20_nodes())
    assert not caplog.records
    lin = p.specs(LINEAR)
    assert {lin[k].spec.bit_width for k in (W, B, A)} == {16}
    assert lin[W].spec.method.value == "maxmin" and not lin[W].spec.per_channel
    conv = p.specs(B0_CONV1)[W].spec
    assert conv.per_channel and conv.scale_type is ScaleType.FLOAT and conv.method.value == "maxmin"
    assert p.specs(B0_RELU1)[A].spec.method.value == "entropy"


def test_example_file_with_another_model_names_the_missing_layer():
    nodes = [n for n in resnet20_nodes() if n.name != LINEAR]
    with pytest.raises(ConfigError, match="matches no node"):
        resolve(load_config(EXAMPLE), nodes)


def test_docs_worked_example():
    p = plan_of({"tensor_quantize_config": {"weights": {"bit_width": 6}},
                 "layer_quantize_config": [
                     rule("torch.nn.Conv2d", ["weights"], weights={"method": "maxmin"}),
                     rule(B0_CONV1, ["weights"], overall={"bit_width": 4})]})
    other, named = p.specs(CONV1)[W].spec, p.specs(B0_CONV1)[W].spec
    assert (other.bit_width, other.method.value) == (6, "maxmin")
    assert (named.bit_width, named.method.value) == (4, "diffs")
    assert p.specs(B0_RELU1)[A].spec == parse_config({}).spec(A)


def test_model_input_with_input_and_activation_kinds_gets_one_spec():
    nodes = resnet20_nodes(input_kinds=frozenset({I, A}))
    p = plan_of({**CPU, "tensor_quantize_config": {"input": {"bit_width": 10}}}, nodes)
    assert p.specs(INPUT)[A] == p.specs(INPUT)[I] and p.specs(INPUT)[A].spec.bit_width == 10


def test_input_settings_without_an_input_node_warn():
    nodes = resnet20_nodes(input_kinds=frozenset({A}))
    p = plan_of({**CPU, "tensor_quantize_config": {"input": {"bit_width": 10}}}, nodes)
    assert any("/tensor_quantize_config/input" in w and "no effect" in w for w in p.warnings)
    assert plan_of({**CPU}, nodes).warnings == ()


def test_dpu_bias_and_output_bit_width_must_match_per_layer():
    with pytest.raises(ConfigError) as info:
        plan_of({"layer_quantize_config": [rule("relu", ["activation"],
                                                activation={"bit_width": 16})]})
    msg = str(info.value)
    assert CONV1 in msg and RELU1 in msg and "bias bit_width 8" in msg and "bit_width 16" in msg
    assert "cfg.json, at /layer_quantize_config/0" in msg and "list both 'bias' and 'activation'" in msg
    with pytest.raises(ConfigError, match="at /layer_quantize_config/0"):
        plan_of({"layer_quantize_config": [rule(B0_CONV1, ["activation"],
                                                overall={"bit_width": 16})]})
    p = plan_of({"layer_quantize_config": [rule("Conv2d", ["bias", "activation"],
                                                overall={"bit_width": 16})]})
    assert p.specs(B0_RELU1)[A].spec.bit_width == p.specs(B0_CONV1)[B].spec.bit_width == 16
    assert p.warnings == ()
    # on CPU/GPU the widths are free
    plan_of({**CPU, "layer_quantize_config": [rule("relu", ["activation"],
                                                   activation={"bit_width": 16})]})


def test_rule_without_quantizable_data_type_does_not_warn_about_missing_kinds():
    p = plan_of({"layer_quantize_config": [rule(B0_CONV1, weights={"bit_width": 4})]})
    assert p.warnings == ()
