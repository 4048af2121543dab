"""schema.json: valid, strict, described, and in sync with the dataclasses and the docs."""
from __future__ import annotations

import json
import re
from dataclasses import fields

import jsonschema
import pytest

from config_helpers import EXAMPLE, ROOT
from nndct_lite.config import (CalibMethod, QuantSpec, RoundMode, ScaleType, StatMethod,
                               TargetDevice, TensorKind, config_schema)
from nndct_lite.config.spec import SWITCH_KEYS

SCHEMA = config_schema()
PARAMS = SCHEMA["$defs"]["quant_params"]["properties"]


def _objects(node, path="#"):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for k, v in node.items():
            yield from _objects(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, f"{path}/{i}")


def test_schema_is_valid():
    jsonschema.validators.validator_for(SCHEMA).check_schema(SCHEMA)


def test_every_object_is_closed_and_every_key_described():
    found = list(_objects(SCHEMA))
    assert len(found) >= 4
    for path, obj in found:
        assert obj.get("additionalProperties") is False, path
        assert obj.get("description"), path
        for key, sub in obj.get("properties", {}).items():
            assert sub.get("description"), f"{path}/properties/{key}"


def test_defaults_match_the_dataclasses():
    spec = QuantSpec()
    for f in fields(QuantSpec):
        default = getattr(spec, f.name)
        assert PARAMS[f.name]["default"] == getattr(default, "value", default), f.name
    assert PARAMS["datatype"]["default"] == "int"
    for key, default in SWITCH_KEYS.items():
        assert SCHEMA["properties"][key]["default"] is default, key
    assert SCHEMA["properties"]["target_device"]["default"] == TargetDevice.DPU.value
    assert set(PARAMS) == {f.name for f in fields(QuantSpec)} | {"datatype"}


@pytest.mark.parametrize("key, enum", [("method", CalibMethod), ("scale_type", ScaleType),
                                       ("calib_statistic_method", StatMethod)])
def test_enums_match_the_python_enums(key, enum):
    assert set(PARAMS[key]["enum"]) == {e.value for e in enum}


def test_other_enums():
    assert set(PARAMS["round_mode"]["enum"]) <= {r.value for r in RoundMode}
    assert set(SCHEMA["properties"]["target_device"]["enum"]) == {t.value for t in TargetDevice}
    assert set(SCHEMA["$defs"]["kinds"]["items"]["enum"]) == {k.value for k in TensorKind}


def test_example_is_valid_against_the_plain_schema():
    jsonschema.validate(json.loads(EXAMPLE.read_text(encoding="utf-8")), SCHEMA)


def test_docs_cover_every_key():
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    keys = set(SCHEMA["properties"]) | set(PARAMS)
    keys |= set(SCHEMA["$defs"]["layer_rule"]["properties"])
    missing = [k for k in sorted(keys) if not re.search(rf"`{k}`", text)]
    assert not missing, missing
    diff = (ROOT / "docs" / "differences.md").read_text(encoding="utf-8")
    for word in ("power_of_two", "percentage", "quantizable_data_type", "layer_name",
                 "keep_first_last_layer_accuracy", "round_mode"):
        assert word in diff, word
