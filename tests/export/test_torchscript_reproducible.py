"""The TorchScript file is byte-identical across runs and folders, and still loads."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import torch

SCRIPT = r"""
import sys, torch, torch.nn as nn
from nndct_lite import torch_quantizer
torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                  nn.Linear(4 * 6 * 6, 3)).eval()
x = torch.randn(2, 3, 8, 8)
d = sys.argv[1]
q = torch_quantizer("calib", m, (x,), output_dir=d); q.quant_model(x); q.export_quant_config()
q = torch_quantizer("test", m, (x,), output_dir=d); y = q.quant_model(x)
q.export_torch_script(output_dir=d)
torch.save({"x": x, "y": y}, d + "/io.pt")
"""


def test_torchscript_bytes_do_not_depend_on_run_or_folder(tmp_path):
    files = []
    for name in ("first", "second_run_elsewhere"):
        out = tmp_path / name
        subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True,
                       capture_output=True)
        files.append(out / "Sequential_int.pt")
    a, b = (f.read_bytes() for f in files)
    assert a == b
    names = zipfile.ZipFile(files[0]).namelist()
    assert not [n for n in names if n.endswith(".debug_pkl")]
    assert str(tmp_path).encode() not in a
    loaded = torch.jit.load(str(files[0]))
    io = torch.load(files[0].parent / "io.pt", weights_only=True)
    assert torch.equal(loaded(io["x"]), io["y"])          # the test-mode output, bit for bit
