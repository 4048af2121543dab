"""Where ../shared lives (beside the repository); tests that need it skip when it is absent."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
GOLDEN = SHARED / "reference" / "golden" / "resnet20"
XIR = SHARED / "xir"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is not part of a user's clone)")
    return path


def golden_model_module():
    """The exact ResNet-20 + data pipeline module of the golden files."""
    need(GOLDEN / "model.py")
    need(DATA / "weights" / "resnet20-12fca82f.th")
    spec = importlib.util.spec_from_file_location("golden_resnet20_model", GOLDEN / "model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
