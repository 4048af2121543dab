"""The ``nndct-lite`` command line: every subcommand through ``main([...])``."""
from __future__ import annotations

import json
import logging
import sys
import textwrap

import numpy as np
import pytest
import torch

from nndct_lite import cli, torch_quantizer
from nndct_lite.cli import COMMANDS, inspect_rows, load_model, main, parse_shape
from nndct_lite.errors import InputError

MODEL_PY = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Tiny(nn.Module):
        """conv-bn-relu, LayerNorm (no DPU op), softmax (no XModel DPU op), add, pool, linear."""

        def __init__(self, classes: int = 4):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.ln = nn.LayerNorm([8, 8, 8])
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, classes)

        def forward(self, x):
            x = self.relu(self.bn(self.conv(x)))
            x = torch.softmax(self.ln(x), 1) + x
            return self.fc(torch.flatten(self.pool(x), 1))


    class Plain(nn.Module):
        """Only DPU ops (exports to an XModel)."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


    class NeedsArgs(nn.Module):
        def __init__(self, width):
            super().__init__()


    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            raise ValueError("bad init")


    def make_tiny():
        return Tiny(classes=6)


    NOT_A_MODEL = 3
''')

SHAPE = ["--input-shape", "1,3,8,8"]


@pytest.fixture
def model_py(tmp_path):
    p = tmp_path / "models.py"
    p.write_text(MODEL_PY, encoding="utf-8")
    return str(p)


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------- parser
def test_help_on_every_subcommand(capsys):
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0
    for cmd in COMMANDS:
        assert cmd.name in out
    for argv in [[c.name] for c in COMMANDS] + [["xmodel", "show"], ["xmodel", "run"]]:
        rc, out, _ = _run(capsys, *argv, "--help")
        assert rc == 0, argv
        assert out.startswith(f"usage: nndct-lite {' '.join(argv)}"), out


def test_version_and_usage_errors(capsys):
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0 and out.startswith("nndct-lite ")
    assert _run(capsys)[0] == 2                                   # no subcommand
    rc, _, err = _run(capsys, "inspect", "torchvision:resnet18", "--input-shape", "1,a")
    assert rc == 2 and "bad input shape" in err
    assert _run(capsys, "frobnicate")[0] == 2


def test_parse_shape():
    assert parse_shape("1,3,224,224") == (1, 3, 224, 224)
    assert parse_shape("1x3x8x8") == (1, 3, 8, 8)
    for bad in ("", "1,-3", "a,b", "0"):
        with pytest.raises(InputError):
            parse_shape(bad)


# ------------------------------------------------------------------------------- model specs
def test_model_specs(model_py):
    assert type(load_model(f"{model_py}:Tiny")).__name__ == "Tiny"
    made = load_model(f"{model_py}:make_tiny")
    assert made.fc.out_features == 6 and not made.training


def test_torchvision_specs(monkeypatch):
    import torchvision.models as tvm
    seen = {}

    def fake_get_model(name, **kwargs):
        seen[name] = kwargs
        return torch.nn.Linear(1, 1).train()
    monkeypatch.setattr(tvm, "get_model", fake_get_model)
    assert not load_model("torchvision:googlenet").training             # eval mode
    assert seen["googlenet"] == {"weights": None, "aux_logits": False, "init_weights": False}
    load_model("torchvision:resnet18")
    assert seen["resnet18"] == {"weights": None}


@pytest.mark.parametrize("spec, words", [
    ("{py}:Nope", ["defines no 'Nope'"]),
    ("{py}:Tin", ["did you mean Tiny"]),
    ("{py}:NeedsArgs", ["cannot be called without arguments"]),
    ("{py}:NOT_A_MODEL", ["not a torch.nn.Module"]),
    ("{py}:Raises", ["Raises() raised ValueError: bad init", "models.py:"]),
    ("{dir}/missing.py:Net", ["does not exist"]),
    ("torchvision:resnet1", ["no model 'resnet1'", "resnet18"]),
    ("no_colon", ["is not SOURCE:NAME"]),
])
def test_model_spec_errors_exit_2(capsys, model_py, tmp_path, spec, words):
    spec = spec.format(py=model_py, dir=tmp_path)
    rc, out, err = _run(capsys, "inspect", spec, *SHAPE)
    assert rc == 2 and out == ""
    first = err.splitlines()[0]
    assert first.startswith("error[QUANTIZER_TORCH_INPUT]: ")
    for w in words:
        assert w in err
    assert "Traceback" not in err


def test_broken_model_file_names_the_line(capsys, tmp_path):
    p = tmp_path / "broken.py"
    p.write_text("import torch\n\nraise RuntimeError('boom')\n", encoding="utf-8")
    rc, _, err = _run(capsys, "inspect", f"{p}:Net", *SHAPE)
    assert rc == 2 and "boom" in err and f"{p}:3" in err


# ------------------------------------------------------------------------------- inspect
def test_inspect_tiny_model(capsys, model_py):
    rc, out, _ = _run(capsys, "inspect", f"{model_py}:Tiny", *SHAPE)
    assert rc == 0
    assert "model:   Tiny" in out and "target:  DPU" in out and "input:   1x3x8x8" in out
    assert "1 BatchNorm folded" in out
    lines = {line.split()[1]: line for line in out.splitlines()
             if line[:1].isdigit() and "::" in line}
    conv = lines["Tiny::Tiny/Conv2d[conv]/ret.1"]
    assert " DPU " in conv and "BatchNorm bn folded in" in conv and "w8 b8 o@2" in conv
    ln = lines["Tiny::Tiny/LayerNorm[ln]/ret.3"]
    assert " CPU " in ln and "LayerNorm is not supported by the DPU" in ln
    # softmax is an XIR op the XModel carries (the compiler places it): a DPU row, as the builder
    assert " DPU " in lines["Tiny::Tiny/ret.4"] and "softmax" in lines["Tiny::Tiny/ret.4"]
    assert "1x8x8x8" in conv and "1x4" in lines["Tiny::Tiny/Linear[fc]/ret.8"]
    assert "1 node(s) fall back to the CPU:" in out


def test_inspect_json_with_factory(capsys, model_py):
    rc, out, _ = _run(capsys, "inspect", f"{model_py}:make_tiny", *SHAPE, "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["target_device"] == "DPU" and data["input_shapes"] == [[1, 3, 8, 8]]
    devices = {n["name"]: n["device"] for n in data["nodes"]}
    assert devices["Tiny::input_0"] == "DPU"
    assert [n for n, d in devices.items() if d == "CPU"] == ["Tiny::Tiny/LayerNorm[ln]/ret.3"]
    assert data["nodes"][-1]["shape"] == [1, 6]


def test_inspect_agrees_with_the_xmodel_export(tmp_path, model_py):
    """inspect's CPU nodes are the ones the XModel builder puts in its CPU subgraph."""
    from nndct_lite.export.xmodel.build import _Builder
    model = load_model(f"{model_py}:Tiny")
    x = torch.randn(2, 3, 8, 8)
    q = torch_quantizer("calib", model, (x,), output_dir=str(tmp_path))
    q.quant_model(x)
    q.export_quant_config()
    t = torch_quantizer("test", model, (x,), output_dir=str(tmp_path))
    t.quant_model(x)
    builder = _Builder(t._session.freeze())
    with torch.no_grad():
        builder.build()
    assert [r.name for r in inspect_rows(t._session) if r.device == "CPU"] == builder.cpu_ops


def test_inspect_resnet18(capsys):
    rc, out, _ = _run(capsys, "inspect", "torchvision:resnet18", "--input-shape", "1,3,32,32")
    assert rc == 0
    assert "model:   ResNet (torchvision:resnet18)" in out
    assert "nodes:   50 (50 DPU)" in out and "20 BatchNorm folded" in out
    assert "every tensor op runs on the DPU." in out
    assert "BatchNorm layer4.1.bn2 folded in" in out


def test_inspect_cpu_target(capsys, model_py, tmp_path):
    cfg = tmp_path / "cpu.json"
    cfg.write_text('{"target_device": "CPU"}', encoding="utf-8")
    rc, out, _ = _run(capsys, "inspect", f"{model_py}:Plain", *SHAPE, "--config", cfg)
    assert rc == 0 and "target:  CPU" in out
    devices = {line.split()[4] for line in out.splitlines() if line[:1].isdigit()}
    assert devices == {"CPU"}
    assert "nothing is placed on a DPU" in out


def test_wrong_input_shape_is_a_trace_error(capsys, model_py):
    rc, _, err = _run(capsys, "inspect", f"{model_py}:Tiny", "--input-shape", "1,1,8,8")
    assert rc == 2 and err.startswith("error[QUANTIZER_TORCH_PYTORCH_TRACE]: ")
    assert "  where: " in err and "  hint: " in err


def test_quiet_and_verbose(caplog, capsys, model_py):
    for name in list(logging.root.manager.loggerDict):   # other tests may have set levels
        if name.startswith("nndct_lite"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    with caplog.at_level(logging.DEBUG):
        assert main(["-q", "inspect", f"{model_py}:Tiny", *SHAPE]) == 0
    assert not [r for r in caplog.records if r.name.startswith("nndct_lite")]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert main(["inspect", "-v", f"{model_py}:Tiny", *SHAPE]) == 0
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("nndct_lite")]
    assert any(lvl == logging.WARNING and "stay float" in m for lvl, m in msgs)
    assert any(lvl == logging.INFO for lvl, _ in msgs)
    assert logging.getLogger("nndct_lite").level == logging.NOTSET        # restored
    capsys.readouterr()


# ------------------------------------------------------------------------------- explain-config
def test_explain_config(capsys, model_py, tmp_path):
    rc, out, _ = _run(capsys, "explain-config")
    assert rc == 0 and "config file: (none: default configuration)" in out
    assert "global settings:" in out and "per node:" not in out
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"target_device": "CPU", "overall_quantize_config": {"bit_width": 6}}',
                   encoding="utf-8")
    rc, out, _ = _run(capsys, "explain-config", "--config", cfg, f"{model_py}:Tiny", *SHAPE)
    assert rc == 0 and "target_device: CPU" in out and "per node:" in out
    assert "Tiny::Tiny/Conv2d[conv]/ret.1" in out
    rc, out, _ = _run(capsys, "explain-config", "--json", "--bitwidth", "4")
    assert rc == 0 and json.loads(out)["global"]["weights"]["bit_width"]["value"] == 4


def test_explain_config_errors(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"overall_quantize_config": {"bitwidth": 8}}', encoding="utf-8")
    rc, _, err = _run(capsys, "explain-config", "--config", bad)
    assert rc == 2 and err.startswith("error[QUANTIZER_TORCH_QUANT_CONFIG]: ")
    assert "bit_width" in err and "where: " in err
    rc, _, err = _run(capsys, "explain-config", *SHAPE)
    assert rc == 2 and "needs a MODEL_SPEC" in err


# ------------------------------------------------------------------------------- results
@pytest.fixture
def calibrated(tmp_path, model_py):
    """quantize_result of the DPU-only model: calib (+ report) then test + XModel export."""
    from nndct_lite.report import layer_report, write_report
    model = load_model(f"{model_py}:Plain")
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = tmp_path / "quantize_result"
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(out))
    q.quant_model(x)
    q.export_quant_config()
    write_report(layer_report(q._session, [x]), out)
    t = torch_quantizer("test", model, (x[:1],), output_dir=str(out))
    t.quant_model(x)
    xmodel = t.export_xmodel(str(out))
    return out, xmodel, x


def test_show_quant_info(capsys, calibrated, tmp_path):
    out, _, _ = calibrated
    rc, text, _ = _run(capsys, "show-quant-info", out)
    assert rc == 0
    assert "bias_corrected:  yes" in text and "fast_finetuned:  no" in text
    assert "entries:         4 param, 4 output, 0 input" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if "::" in line}
    assert rows["Plain::conv.weight"][1:3] == ["weights", "8"]
    assert rows["Plain::conv.bias"][1] == "bias"
    assert rows["Plain::input_0"][1] == "input"
    assert rows["Plain::Plain/ReLU[relu]/ret.2"][1] == "activation"
    assert "range [" in text and "step 2^" in text
    assert _run(capsys, "show-quant-info", out / "quant_info.json")[0] == 0
    rc, _, err = _run(capsys, "show-quant-info", tmp_path / "nowhere")
    assert rc == 2 and err.startswith("error[QUANTIZER_TORCH_NO_CALIB_RESULT]")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "quant_info.json").write_text("{not json", encoding="utf-8")
    rc, _, err = _run(capsys, "show-quant-info", broken)
    assert rc == 2 and "not valid JSON" in err


def test_report(capsys, calibrated, tmp_path):
    out, _, _ = calibrated
    rc, text, _ = _run(capsys, "report", out)
    assert rc == 0 and text.startswith("# Quantization report: Plain")
    assert "SQNR dB" in text and "## Worst" in text
    assert not (out / "report_chart.png").exists()
    rc, text2, _ = _run(capsys, "report", out, "--chart")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert rc == 2
    else:
        assert rc == 0 and (out / "report_chart.png").read_bytes()[:4] == b"\x89PNG"
        assert text2.startswith(text) and "chart: " in text2
    rc, _, err = _run(capsys, "report", tmp_path)
    assert rc == 2 and err.startswith("error[NNDCT_LITE_NO_REPORT]: ")


def test_xmodel_show_and_run(capsys, calibrated, tmp_path):
    _, xmodel, x = calibrated
    rc, text, _ = _run(capsys, "xmodel", "show", xmodel, "--brief")
    assert rc == 0 and "graph:     Plain" in text
    np.save(tmp_path / "x.npy", x.numpy())
    rc, text, _ = _run(capsys, "xmodel", "run", xmodel, "--input", tmp_path / "x.npy",
                       "-o", tmp_path / "y.npy")
    assert rc == 0 and "simulated 4 sample(s)" in text
    assert np.load(tmp_path / "y.npy").shape == (4, 3)
    rc, _, err = _run(capsys, "xmodel", "show", tmp_path / "none.xmodel")
    assert rc == 2 and err.startswith("error[QUANTIZER_TORCH_INPUT]: ")
    np.save(tmp_path / "bad.npy", np.zeros((1, 5, 5, 5), dtype=np.float32))
    rc, _, err = _run(capsys, "xmodel", "run", xmodel, "--input", tmp_path / "bad.npy")
    assert rc == 2 and "error" in err


# ------------------------------------------------------------------------------- exit 1
def test_internal_error_exit_1(capsys, monkeypatch, tmp_path):
    def boom(_arg):
        raise RuntimeError("kaputt")
    from nndct_lite.cli import commands
    monkeypatch.setattr(commands, "_quant_info_path", boom)
    rc, _, err = _run(capsys, "show-quant-info", tmp_path)
    assert rc == 1 and "internal error: RuntimeError: kaputt" in err
    assert "Traceback" not in err and "--debug" in err
    rc, _, err = _run(capsys, "--debug", "show-quant-info", tmp_path)
    assert rc == 1 and "Traceback (most recent call last)" in err


def test_python_dash_m(monkeypatch, capsys):
    """``python -m nndct_lite`` runs cli.main (in-process: no second torch import)."""
    import runpy
    monkeypatch.setattr(sys, "argv", ["nndct-lite", "report", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("nndct_lite", run_name="__main__")
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: nndct-lite report")
