"""Issue 14: the default config reproduces vai_q_pytorch 3.5 on ResNet-20, number for number.

The goldens are read from ../shared at run time (never copied into the repository); every test
skips when ../shared is absent. The protocol is the golden README's: calibrate on the first 1000
calib images in 10 batches of 100, in order; then test mode on a fresh model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from shared_paths import GOLDEN, XIR, golden_model_module, need

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    gm = golden_model_module()
    from nndct_lite import torch_quantizer
    out = tmp_path_factory.mktemp("golden_qr")
    torch.set_num_threads(2)
    x, _ = gm.cifar("calib", 1000)
    q = torch_quantizer("calib", gm.resnet20(), (x[:1],), output_dir=str(out))
    with torch.no_grad():
        for i in range(10):
            q.quant_model(x[i * 100:(i + 1) * 100])
    q.export_quant_config()
    qt = torch_quantizer("test", gm.resnet20(), (x[:1],), output_dir=str(out))
    return gm, out, q, qt


def _golden(name):
    return need(GOLDEN / name)


def test_every_fix_position_matches(calibrated):
    gm, out, q, _ = calibrated
    ours = json.loads((out / "quant_info.json").read_text())
    gold = json.loads(_golden("quant_info.json").read_text())
    graph = q.graph
    diffs = []
    for key, entry in gold["param"].items():
        if ours["param"].get(key) != entry:
            diffs.append(f"param {key}: original {entry}, ours {ours['param'].get(key)} "
                         "(diffs search, std_round, calibrated on the first batch)")
    for key, entry in gold["output"].items():
        node = graph.by_name(key)          # golden keys are normalized names (3.5)
        got = ours["output"].get(node.name)
        if got != entry:
            diffs.append(f"output {node.name} ({key}): original {entry}, ours {got} "
                         "(diffs per batch, half_up, mode over batches, DPU shift rules)")
    assert len(gold["param"]) == 40 and len(gold["output"]) == 33
    assert len(ours["param"]) == 40 and len(ours["output"]) == 33
    assert not diffs, "\n".join(diffs)


def test_bias_corrections_match(calibrated):
    gm, out, q, _ = calibrated
    ours = torch.load(out / "bias_corr.pth", weights_only=True)
    gold = json.loads(_golden("bias_corr.json").read_text())
    worst = 0.0
    for key, corr in gold.items():
        node = q.graph.by_name(key)
        mine = ours[node.name]
        assert (corr is None) == (mine is None), node.name
        if corr is not None:
            worst = max(worst, float(np.abs(np.asarray(corr) - np.asarray(mine)).max()))
    assert worst <= 1e-5, f"largest per-channel difference {worst:.3g}"


def test_test_mode_logits_match(calibrated):
    gm, _, _, qt = calibrated
    x, _ = gm.cifar("test", 500)
    with torch.no_grad():
        ours = torch.cat([qt.quant_model(x[i:i + 100]) for i in range(0, 500, 100)]).numpy()
    gold = np.load(_golden("test_logits_first500.npy"))
    step = 2.0 ** -1   # the logits' fix position is 1 (dense_54 in quant_info.json)
    assert (ours == gold).mean() >= 0.999
    assert np.abs(ours - gold).max() <= step


@pytest.mark.slow
def test_top1_on_all_test_images(calibrated):
    gm, _, _, qt = calibrated
    x, y = gm.cifar("test")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 500):
            correct += (qt.quant_model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum().item()
    acc = 100.0 * correct / len(y)
    assert abs(acc - 91.63) <= 0.05, acc


def test_simulator_runs_the_original_xmodel(calibrated):
    gm, *_ = calibrated
    from nndct_lite.sim import simulate
    x, _ = gm.cifar("test", 500)
    out = simulate(str(_golden("CifarResNet_int.xmodel")), x.numpy())
    out = np.asarray(out if not isinstance(out, dict) else next(iter(out.values())))
    gold = np.load(_golden("test_logits_first500.npy"))
    assert (out == gold).mean() >= 0.999
    assert np.abs(out - gold).max() <= 0.5


def _structural_diff(ours, gold) -> list[str]:
    """Match the two graphs from their outputs backwards (names differ on purpose)."""
    from nndct_lite.xmodel.model import const_data
    diffs, seen = [], {}

    def walk(a, b):
        if a.name in seen:
            if seen[a.name] != b.name:
                diffs.append(f"{a.name} matched twice ({seen[a.name]}, {b.name})")
            return
        seen[a.name] = b.name
        if a.type != b.type:
            diffs.append(f"{a.name}: type {a.type} vs original {b.type} ({b.name})")
            return
        if a.type == "fix":
            for k in ("fix_point", "bit_width"):
                if a.attr(k) != b.attr(k):
                    diffs.append(f"{a.name}: {k} {a.attr(k)} vs original {b.attr(k)}")
        if a.type == "const" and a.attr("data") != b.attr("data"):
            da, db = const_data(a), const_data(b)
            diffs.append(f"{a.name}: const data differs (max |diff| "
                         f"{np.abs(da.astype(np.float64) - db).max() if da.shape == db.shape else 'shape'})")
        if tuple(a.shape) != tuple(b.shape):
            diffs.append(f"{a.name}: shape {a.shape} vs original {b.shape}")
        for arg in sorted(set(a.inputs) | set(b.inputs)):
            xa, xb = a.inputs.get(arg, []), b.inputs.get(arg, [])
            if len(xa) != len(xb):
                diffs.append(f"{a.name}: argument {arg} has {len(xa)} inputs vs {len(xb)}")
                continue
            for na, nb in zip(xa, xb):
                walk(ours.op(na), gold.op(nb))

    for a, b in zip(ours.output_ops(), gold.output_ops()):
        walk(a, b)
    if len(seen) != len(ours.ops) or len(ours.ops) != len(gold.ops):
        diffs.append(f"op counts: ours {len(ours.ops)}, matched {len(seen)}, original {len(gold.ops)}")
    return diffs


def test_our_xmodel_matches_the_original_op_by_op(calibrated, tmp_path):
    gm, out, _, qt = calibrated
    from nndct_lite.xmodel.reader import read_xmodel
    x, _ = gm.cifar("test", 1)
    qt.quant_model(x)
    path = qt.export_xmodel(output_dir=str(tmp_path))
    ours, gold = read_xmodel(path), read_xmodel(_golden("CifarResNet_int.xmodel"))
    ours.check_topological()
    diffs = _structural_diff(ours, gold)
    assert not diffs, "\n".join(diffs)
    need(XIR / "check_xmodel.py")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{XIR / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    env["PYTHONPATH"] = f"{XIR / 'python'}:{env.get('PYTHONPATH', '')}"
    r = subprocess.run([sys.executable, str(XIR / "check_xmodel.py"), "--brief", str(path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
