"""The per-layer report measures on a copy: the session's modules never run for it and keep
their parameters and bias corrections."""
from __future__ import annotations

import torch
import torch.nn as nn

from nndct_lite import torch_quantizer
from nndct_lite.report import layer_report


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


def test_the_sessions_modules_never_run_for_the_report(tmp_path):
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    q = torch_quantizer("calib", _net(), (x[:1],), output_dir=str(tmp_path))
    q.quant_model(x)
    q.export_quant_config()
    s = q._session
    live = {id(m) for m in s.model.modules()}
    before = {id(m): dict(vars(m)) for m in s.model.modules()}
    ran: list[int] = []
    hook = s.model.register_forward_hook(lambda m, inp, out: ran.append(id(m)))
    try:
        rows = layer_report(s, [x[:4]])
    finally:
        hook.remove()
    assert rows and ran, "the report ran no model"
    assert not live & set(ran), "the report ran the session's own model"
    for m in s.model.modules():
        assert vars(m).keys() == before[id(m)].keys()
