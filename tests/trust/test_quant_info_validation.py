"""Issue 22: every field of quant_info.json is validated on read; a bad value is a QuantInfoError
naming the file and the JSON path or node, never a raw exception or a silently wrong model."""
from __future__ import annotations

import json
import os

import pytest
import torch

from tiny_nets import Net

from nndct_lite import QuantInfoError, torch_quantizer

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
CPU = {"target_device": "CPU", "include_cle": False, "include_bias_corr": False,
       "overall_quantize_config": {"method": "maxmin", "scale_type": "float",
                                   "calib_statistic_method": "max"},
       "tensor_quantize_config": {"weights": {"per_channel": True}}}




@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = {}
    for name, cfg in (("cpu", CPU), ("dpu", None)):
        d = tmp_path_factory.mktemp(name)
        path = None
        if cfg is not None:
            path = d / "cfg.json"
            path.write_text(json.dumps(cfg))
        torch.manual_seed(0)
        model = Net().eval()
        q = torch_quantizer("calib", model, (X,), output_dir=str(d / "r"),
                            quant_config_file=path and str(path))
        q.quant_model(X)
        q.export_quant_config()
        out[name] = (model, d / "r", path and str(path),
                     json.loads((d / "r" / "quant_info.json").read_text()))
    return out


def _first(doc, section, per_channel=None):
    for key, [entry] in doc[section].items():
        if per_channel is None or isinstance(entry[1], list) == per_channel:
            return key, entry
    raise AssertionError("no such entry")


def _tamper_scale(value):
    def f(doc):
        _first(doc, "output")[1][1] = value
    return f


def _set(key, value):
    def f(doc):
        doc[key] = value
    return f


def _zp(doc):
    _first(doc, "output")[1][2] = 300


def _short_channels(doc):
    entry = _first(doc, "param", per_channel=True)[1]
    entry[1], entry[2], entry[3] = entry[1][:-1], entry[2][:-1], entry[3][:-1]


def _string_channels(doc):
    entry = _first(doc, "param", per_channel=True)[1]
    entry[1] = ["0.1"] * len(entry[1])


def _version_trick(doc):
    doc["version"] = "3.5.0"
    doc["graph_md5"] = "0" * 32


CASES = {   # name: (which calibration, tamper, text of the message)
    "nan scale": ("cpu", _tamper_scale(float("nan")), "scale must be a finite number"),
    "negative scale": ("cpu", _tamper_scale(-0.5), "scale must be a finite number >= 0"),
    "zero scale with a range": ("cpu", _tamper_scale(0.0), "only an all-zero range has scale 0"),
    "string scale": ("cpu", _tamper_scale("0.1"), "scale must be a finite number"),
    "zero point outside the range": ("cpu", _zp, "zero point 300"),
    "per-channel list too short": ("cpu", _short_channels, "the tensor has 4 channels"),
    "per-channel strings": ("cpu", _string_channels, "scale must be a finite number"),
    "string boolean": ("cpu", _set("bias_corrected", "false"), "bias_corrected must be true or false"),
    "version switching checks off": ("dpu", _version_trick, "graph_md5 differs"),
    "settings of the wrong shape": ("dpu", _set("settings", {"table": 3}), "settings must be"),
    "fix position as float": ("dpu", _tamper_scale(3.0), "fix position must be an integer"),
    "bit width 99": ("dpu", lambda d: _first(d, "output")[1].__setitem__(0, 99), "bit width 99"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_field_is_a_quant_info_error(calibrated, tmp_path, case):
    which, tamper, text = CASES[case]
    model, folder, cfg, doc = calibrated[which]
    work = tmp_path / "r"
    work.mkdir()
    bad = json.loads(json.dumps(doc))
    tamper(bad)
    (work / "quant_info.json").write_text(json.dumps(bad))
    with pytest.raises(QuantInfoError) as err:
        torch_quantizer("test", model, (X,), output_dir=str(work), quant_config_file=cfg)
    assert text in str(err.value), str(err.value)
    assert "quant_info.json" in str(err.value)
    assert err.value.__cause__ is None or isinstance(err.value.__cause__, QuantInfoError)


def test_untampered_files_load(calibrated, tmp_path):
    for model, folder, cfg, _doc in calibrated.values():
        torch_quantizer("test", model, (X,), output_dir=str(folder), quant_config_file=cfg)


def test_deep_nesting_is_a_quant_info_error(calibrated, tmp_path):
    model, _folder, cfg, _doc = calibrated["dpu"]
    work = tmp_path / "r"
    work.mkdir()
    (work / "quant_info.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(QuantInfoError, match="nested too deeply"):
        torch_quantizer("test", model, (X,), output_dir=str(work), quant_config_file=cfg)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_quant_info_error(calibrated, tmp_path):
    model, _folder, cfg, doc = calibrated["dpu"]
    work = tmp_path / "r"
    work.mkdir()
    f = work / "quant_info.json"
    f.write_text(json.dumps(doc))
    f.chmod(0)
    with pytest.raises(QuantInfoError, match="cannot be read"):
        torch_quantizer("test", model, (X,), output_dir=str(work), quant_config_file=cfg)
