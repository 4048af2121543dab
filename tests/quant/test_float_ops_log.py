"""Ops the DPU cannot run are summarised per op type, with counts, in one WARNING line; the
node names go to DEBUG (issue 21, "Messages")."""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from nndct_lite import torch_quantizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.n1 = nn.LayerNorm(6)
        self.n2 = nn.LayerNorm(6)

    def forward(self, x):
        return self.n2(self.n1(self.conv(x)))


def test_one_warning_line_with_counts(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="nndct_lite"):
        torch_quantizer("calib", Net().eval(), (torch.randn(1, 3, 8, 8),), output_dir=str(tmp_path))
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "stay float" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "2 op(s)" in warnings[0] and "LayerNorm x2" in warnings[0]
    assert "Net::Net/LayerNorm[n1]" not in warnings[0]          # no node list at WARNING
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
             and r.getMessage().startswith("ops that stay float")]
    assert len(debug) == 1 and "LayerNorm[n1]" in debug[0] and "LayerNorm[n2]" in debug[0]
