"""Smoke test of bench/bench_qat.py (issue 23's QAT evidence): ``--quick`` runs every row on
synthetic data (random weights and images, no ../shared needed) and writes the table; no
accuracy or timing is asserted, only that every row and export is there."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_bench_qat_quick(tmp_path):
    before = torch.get_num_threads()
    try:
        mod = _load("bench_qat")
        out, doc = tmp_path / "r.json", tmp_path / "r.md"
        assert mod.main(["--quick", "--models", "resnet20", "--json", str(out),
                         "--doc", str(doc)]) == 0
    finally:
        torch.set_num_threads(before)
    (r,) = json.loads(out.read_text())["results"]
    for key in ("float_top1", "ptq_top1", "ft_top1", "float_epoch_s"):
        assert 0 <= r[key] <= 100 or key == "float_epoch_s"
    assert r["qat"]["deployed_equals_trained"] is True
    assert r["qat"]["exports"] == {"onnx": "ok", "torchscript": "ok"}
    assert "error" not in r["ao"] and 0 <= r["ao"]["top1"] <= 100
    text = doc.read_text()
    assert "our QAT (LSQ)" in text and "torch.ao QAT" in text and "Floor" in text
