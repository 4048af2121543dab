"""Fixtures of the config tests."""
from __future__ import annotations

import json

import pytest

from config_helpers import EXAMPLE, resnet20_nodes
from nndct_lite.config import NodeInfo


@pytest.fixture
def nodes() -> list[NodeInfo]:
    return resnet20_nodes()


@pytest.fixture
def write(tmp_path):
    """write(dict_or_text, name=...) -> path of a config file in tmp_path."""
    def _write(content, name="cfg.json"):
        p = tmp_path / name
        p.write_text(content if isinstance(content, str) else json.dumps(content, indent=2),
                     encoding="utf-8")
        return str(p)
    return _write


@pytest.fixture
def example() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))
