"""Real-data evidence for QAT: scikit-learn's handwritten digits (real 8x8 images, shipped with
scikit-learn), a small CNN, 4-bit DPU quantization. PTQ loses accuracy at 4 bits; three epochs
of QAT win most of it back, and test mode on the deployed files gives the trained accuracy."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer
from nndct_lite.qat import QAT_CONFIG_FILE, QatProcessor

datasets = pytest.importorskip("sklearn.datasets")


def _epochs(model, X, Y, idx, n, lr):
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(n):
        model.train()
        for i in range(0, len(idx), 100):
            b = idx[i:i + 100]
            opt.zero_grad()
            F.cross_entropy(model(X[b]), Y[b]).backward()
            opt.step()
    model.eval()


@pytest.mark.slow
def test_qat_recovers_4bit_accuracy_on_digits(tmp_path):
    logging.getLogger("nndct_lite").setLevel(logging.ERROR)
    torch.manual_seed(0)
    d = datasets.load_digits()
    X = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    Y = torch.tensor(d.target)
    perm = torch.randperm(len(X))
    train, test = perm[:1400], perm[1400:]
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    _epochs(net, X, Y, train, 15, 1e-2)

    def acc(m):
        with torch.no_grad():
            return (m(X[test]).argmax(1) == Y[test]).float().mean().item()

    float_acc = acc(net)
    ptq_dir = str(tmp_path / "ptq")
    q = torch_quantizer("calib", net, (X[:1],), output_dir=ptq_dir, bitwidth=4)
    with torch.no_grad():
        q.quant_model(X[train[:500]])
    q.export_quant_config()
    ptq_acc = acc(torch_quantizer("test", net, (X[:1],), output_dir=ptq_dir,
                                  bitwidth=4).quant_model)

    qat = QatProcessor(net, (X[:1],), bitwidth=4)
    model = qat.trainable_model(calib_batches=[X[train[:500]]])
    _epochs(model, X, Y, train, 3, 1e-3)
    qat_acc = acc(model)
    out = tmp_path / "qat"
    dep = qat.to_deployable(model, out)
    t = torch_quantizer("test", dep, (X[:1],), output_dir=str(out),
                        quant_config_file=str(out / QAT_CONFIG_FILE))
    deployed_acc = acc(t.quant_model)
    print(f"float {float_acc:.4f}  ptq-4bit {ptq_acc:.4f}  qat-4bit {qat_acc:.4f}  "
          f"deployed {deployed_acc:.4f}")
    assert float_acc > 0.9
    assert deployed_acc == qat_acc
    assert qat_acc > ptq_acc + 0.05
    assert qat_acc > float_acc - 0.08
