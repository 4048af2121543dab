"""The generated ``<Model>.py`` frees each branch's tensor after its last reader, so that test
mode runs in about the float model's memory (issue 3: test mode within 1.5x of float)."""
from __future__ import annotations

import re

import torch
import torchvision

from nndct_lite import torch_quantizer


def _forward_lines(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    q = torch_quantizer("calib", model, (x,), output_dir=str(tmp_path))
    src = (tmp_path / "ResNet.py").read_text()
    body = src.split("def forward(self, *args):", 1)[1]
    return [ln.strip() for ln in body.splitlines() if ln.strip()], q, model, x


def test_every_deleted_name_is_dead(tmp_path):
    lines, *_ = _forward_lines(tmp_path)
    dels = [i for i, ln in enumerate(lines) if ln.startswith("del ")]
    assert len(dels) >= 8  # every residual block frees its branch and its shortcut
    for i in dels:
        for name in lines[i][4:].split(", "):
            for later in lines[i + 1:]:
                reads = later.split(" = ", 1)[-1]
                assert not re.search(rf"\b{name}\b", reads), (name, later)


def test_outputs_are_kept_and_float_mode_is_unchanged(tmp_path):
    lines, q, model, x = _forward_lines(tmp_path)
    ret = lines[-1]
    assert ret.startswith("return ")
    returned = ret[len("return "):]
    assert not any(ln.startswith("del ") and returned in ln[4:].split(", ") for ln in lines)
    gen = q.quant_model
    from nndct_lite.quant.build import set_mode
    from nndct_lite.state.modes import QuantMode
    set_mode(gen, QuantMode.FLOAT)
    with torch.no_grad():
        torch.testing.assert_close(gen(x), model(x), rtol=1e-4, atol=1e-4)
