"""Bad inputs to the public API: each must fail loudly and cleanly with one ``NndctError`` subclass
that says what is wrong, where (argument, file, JSON pointer, node) and what to do.

Every case lives in ``CASES`` below, so the same table drives the tests and ``docs/errors.md``.
Cases that show a gap in the library (a raw Python exception, a silent success, a missing hint or
culprit) are marked ``gap=...``: their test is a strict xfail that starts passing once the library
is fixed, and the doc shows what the user sees today. Regenerate the doc after any change here or
in a message:

    python tests/reliability/test_bad_input.py          # rewrites docs/errors.md

The untraceable models sit at the top of the file so that the source lines named in the doc move
only when these classes change.
"""
from __future__ import annotations

import contextlib
import copy
import html
import json
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import (CalibrationError, ConfigError, ExportError, InputError, ModeError,
                        NndctError, OutputError, QuantInfoError, TraceError, torch_quantizer)


class DataDependentIf(nn.Module):
    """A branch on a tensor value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            return y
        return -y


class LoopOnValue(nn.Module):
    def forward(self, x):
        for _ in range(int(x.mean() * 10)):
            x = x + 1
        return x


class NestedDataDependent(nn.Module):
    """The data-dependent loop is two modules deep: the error must name that submodule."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.block = nn.Sequential(LoopOnValue())

    def forward(self, x):
        return self.block(self.conv(x))


ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "errors.md"
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()


class Net(nn.Module):
    """conv-bn-relu, conv-relu + residual add, pool, linear: every quantizer kind, bias corr."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        y = F.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class OtherModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


class RenamedLayers(nn.Module):
    """Same class name (``Net``) as the calibrated model, other layer names."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv_a(x)))
        y = F.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Truncated(nn.Module):
    """Same class name and layer names as ``Net``, but ``fc`` is never called: every node of this
    graph has an entry in Net's quant_info.json; only the structure differs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        y = F.relu(self.conv2(x)) + x
        return torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)


for _cls in (RenamedLayers, Truncated):
    _cls.__name__ = _cls.__qualname__ = "Net"

CPU_CONFIG = {
    "target_device": "CPU", "include_cle": False, "include_bias_corr": False,
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                "calib_statistic_method": "max"},
}


class Bomb:
    """Unpickling this runs ``exec`` (it creates ``marker``): a loader that runs code is caught."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",))


# ---------------------------------------------------------------------------------- context
class Ctx:
    """Scratch space for the cases: one calibrated ``quantize_result`` copied per case."""

    def __init__(self, tmp: Path):
        self.tmp = Path(tmp)
        self.case_id = "setup"
        torch.manual_seed(0)
        self.model = Net().eval()
        self.x = torch.randn(8, 3, 8, 8)
        self.x1 = self.x[:1]
        self.pristine = self.tmp / "pristine" / "quantize_result"
        q = torch_quantizer("calib", self.model, (self.x1,), output_dir=str(self.pristine))
        q.quant_model(self.x)
        q.export_quant_config()

    def base(self) -> Path:
        d = self.tmp / f"case_{self.case_id}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def out(self) -> Path:
        """A fresh, empty output directory."""
        d = self.base() / "quantize_result"
        shutil.rmtree(d, ignore_errors=True)
        return d

    def calibrated(self) -> Path:
        """A fresh copy of a complete calibration result of ``Net``."""
        d = self.out()
        shutil.copytree(self.pristine, d)
        return d

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.base() / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    def test_mode(self, d: Path, model: nn.Module | None = None, **kw):
        return torch_quantizer("test", model or self.model, (self.x1,), output_dir=str(d), **kw)

    def edit_quant_info(self, d: Path, fn: Callable[[dict], dict | None]) -> None:
        p = d / "quant_info.json"
        doc = json.loads(p.read_text())
        doc = fn(doc) or doc
        p.write_text(json.dumps(doc, indent=2))

    def first_param(self, d: Path) -> str:
        return next(iter(json.loads((d / "quant_info.json").read_text())["param"]))


# ---------------------------------------------------------------------------------- cases
@dataclass
class Case:
    id: str
    bad_input: str
    run: Callable[[Ctx], object]
    expect: type
    code: str
    culprit: tuple[str, ...]
    gap: str | None = None
    warning: bool = False       # the expected outcome is a logged warning, not an exception


CASES: list[Case] = []


def case(id: str, bad_input: str, expect: type, code: str | None = None, culprit=(),
         gap: str | None = None, warning: bool = False):
    def deco(fn):
        CASES.append(Case(id, bad_input, fn, expect, code or getattr(expect, "code", ""),
                          tuple(culprit), gap, warning))
        return fn
    return deco


# ---- quant_mode, module, input_args, device, bitwidth
@case("quant_mode_unknown", "`quant_mode='calibrate'`", ModeError,
      culprit=["'calibrate'", "'calib'", "'test'"])
def _(ctx):
    torch_quantizer("calibrate", ctx.model, (ctx.x1,), output_dir=str(ctx.out()))


@case("quant_mode_none", "`quant_mode=None`", ModeError, culprit=["None", "'calib'"])
def _(ctx):
    torch_quantizer(None, ctx.model, (ctx.x1,), output_dir=str(ctx.out()))


@case("quant_mode_bool", "`quant_mode=True`", ModeError, culprit=["True", "'calib'"])
def _(ctx):
    torch_quantizer(True, ctx.model, (ctx.x1,), output_dir=str(ctx.out()))


@case("module_function", "`module` is a plain function", InputError,
      culprit=["module=", "function"])
def _(ctx):
    torch_quantizer("calib", lambda t: t, (ctx.x1,), output_dir=str(ctx.out()))


@case("module_class", "`module` is the model class, not an instance", InputError,
      culprit=["module=", "type"])
def _(ctx):
    torch_quantizer("calib", Net, (ctx.x1,), output_dir=str(ctx.out()))


@case("module_state_dict", "`module` is a state dict", InputError,
      culprit=["module=", "OrderedDict"])
def _(ctx):
    torch_quantizer("calib", ctx.model.state_dict(), (ctx.x1,), output_dir=str(ctx.out()))


@case("input_args_missing", "`input_args` not given", InputError, culprit=["input_args"])
def _(ctx):
    torch_quantizer("calib", ctx.model, output_dir=str(ctx.out()))


@case("input_args_wrong_shape", "`input_args` with 4 channels for a 3-channel conv", TraceError,
      culprit=["input_args=((1, 4, 8, 8))", "3 channels"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (torch.randn(1, 4, 8, 8),), output_dir=str(ctx.out()))


@case("input_args_too_many", "`input_args` has 2 tensors, `forward` takes 1", TraceError,
      culprit=["input_args=", "takes 1 inputs", "has 2"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1, ctx.x1), output_dir=str(ctx.out()))


@case("input_args_list", "`input_args` is a list (passed as one argument, as in the original)",
      TraceError, culprit=["input_args=(list)"])
def _(ctx):
    torch_quantizer("calib", ctx.model, [ctx.x1], output_dir=str(ctx.out()))


@case("input_args_int_dtype", "`input_args` is an int64 tensor", TraceError,
      culprit=["input_args=", "long"])
def _(ctx):
    torch_quantizer("calib", ctx.model, torch.ones(1, 3, 8, 8, dtype=torch.int64),
                    output_dir=str(ctx.out()))


@case("input_kwargs", "`input_kwargs={'x': ...}`", InputError, culprit=["input_kwargs"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (), {"x": ctx.x1}, output_dir=str(ctx.out()))


@case("device_garbage", "`device='gpu0'`", InputError, culprit=["'gpu0'", "device="])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), device="gpu0", output_dir=str(ctx.out()))


@case("device_unsupported", "`device='mps'`", InputError, culprit=["'mps'", "device="])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), device="mps", output_dir=str(ctx.out()))


@case("device_cuda_unavailable", "`device='cuda'` on a machine without CUDA (as the original: "
      "warn and use the CPU)", Warning, code="QUANTIZER_TORCH_CUDA_UNAVAILABLE",
      culprit=["CUDA", "CPU"], warning=True)
def _(ctx):
    with mock.patch("torch.cuda.is_available", return_value=False):
        q = torch_quantizer("calib", ctx.model, (ctx.x1,), device="cuda",
                            output_dir=str(ctx.out()))
    assert q.device.type == "cpu"


@case("device_cuda_index", "`device='cuda:3'` where CUDA has 1 device", InputError,
      culprit=["cuda:3", "device="])
def _(ctx):
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.device_count", return_value=1):
        torch_quantizer("calib", copy.deepcopy(ctx.model), (ctx.x1,), device="cuda:3",
                        output_dir=str(ctx.out()))


@case("bitwidth_1", "`bitwidth=1`", ConfigError, culprit=["bitwidth=", "got 1", "2 to 16"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), bitwidth=1, output_dir=str(ctx.out()))


@case("bitwidth_17", "`bitwidth=17`", ConfigError, culprit=["bitwidth=", "got 17"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), bitwidth=17, output_dir=str(ctx.out()))


@case("bitwidth_str", "`bitwidth='8'`", ConfigError, culprit=["bitwidth=", "'8'"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), bitwidth="8", output_dir=str(ctx.out()))


@case("state_dict_file_missing", "`state_dict_file` that does not exist", InputError,
      culprit=["nope.pth", "state_dict_file"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), state_dict_file=str(ctx.base() / "nope.pth"),
                    output_dir=str(ctx.out()))


@case("state_dict_file_other_model", "`state_dict_file` holding another model's weights",
      InputError, culprit=["sd.pth", "conv1.weight"])
def _(ctx):
    p = ctx.base() / "sd.pth"
    torch.save({"foo": torch.zeros(1)}, p)
    torch_quantizer("calib", ctx.model, (ctx.x1,), state_dict_file=str(p),
                    output_dir=str(ctx.out()))


# ---- the config file
def _with_config(ctx, content) -> None:
    p = ctx.file("config.json", content)
    torch_quantizer("calib", ctx.model, (ctx.x1,), quant_config_file=str(p),
                    output_dir=str(ctx.out()))


@case("config_missing", "`quant_config_file` that does not exist", ConfigError,
      culprit=["missing.json", "not found"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,),
                    quant_config_file=str(ctx.base() / "missing.json"), output_dir=str(ctx.out()))


@case("config_directory", "`quant_config_file` is a directory", ConfigError,
      culprit=["configs", "directory"])
def _(ctx):
    (ctx.base() / "configs").mkdir(exist_ok=True)
    torch_quantizer("calib", ctx.model, (ctx.x1,), quant_config_file=str(ctx.base() / "configs"),
                    output_dir=str(ctx.out()))


@case("config_not_json", "config with a trailing comma", ConfigError,
      culprit=["config.json:1:25", "line 1, column 25"])
def _(ctx):
    _with_config(ctx, '{"target_device": "DPU",}')


@case("config_empty", "empty config file", ConfigError, culprit=["config.json:1:1"])
def _(ctx):
    _with_config(ctx, "")


@case("config_not_utf8", "config file in Latin-1", ConfigError, culprit=["config.json", "UTF-8"])
def _(ctx):
    _with_config(ctx, '{"target_device": "DPU \xe9"}'.encode("latin-1"))


@case("config_python", "a Python file as the config", ConfigError,
      culprit=["config.json:1:1", "not valid JSON"])
def _(ctx):
    _with_config(ctx, "config = dict(target_device='DPU')\n")


@case("config_top_array", "config is a JSON array", ConfigError, culprit=["config.json", "at /"])
def _(ctx):
    _with_config(ctx, "[1, 2]")


@case("config_unknown_key", "misspelt key `bit_widht`", ConfigError,
      culprit=["/overall_quantize_config/bit_widht", "'bit_width'"])
def _(ctx):
    _with_config(ctx, '{"overall_quantize_config": {"bit_widht": 8}}')


@case("config_bad_value", "`bit_width: 1` in the config", ConfigError,
      culprit=["/overall_quantize_config/bit_width", "got 1"])
def _(ctx):
    _with_config(ctx, '{"overall_quantize_config": {"bit_width": 1}}')


@case("config_expression", "a Python expression as a config value (never evaluated)",
      ConfigError, culprit=["/overall_quantize_config/bit_width", "__import__"])
def _(ctx):
    import os
    os.environ.pop("NNDCT_EVALUATED", None)
    try:
        _with_config(ctx, json.dumps({"overall_quantize_config": {
            "bit_width": "__import__('os').environ.setdefault('NNDCT_EVALUATED', '8')"}}))
    finally:
        assert "NNDCT_EVALUATED" not in os.environ, "a config value was evaluated"


@case("config_nan", "`NaN` literal in the config", ConfigError, culprit=["config.json", "NaN"])
def _(ctx):
    _with_config(ctx, '{"overall_quantize_config": {"percentage": NaN}}')


@case("config_not_a_path", "`quant_config_file={...}` (a dict)", ConfigError,
      culprit=["quant_config_file", "dict"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), quant_config_file={"bit_width": 8},
                    output_dir=str(ctx.out()))


# ---- calibration state and test mode
@case("export_before_forward", "`export_quant_config()` before any forward", CalibrationError,
      culprit=["quant_model", "export_quant_config()"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.out())).export_quant_config()


@case("float_mode_export", "`export_quant_config()` in `float` mode", ModeError,
      culprit=["export_quant_config()", "'float'"])
def _(ctx):
    torch_quantizer("float", ctx.model, (ctx.x1,), output_dir=str(ctx.out())).export_quant_config()


@case("test_without_calib", "`test` mode on an empty output_dir", QuantInfoError,
      code="QUANTIZER_TORCH_NO_CALIB_RESULT", culprit=["quantize_result/quant_info.json", "calib"])
def _(ctx):
    ctx.test_mode(ctx.out())


@case("test_other_model", "`test` mode with another model's results", QuantInfoError,
      culprit=["OtherModel::input_0", "quant_info.json"])
def _(ctx):
    ctx.test_mode(ctx.calibrated(), OtherModel())


@case("test_renamed_layers", "`test` mode, same class name, a layer renamed", QuantInfoError,
      culprit=["Net::conv_a.weight", "quant_info.json"])
def _(ctx):
    ctx.test_mode(ctx.calibrated(), RenamedLayers())


@case("test_structure_differs", "`test` mode, same names, `fc` no longer called", QuantInfoError,
      culprit=["quant_info.json", "fc"])
def _(ctx):
    ctx.test_mode(ctx.calibrated(), Truncated())


@case("test_bitwidth_differs", "`test` with `bitwidth=4` after an 8-bit calibration",
      QuantInfoError, culprit=["quant_info.json", "Net::", "4", "8"])
def _(ctx):
    ctx.test_mode(ctx.calibrated(), bitwidth=4)


@case("load_ft_param_not_finetuned", "`load_ft_param()` without fast finetune", QuantInfoError,
      code="QUANTIZER_TORCH_FAST_FINETUNE", culprit=["quant_info.json", "fast-finetuned"])
def _(ctx):
    ctx.test_mode(ctx.calibrated()).load_ft_param()


# ---- corrupted quantize_result/quant_info.json
def _qi_text(ctx, text: str | bytes):
    d = ctx.calibrated()
    p = d / "quant_info.json"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    ctx.test_mode(d)


def _qi_entries(ctx, entry) -> None:
    d = ctx.calibrated()

    def edit(doc):
        doc["param"] = {k: entry for k in doc["param"]}
    ctx.edit_quant_info(d, edit)
    ctx.test_mode(d)


@case("quant_info_truncated", "quant_info.json cut in half", QuantInfoError,
      culprit=["quantize_result/quant_info.json", "truncated"])
def _(ctx):
    text = (ctx.pristine / "quant_info.json").read_text()
    _qi_text(ctx, text[: len(text) // 2])


@case("quant_info_empty", "quant_info.json empty", QuantInfoError,
      culprit=["quantize_result/quant_info.json", "not valid JSON"])
def _(ctx):
    _qi_text(ctx, "")


@case("quant_info_binary", "quant_info.json holds binary bytes", QuantInfoError,
      culprit=["quantize_result/quant_info.json", "not valid JSON"])
def _(ctx):
    _qi_text(ctx, b"\x80\xff\x00garbage")


@case("quant_info_array", "quant_info.json is a JSON array", QuantInfoError,
      culprit=["quantize_result/quant_info.json", "object"])
def _(ctx):
    _qi_text(ctx, "[]")


@case("quant_info_section_type", "`param` is a list", QuantInfoError,
      culprit=["quantize_result/quant_info.json", "'param'"])
def _(ctx):
    _qi_text(ctx, '{"param": [], "output": {}}')


@case("quant_info_entry_object", "an entry is an object instead of `[[bw, fp]]`", QuantInfoError,
      culprit=["quant_info.json", "/param/Net::conv1.weight"])
def _(ctx):
    _qi_entries(ctx, {"bit_width": 8})


@case("quant_info_entry_number", "an entry is a number", QuantInfoError,
      culprit=["quant_info.json", "/param/Net::conv1.weight"])
def _(ctx):
    _qi_entries(ctx, 5)


@case("quant_info_fix_pos_float", "fix position 1.5", QuantInfoError,
      culprit=["/param/Net::conv1.weight", "1.5"])
def _(ctx):
    _qi_entries(ctx, [[8, 1.5]])


@case("quant_info_fix_pos_list_str", "per-channel fix positions `[\"x\"]`", QuantInfoError,
      culprit=["/param/Net::conv1.weight", '"x"'])
def _(ctx):
    _qi_entries(ctx, [[8, ["x"]]])


@case("quant_info_scale_str", "float-scale entry with scale `\"a\"`", QuantInfoError,
      culprit=["/param/Net::conv1.weight", '"a"'])
def _(ctx):
    _qi_entries(ctx, [[8, "a", 0, 1.0]])


@case("quant_info_entry_length", "entry `[8, 1, 2]` (3 values)", QuantInfoError,
      culprit=["/param/Net::conv1.weight", "3 values"])
def _(ctx):
    _qi_entries(ctx, [[8, 1, 2]])


@case("quant_info_fix_pos_huge", "fix position 1000000", QuantInfoError,
      culprit=["/param/Net::conv1.weight", "1000000"])
def _(ctx):
    _qi_entries(ctx, [[8, 1000000]])


@case("quant_info_missing_entry", "one node's entry deleted", QuantInfoError,
      culprit=["quant_info.json", "Net::conv1.weight"])
def _(ctx):
    d = ctx.calibrated()
    ctx.edit_quant_info(d, lambda doc: doc["param"].pop("Net::conv1.weight") and None)
    ctx.test_mode(d)


@case("quant_info_md5", "`graph_md5` edited", QuantInfoError,
      culprit=["quant_info.json", "graph_md5"])
def _(ctx):
    d = ctx.calibrated()
    ctx.edit_quant_info(d, lambda doc: doc.update(graph_md5="0" * 32))
    ctx.test_mode(d)


# ---- corrupted bias_corr.pth / param.pth
def _bias_corr(ctx, content, checksum: bool = True) -> None:
    """Replace bias_corr.pth; ``checksum=False`` also drops a recorded checksum of it from
    quant_info.json (as in files of other versions), so that its contents are checked."""
    d = ctx.calibrated()
    if not checksum:
        ctx.edit_quant_info(d, lambda doc: doc.pop("bias_corr_sha256", None) and None)
    if isinstance(content, bytes):
        (d / "bias_corr.pth").write_bytes(content)
    else:
        torch.save(content, d / "bias_corr.pth")
    ctx.test_mode(d)


def _bias_keys(ctx) -> list[str]:
    return list(torch.load(ctx.pristine / "bias_corr.pth", weights_only=True))


@case("bias_corr_missing", "bias_corr.pth deleted (include_bias_corr on)", QuantInfoError,
      code="QUANTIZER_TORCH_NO_CALIB_RESULT", culprit=["quantize_result/bias_corr.pth"])
def _(ctx):
    d = ctx.calibrated()
    (d / "bias_corr.pth").unlink()
    ctx.test_mode(d)


@case("bias_corr_truncated", "bias_corr.pth cut in half", QuantInfoError,
      culprit=["quantize_result/bias_corr.pth", "corrupted"])
def _(ctx):
    data = (ctx.pristine / "bias_corr.pth").read_bytes()
    _bias_corr(ctx, data[: len(data) // 2])


@case("bias_corr_empty", "bias_corr.pth empty", QuantInfoError,
      culprit=["quantize_result/bias_corr.pth", "corrupted"])
def _(ctx):
    _bias_corr(ctx, b"")


@case("bias_corr_not_dict", "bias_corr.pth holds a list", QuantInfoError,
      culprit=["quantize_result/bias_corr.pth", "dict"])
def _(ctx):
    _bias_corr(ctx, [1.0, 2.0])


@case("bias_corr_wrong_length", "bias_corr.pth with 1 value per layer", QuantInfoError,
      culprit=["quantize_result/bias_corr.pth", "Net::Net/Conv2d[conv1]", "1 values"])
def _(ctx):
    _bias_corr(ctx, {k: [1.0] for k in _bias_keys(ctx)}, checksum=False)


@case("bias_corr_strings", "bias_corr.pth values are strings", QuantInfoError,
      culprit=["quantize_result/bias_corr.pth", "Net::Net/Conv2d[conv1]"])
def _(ctx):
    _bias_corr(ctx, {k: "abc" for k in _bias_keys(ctx)}, checksum=False)


@case("bias_corr_pickle_bomb", "bias_corr.pth whose pickle runs code", QuantInfoError,
      culprit=["quantize_result/bias_corr.pth"])
def _(ctx):
    marker = ctx.base() / "EXECUTED"
    try:
        _bias_corr(ctx, {"x": Bomb(marker)})
    finally:
        assert not marker.exists(), "loading bias_corr.pth executed code"


def _finetuned(ctx, content) -> None:
    d = ctx.calibrated()
    ctx.edit_quant_info(d, lambda doc: doc.update(fast_finetuned=True))
    if isinstance(content, bytes):
        (d / "param.pth").write_bytes(content)
    elif content is not None:
        torch.save(content, d / "param.pth")
    ctx.test_mode(d).load_ft_param()


@case("param_missing", "fast-finetuned quant_info.json, param.pth deleted", QuantInfoError,
      code="QUANTIZER_TORCH_NO_CALIB_RESULT", culprit=["quantize_result/param.pth"])
def _(ctx):
    _finetuned(ctx, None)


@case("param_truncated", "param.pth truncated", QuantInfoError,
      culprit=["quantize_result/param.pth", "corrupted"])
def _(ctx):
    import io
    buf = io.BytesIO()
    torch.save({"module_1.weight": torch.zeros(8, 3, 3, 3)}, buf)
    _finetuned(ctx, buf.getvalue()[:200])


@case("param_wrong_shapes", "param.pth with other shapes", QuantInfoError,
      culprit=["quantize_result/param.pth", "module_1.weight"])
def _(ctx):
    _finetuned(ctx, {"module_1.weight": torch.zeros(3)})


@case("param_other_keys", "param.pth of another model (no key matches)", QuantInfoError,
      culprit=["quantize_result/param.pth", "foo"])
def _(ctx):
    _finetuned(ctx, {"foo": torch.zeros(3)})


@case("param_pickle_bomb", "param.pth whose pickle runs code", QuantInfoError,
      culprit=["quantize_result/param.pth"])
def _(ctx):
    marker = ctx.base() / "EXECUTED"
    try:
        _finetuned(ctx, {"x": Bomb(marker)})
    finally:
        assert not marker.exists(), "loading param.pth executed code"


# ---- deploy exports
def _test_ready(ctx, forward=True):
    qt = ctx.test_mode(ctx.calibrated())
    if forward:
        qt.quant_model(ctx.x)
    return qt


def _calib_forwarded(ctx):
    q = torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.out()))
    q.quant_model(ctx.x)
    return q


@case("xmodel_in_calib", "`export_xmodel()` in calib mode", ModeError,
      culprit=["export_xmodel()", "quant_mode='calib'", "'test'"])
def _(ctx):
    _calib_forwarded(ctx).export_xmodel(output_dir=str(ctx.base()))


@case("onnx_in_calib", "`export_onnx_model()` in calib mode", ModeError,
      culprit=["export_onnx_model()", "quant_mode='calib'"])
def _(ctx):
    _calib_forwarded(ctx).export_onnx_model(output_dir=str(ctx.base()))


@case("torch_script_in_calib", "`export_torch_script()` in calib mode", ModeError,
      culprit=["export_torch_script()", "quant_mode='calib'"])
def _(ctx):
    _calib_forwarded(ctx).export_torch_script(output_dir=str(ctx.base()))


@case("xmodel_in_float", "`export_xmodel()` in float mode", ModeError,
      culprit=["export_xmodel()", "'float'"])
def _(ctx):
    torch_quantizer("float", ctx.model, (ctx.x1,), output_dir=str(ctx.out())).export_xmodel()


@case("xmodel_no_forward", "`export_xmodel()` in test mode before any forward", CalibrationError,
      code="QUANTIZER_TORCH_NO_FORWARD", culprit=["export_xmodel()", "quant_model"])
def _(ctx):
    _test_ready(ctx, forward=False).export_xmodel(output_dir=str(ctx.base()))


@case("xmodel_cpu_target", "`export_xmodel()` for target_device CPU", ExportError,
      culprit=["target_device=CPU", "export_onnx_model()"])
def _(ctx):
    cfg = ctx.file("cpu.json", json.dumps(CPU_CONFIG))
    d = ctx.out()
    q = torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(d),
                        quant_config_file=str(cfg))
    q.quant_model(ctx.x)
    q.export_quant_config()
    qt = torch_quantizer("test", ctx.model, (ctx.x1,), output_dir=str(d),
                         quant_config_file=str(cfg))
    qt.quant_model(ctx.x1)
    qt.export_xmodel(output_dir=str(d))


# ---- models that cannot be traced
@case("trace_data_dependent_if", "`if y.sum() > 0:` in forward", TraceError,
      culprit=["DataDependentIf", f"{THIS}:", "if y.sum() > 0:", "control flow"])
def _(ctx):
    torch_quantizer("calib", DataDependentIf(), (ctx.x1,), output_dir=str(ctx.out()))


@case("trace_nested_loop", "`range(int(x.mean() * 10))` two modules deep", TraceError,
      culprit=["Sequential[block]", "LoopOnValue", f"{THIS}:", "range(int(x.mean() * 10))"])
def _(ctx):
    torch_quantizer("calib", NestedDataDependent(), (ctx.x1,), output_dir=str(ctx.out()))


@case("trace_user_dir_named_nndct_lite", "untraceable model in `~/nndct_lite_models/usermodel.py`",
      TraceError, culprit=["usermodel.py:", "if x.max() > 1:"])
def _(ctx):
    import importlib.util
    src = ctx.base() / "nndct_lite_models" / "usermodel.py"
    src.parent.mkdir(exist_ok=True)
    src.write_text("import torch.nn as nn\n\n\nclass UserModel(nn.Module):\n"
                   "    def forward(self, x):\n        if x.max() > 1:\n            return x\n"
                   "        return -x\n")
    spec = importlib.util.spec_from_file_location("nndct_lite_models_usermodel", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch_quantizer("calib", mod.UserModel(), (ctx.x1,), output_dir=str(ctx.out()))


# ---- raw exceptions found by the audit of issue 22, now project errors
@case("config_unclosed_brace", "config missing its closing brace, ending in a newline", ConfigError,
      culprit=["config.json:2:1", "line 2, column 1"])
def _(ctx):
    _with_config(ctx, '{"target_device": "DPU"\n')


@case("config_fifo", "`quant_config_file` is a named pipe (reading would block)", ConfigError,
      culprit=["pipe.json", "not a regular file"])
def _(ctx):
    import os
    p = ctx.base() / "pipe.json"
    if not p.exists():
        os.mkfifo(p)
    torch_quantizer("calib", ctx.model, (ctx.x1,), quant_config_file=str(p),
                    output_dir=str(ctx.out()))


@case("config_dev_zero", "`quant_config_file='/dev/zero'` (endless)", ConfigError,
      culprit=["/dev/zero", "not a regular file"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), quant_config_file="/dev/zero",
                    output_dir=str(ctx.out()))


@case("calib_empty_batch", "a calibration batch with 0 samples", InputError,
      culprit=["0 samples", "(0, 3, 8, 8)"])
def _(ctx):
    q = torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.out()))
    q.quant_model(ctx.x[:0])


@case("output_dir_is_a_file", "`output_dir` names an existing file", OutputError,
      culprit=["taken", "a file of that name exists"])
def _(ctx):
    f = ctx.file("taken", "x")
    torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(f))


@case("output_dir_under_a_file", "`output_dir` inside a path that is a file", OutputError,
      culprit=["plain/sub", "Not a directory"])
def _(ctx):
    f = ctx.file("plain", "x")
    torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(f / "sub"))


@case("output_dir_name_too_long", "`output_dir` with a 300-character name", OutputError,
      culprit=["File name too long"])
def _(ctx):
    torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.base() / ("a" * 300)))


@case("output_disk_full", "the disk fills up while `export_quant_config()` writes", OutputError,
      culprit=["quantize_result/bias_corr.pth", "No space left on device"])
def _(ctx):
    import errno
    import os
    q = torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.out()))
    q.quant_model(ctx.x)
    with mock.patch("nndct_lite.state.files.os.fsync",
                    side_effect=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))):
        q.export_quant_config()


class _Locked(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        import threading
        self.inner = inner
        self.lock = threading.Lock()

    def forward(self, x):
        return self.inner(x)


@case("model_holds_a_lock", "a model holding a `threading.Lock` (cannot be deep-copied)",
      InputError, culprit=["_Locked cannot be copied", "lock"])
def _(ctx):
    torch_quantizer("calib", _Locked(ctx.model), (ctx.x1,), output_dir=str(ctx.out()))


@case("model_float64", "a float64 model and input", InputError, culprit=["float64", "model.float()"])
def _(ctx):
    torch_quantizer("calib", copy.deepcopy(ctx.model).double(), (ctx.x1.double(),),
                    output_dir=str(ctx.out()))


# ---- numeric inputs that are reported, not raised
@case("calib_nan_inf", "NaN and +-Inf in a calibration batch", Warning,
      code="QUANTIZER_TORCH_TENSOR_VALUE_INVALID", culprit=["Net::input_0", "NaN/Inf"],
      warning=True)
def _(ctx):
    x = ctx.x.clone()
    x[0, 0, 3, 3] = float("nan")
    x[1, 1, 1, 1] = float("inf")
    q = torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.out()))
    q.quant_model(x)
    q.export_quant_config()


@case("calib_denormal", "calibration data of magnitude 1e-40", Warning, code="",
      culprit=["Net::input_0", "3.7e-37"], warning=True)
def _(ctx):
    q = torch_quantizer("calib", ctx.model, (ctx.x1,), output_dir=str(ctx.out()))
    q.quant_model(ctx.x * 1e-40)
    q.export_quant_config()


# ---------------------------------------------------------------------------------- running
class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _warnings_of_nndct():
    h = _Records()
    lg = logging.getLogger("nndct_lite")
    logging.disable(logging.NOTSET)
    old = {n: (logging.getLogger(n).level, logging.getLogger(n).disabled)
           for n in list(logging.root.manager.loggerDict) if n.startswith("nndct_lite")}
    for n in old:       # other tests (benchmark scripts, the CLI) may have set levels
        logging.getLogger(n).setLevel(logging.NOTSET)
        logging.getLogger(n).disabled = False
    lg.setLevel(logging.WARNING)
    lg.addHandler(h)
    try:
        yield h.messages
    finally:
        lg.removeHandler(h)
        for n, (level, disabled) in old.items():
            logging.getLogger(n).setLevel(level)
            logging.getLogger(n).disabled = disabled


def observe(c: Case, ctx: Ctx):
    """Run a case: (exception or None, warnings logged)."""
    ctx.case_id = c.id
    with _warnings_of_nndct() as logged:
        try:
            c.run(ctx)
        except Exception as exc:   # noqa: BLE001 - we want to see everything the user would see
            return exc, logged
    return None, logged


def normalise(text: str, ctx: Ctx) -> str:
    """Paths relative to the case's folder (or the repository), no ANSI colours, no addresses."""
    text = re.sub(re.escape(str(ctx.tmp)) + r"/case_[^/\s]+/", "", text)
    text = re.sub(re.escape(str(ctx.tmp)) + r"/case_[^/\s]+", ".", text)
    text = text.replace(str(ctx.tmp), "<tmp>").replace(str(ROOT) + "/", "")
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return re.sub(r"0x[0-9a-f]{6,}", "0x...", text)


def shown(exc: BaseException | None, logged: list[str], c: Case, ctx: Ctx) -> tuple[str, str, str]:
    """(class, code, text) as the doc shows them."""
    if exc is None:
        if c.warning:
            hits = [m for m in logged if c.code in m and all(p in m for p in c.culprit)]
            hits = hits or [m for m in logged if any(p in m for p in c.culprit)] or logged
            code = c.code if c.code and hits and c.code in hits[0] else "-"
            return "warning (logged)", code, normalise(hits[0], ctx) if hits else \
                "(nothing logged)"
        return "no error", "-", "(nothing raised" + (", nothing logged)" if not logged else
                                                    f"; logged: {normalise(logged[0], ctx)})")
    cls = type(exc)
    name = cls.__name__ if cls.__module__.startswith("nndct_lite") else \
        f"{cls.__module__}.{cls.__name__}".replace("builtins.", "")
    if isinstance(exc, NndctError):
        lines = [f"[{exc.code}] {exc.message.splitlines()[0]}"]
        if exc.where:
            lines.append(f"  where: {exc.where}")
        if exc.hint:
            lines.append(f"  what to do: {exc.hint.splitlines()[0]}")
        return name, exc.code, normalise("\n".join(lines), ctx)
    return name, "-", normalise(str(exc).splitlines()[0] if str(exc) else repr(exc), ctx)


_OBSERVED: dict[str, tuple[str, str, str]] = {}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("bad_input"))


def _param(c: Case):
    marks = [pytest.mark.xfail(strict=True, reason=f"gap: {c.gap}")] if c.gap else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("c", [_param(c) for c in CASES])
def test_bad_input(c: Case, ctx: Ctx):
    exc, logged = observe(c, ctx)
    _OBSERVED[c.id] = shown(exc, logged, c, ctx)
    if c.warning:
        assert exc is None, f"expected a warning, got {type(exc).__name__}: {exc}"
        hits = [m for m in logged if c.code in m and all(p in m for p in c.culprit)]
        assert hits, f"no warning with code {c.code!r} naming {c.culprit}; logged: {logged}"
        return
    assert exc is not None, "the bad input was accepted silently"
    assert isinstance(exc, c.expect), f"expected {c.expect.__name__}, got " \
                                      f"{type(exc).__name__}: {exc}"
    assert exc.code == c.code
    text = str(exc)
    for part in c.culprit:
        assert part in text, f"the message does not name {part!r}:\n{text}"
    assert exc.hint and "what to do:" in text, f"no hint (what to do) in:\n{text}"
    assert text.startswith(f"[{c.code}] ")
    assert exc.__traceback__ is not None


def test_every_error_class_is_an_nndct_error_and_a_value_error():
    for cls in (ConfigError, TraceError, CalibrationError, QuantInfoError, ExportError, ModeError,
                InputError, OutputError):
        assert issubclass(cls, NndctError) and issubclass(cls, ValueError)
        assert cls.code.startswith(("QUANTIZER_TORCH_", "NNDCT_LITE_"))


def test_batch_size_above_one_does_not_block_deploy(ctx):
    """decisions.md 9: exports trace their own batch-1 pass, whatever batch the user ran."""
    from nndct_lite.xmodel.reader import read_xmodel
    ctx.case_id = "deploy_batch8"
    d = ctx.calibrated()
    qt = torch_quantizer("test", ctx.model, (ctx.x,), output_dir=str(d))   # batch-8 example
    y = qt.quant_model(ctx.x)                                              # batch-8 forward
    g = read_xmodel(qt.export_xmodel(output_dir=str(d)))
    data = [op for op in g.ops if op.type in ("data", "data-fix")]
    assert [list(op.output.shape) for op in data] == [[1, 8, 8, 3]]
    script = qt.export_torch_script(output_dir=str(d))
    with torch.no_grad():
        assert torch.equal(script(ctx.x[:3]), qt.quant_model(ctx.x[:3]))
        assert torch.equal(qt.quant_model(ctx.x), y)
    assert Path(qt.export_onnx_model(output_dir=str(d))).is_file()


# ---------------------------------------------------------------------------------- the doc
_HEAD = """# Errors: what a bad input looks like

nndct_lite raises one exception hierarchy (`nndct_lite/errors.py`); it never exits and never
returns silently (only the command-line tool turns errors into exit codes). Every class subclasses `NndctError`, itself a `ValueError`, so
`except ValueError` in existing scripts keeps working:

| class | default code | raised for |
|---|---|---|
| `NndctError` | `NNDCT_ERROR` | base class; catch this to catch them all |
| `ModeError` | `QUANTIZER_TORCH_MODE` | an unknown `quant_mode`, or an operation the mode does not allow |
| `InputError` | `QUANTIZER_TORCH_INPUT` | a bad argument: `module`, `input_args`, `device`, `state_dict_file` ... |
| `ConfigError` | `QUANTIZER_TORCH_QUANT_CONFIG` | the config file or a config argument (`bitwidth`) |
| `TraceError` | `QUANTIZER_TORCH_PYTORCH_TRACE` | the model cannot be traced or run on `input_args` |
| `CalibrationError` | `QUANTIZER_TORCH_NO_CALIBRATION` | calibration state: nothing forwarded yet |
| `QuantInfoError` | `QUANTIZER_TORCH_CALIB_RESULT_MISMATCH` | `quantize_result/` missing, corrupted or from another model |
| `ExportError` | `QUANTIZER_TORCH_EXPORT` | a deploy export cannot be produced |
| `OutputError` | `NNDCT_LITE_OUTPUT` | an output folder or file cannot be created or written (a file in the way, read-only, name too long, disk full); `.errno` holds the OS error code |

Each message reads

    [CODE] what is wrong
      where: the argument, file, file:line:column, JSON pointer or node name
      what to do: the next step

and the exception keeps the three parts as `exc.message`, `exc.where`, `exc.hint` (and
`exc.code`). Numeric problems in calibration data (NaN, Inf, magnitudes below float32's range)
are not errors: they are logged as warnings naming the node and kept out of the scales (the
`calib_*` rows).

The table below is generated by running each bad input (`tests/reliability/test_bad_input.py`,
which also checks every row): `quantize_result/` is the case's output directory. Only the first
line of a message quoted from torch (2.14) is shown. A row marked **gap** is a known shortcoming
that the test suite tracks as an expected failure; the row shows what users see today.
Regenerate with `python tests/reliability/test_bad_input.py`.

| case | bad input | class | code | what the user sees | status |
|---|---|---|---|---|---|
"""


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", "<br>")


def render(observed: dict[str, tuple[str, str, str]]) -> str:
    rows = []
    for c in CASES:
        cls, code, text = observed[c.id]
        status = f"**gap**: {_cell(c.gap)}" if c.gap else "ok"
        rows.append(f"| `{c.id}` | {c.bad_input} | `{cls}` | `{code}` | "
                    f"<code>{_cell(text)}</code> | {status} |")
    return _HEAD + "\n".join(rows) + "\n"


def _comparable(doc: str) -> str:
    """Line numbers aside; for gap rows only class, code and status (what users see there is a
    raw exception whose text depends on the machine, e.g. the CUDA driver message)."""
    out = []
    for line in re.sub(r"\.py:\d+", ".py:N", doc).splitlines():
        if "| **gap**:" in line:
            line = re.sub(r"<code>.*</code>", "<code>...</code>", line)
        out.append(line)
    return "\n".join(out)


def test_errors_doc_is_current(ctx):
    """docs/errors.md shows exactly what these cases produce (line numbers aside)."""
    for c in CASES:
        if c.id not in _OBSERVED:
            exc, logged = observe(c, ctx)
            _OBSERVED[c.id] = shown(exc, logged, c, ctx)
    expected = render(_OBSERVED)
    assert DOC.is_file(), "docs/errors.md is missing: python tests/reliability/test_bad_input.py"
    actual = DOC.read_text(encoding="utf-8")
    if _comparable(actual) != _comparable(expected):
        import difflib
        diff = "\n".join(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                              "docs/errors.md", "observed", lineterm="", n=0))
        pytest.fail("docs/errors.md is out of date; regenerate it with "
                    f"`python tests/reliability/test_bad_input.py`:\n{diff[:4000]}")


def main() -> int:
    logging.getLogger("nndct_lite").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Ctx(Path(tmp))
        observed = {}
        for c in CASES:
            exc, logged = observe(c, ctx)
            observed[c.id] = shown(exc, logged, c, ctx)
    DOC.write_text(render(observed), encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
