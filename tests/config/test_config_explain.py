"""explain / write_resolved_config / format_explain."""
from __future__ import annotations

import json
import os

import pytest

from config_helpers import EXAMPLE, LINEAR, resnet20_nodes
from nndct_lite.config import (explain, format_explain, load_config, parse_config, resolve,
                               write_resolved_config)

TOP = "CifarResNet::CifarResNet"
CONV = f"{TOP}/Sequential[layer1]/_Block[0]/Conv2d[conv1]/ret.3"


@pytest.fixture
def resolved():
    config = load_config(EXAMPLE)
    return config, resolve(config, resnet20_nodes())


def test_explain_names_every_field_and_its_source(resolved):
    config, plan = resolved
    d = explain(config, plan)
    assert d["version"] == 1 and d["config_file"] == str(EXAMPLE)
    assert d["switches"]["target_device"] == {"value": "CPU", "source": "file"}
    assert d["switches"]["include_cle"] == {"value": False, "source": "file"}
    assert d["switches"]["keep_add_layer_accuracy"] == {"value": False, "source": "default"}
    assert d["global"]["weights"]["method"] == {"value": "maxmin",
                                                "source": "tensor_quantize_config.weights"}
    nodes = {n["name"]: n for n in d["nodes"]}
    assert [n["name"] for n in d["nodes"]] == list(plan)
    conv = nodes[CONV]
    assert conv["weights"]["per_channel"] == {
        "value": True, "source": "layer_quantize_config[0] (layer_type torch.nn.Conv2d)"}
    assert conv["output"] == {"quantized_by": f"{TOP}/Sequential[layer1]/_Block[0]/ret.4"}
    assert nodes["CifarResNet::input_0"]["input"]["method"]["value"] == "entropy"
    assert nodes[LINEAR]["output"]["bit_width"]["value"] == 16
    assert d["layer_rules"][1]["matched_nodes"] == [LINEAR]
    json.dumps(d, allow_nan=False)


def test_explain_without_plan():
    d = explain(parse_config({}, source=None))
    assert "nodes" not in d and d["config_file"] is None
    assert d["global"]["activation"]["round_mode"] == {"value": "half_up", "source": "default"}
    assert d["switches"]["convert_relu6_to_relu"]["effective"] is True


def test_write_is_deterministic_atomic_and_sorted(resolved, tmp_path):
    config, plan = resolved
    out = tmp_path / "quantize_result"
    out.mkdir()
    p1 = write_resolved_config(out, config, plan)
    first = p1.read_bytes()
    p2 = write_resolved_config(out / "resolved_config.json", config, resolve(
        load_config(EXAMPLE), resnet20_nodes()))
    assert p1 == p2 == out / "resolved_config.json" and p2.read_bytes() == first
    assert os.listdir(out) == ["resolved_config.json"]  # no temp file left
    text = first.decode("utf-8")
    assert text.endswith("}\n") and text.startswith('{\n  "config_file"')
    assert json.loads(text) == json.loads(json.dumps(explain(config, plan)))


def test_write_creates_the_folder(tmp_path):
    p = write_resolved_config(tmp_path / "a" / "b" / "r.json", parse_config({}), None)
    assert p.exists()


def test_failed_write_leaves_the_old_file(resolved, tmp_path, monkeypatch):
    config, plan = resolved
    target = tmp_path / "resolved_config.json"
    target.write_text("old\n")

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    from nndct_lite import OutputError
    with pytest.raises(OutputError, match="disk full"):
        write_resolved_config(target, config, plan)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["resolved_config.json"]


def test_format_explain_is_a_table(resolved):
    config, plan = resolved
    text = format_explain(config, plan)
    assert "target_device: CPU (file)" in text and "global settings:" in text
    line = next(line for line in text.splitlines() if line.startswith(LINEAR) and " output " in line)
    assert " 16 " in line and "layer_quantize_config[1]" in line
    assert "layer rules:" in text
    assert format_explain(parse_config({"overall_quantize_config": {"percentage": 99.9}}))\
        .rstrip().splitlines()[-1].startswith("- ")
