"""Issue 22: every file of one run carries the same run id, and a folder that mixes two runs is
an error where it is read (test mode, ``nndct-lite report``)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from tiny_nets import Net

from nndct_lite import QuantInfoError, torch_quantizer

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))




def _calib(folder, cfg=None):
    torch.manual_seed(0)
    model = Net().eval()
    q = torch_quantizer("calib", model, (X,), output_dir=str(folder), quant_config_file=cfg)
    q.quant_model(X)
    q.export_quant_config()
    return model


def _ids(folder):
    return {name: json.loads((folder / name).read_text())["run_id"]
            for name in ("quant_info.json", "resolved_config.json", "report.json")}


@pytest.fixture
def cfg16(tmp_path):
    p = tmp_path / "c16.json"
    p.write_text(json.dumps({"overall_quantize_config": {"bit_width": 16}}))
    return str(p)


def test_every_file_of_a_run_has_its_id_and_the_id_is_reproducible(tmp_path, cfg16):
    _calib(tmp_path / "a")
    _calib(tmp_path / "b")
    _calib(tmp_path / "c", cfg16)
    a, b, c = _ids(tmp_path / "a"), _ids(tmp_path / "b"), _ids(tmp_path / "c")
    assert len(set(a.values())) == 1 and len(next(iter(a.values()))) == 16
    assert a == b                          # same model and config: same id (byte-identical files)
    assert set(a.values()) != set(c.values())


def test_killed_run_leaves_a_folder_test_mode_refuses_with_the_other_config(tmp_path, cfg16):
    """Run A (8 bit) completes; run B (16 bit) is stopped after writing resolved_config.json.
    Test mode with B's config must not use A's quant_info.json."""
    folder = tmp_path / "r"
    model = _calib(folder)
    torch_quantizer("calib", model, (X,), output_dir=str(folder), quant_config_file=cfg16)
    assert json.loads((folder / "resolved_config.json").read_text())["run_id"] != \
        json.loads((folder / "quant_info.json").read_text())["run_id"]
    with pytest.raises(QuantInfoError, match="bit_width 8 -> 16"):
        torch_quantizer("test", model, (X,), output_dir=str(folder), quant_config_file=cfg16)
    torch_quantizer("test", model, (X,), output_dir=str(folder))     # A's own config: fine
    assert len(set(_ids(folder).values())) == 1


def test_report_of_another_run_is_refused_by_the_cli(tmp_path, cfg16):
    _calib(tmp_path / "a")
    _calib(tmp_path / "b", cfg16)
    shutil.copy(tmp_path / "a" / "report.json", tmp_path / "b" / "report.json")
    run = subprocess.run([sys.executable, "-m", "nndct_lite", "report", str(tmp_path / "b")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "mixes two runs" in run.stderr and "Traceback" not in run.stderr
    ok = subprocess.run([sys.executable, "-m", "nndct_lite", "report", str(tmp_path / "a")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
