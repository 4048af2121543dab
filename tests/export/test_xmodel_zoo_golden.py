"""Issue 21: our XModel of the three golden timm models has the original's op types.

The zoo protocol (``../shared/reference/golden/zoo/README.md``): ``timm.create_model(name,
num_classes=10)`` + ``state_dict.pt``, calibration on ``calib.npy`` in 4 batches of 8, a fresh
test-mode quantizer on the 8 images of ``test.npy`` at batch 1, then ``export_xmodel``. The
multiset of op types (``const``, ``fix`` and ``data`` aside: their naming and count follow the
quantizer's choices, not the exporter's) must equal the original's ``<Model>_int.xmodel``, and
real XIR must load our file. Skips without ../shared or timm."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from shared_paths import SHARED, XIR, need

ZOO = SHARED / "reference" / "golden" / "zoo"
MODELS = {"mobilenetv3_small_050": "MobileNetV3", "tinynet_e": "EfficientNet",
          "ghostnet_050": "GhostNet"}
IGNORED = {"const", "fix", "data"}


def op_types(graph) -> Counter:
    return Counter(op.type for op in graph.ops if op.type not in IGNORED)


def _export(name: str, out) -> "Path":  # noqa: F821
    timm = pytest.importorskip("timm")
    from nndct_lite import torch_quantizer
    folder = need(ZOO / name)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    model.load_state_dict(torch.load(folder / "state_dict.pt", weights_only=True))
    model.eval()
    calib = torch.from_numpy(np.load(folder / "calib.npy"))
    test = torch.from_numpy(np.load(folder / "test.npy"))
    q = torch_quantizer("calib", model, (calib[:1],), device=torch.device("cpu"),
                        output_dir=str(out))
    with torch.no_grad():
        for i in range(4):
            q.quant_model(calib[8 * i:8 * (i + 1)])
    q.export_quant_config()
    q = torch_quantizer("test", model, (calib[:1],), device=torch.device("cpu"),
                        output_dir=str(out))
    with torch.no_grad():
        for i in range(test.shape[0]):
            q.quant_model(test[i:i + 1])
    return q.export_xmodel(output_dir=str(out))


def _xir_check(path) -> None:
    if not (XIR / "check_xmodel.py").is_file():
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{XIR / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    env["PYTHONPATH"] = f"{XIR / 'python'}:{env.get('PYTHONPATH', '')}"
    r = subprocess.run([sys.executable, str(XIR / "check_xmodel.py"), "--brief", str(path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_op_types_match_the_original(name, tmp_path):
    from nndct_lite.xmodel.reader import read_xmodel
    golden = need(ZOO / name / f"{MODELS[name]}_int.xmodel")
    path = _export(name, tmp_path)
    ours, gold = op_types(read_xmodel(path)), op_types(read_xmodel(golden))
    missing, extra = gold - ours, ours - gold
    assert not missing and not extra, (
        f"{name}: op types differ from the original's: missing {dict(missing)}, "
        f"extra {dict(extra)} (ours {sum(ours.values())}, original {sum(gold.values())})")
    _xir_check(path)
