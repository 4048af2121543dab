"""Smoke test of the benchmark scripts in bench/: they import, and their smallest configurations
run end to end on synthetic data (random weights and images; no ../shared needed). No timing is
asserted; only that the numbers they report exist and are sane."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # one thread: timings do not matter here, and on a loaded machine two OpenMP threads
    # spin-wait for each other on every small op (10x the wall time seen)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def peers():
    mod = _load("compare_peers")
    mod.quiet()
    return mod


@pytest.fixture(scope="module")
def bq():
    mod = _load("bench_quantizer")
    mod.quiet()
    return mod


def test_cifar_models_shapes():
    cm = _load("cifar_models")
    for name in ("resnet20", "shufflenetv2_x0_5"):
        model, pretrained = cm.load_model(name, pretrained=False)
        assert not pretrained
        x, y = cm.synthetic_cifar("test", 4, name)
        with torch.no_grad():
            assert model(x).shape == (4, 10)
    sd = cm.ShuffleNetV2().state_dict()
    assert sum(v.numel() for k, v in sd.items() if "num_batches" not in k and "running" not in k) \
        == 352_042
    assert "stage2.0.branch1.2.weight" in sd and "stage3.1.branch2.5.weight" in sd
    assert sum(1 for m in cm.ShuffleNetV2().modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1) == 19


def test_channel_shuffle_interleaves():
    cm = _load("cifar_models")
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert cm.channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("key", ["float", "ao_pc", "ao_w4a8", "nd_dpu", "nd_cpu_pc"])
def test_compare_peers_smallest(peers, key, tmp_path):
    r = peers.run_config("resnet20", key, n_calib=8, n_test=8, bs=4, ref_every=1,
                         synthetic=True, workdir=str(tmp_path))
    assert r["config"] == key and not r["real_data"]
    assert 0.0 <= r["top1"] <= 100.0
    assert r["eval_s"] > 0 and r["peak_rss_mib"] > 0
    if key != "float":
        assert r["calib_ratio"] > 0 and math.isfinite(r["eval_ratio"])


def test_compare_peers_report(peers, tmp_path):
    rows = []
    for k in ("float", "ao_pc", "nd_dpu"):
        (tmp_path / k).mkdir()
        rows.append(peers.run_config("resnet20", k, n_calib=4, n_test=4, bs=4, synthetic=True,
                                     workdir=str(tmp_path / k)))
    args = SimpleNamespace(n_calib=4, n_test=4, batch_size=4, repeats=1, ref_every=2,
                           synthetic=True)
    out = tmp_path / "peers.md"
    text = peers.write_doc(out, {"resnet20": rows}, ["--quick"], "test machine", args, 1.0)
    assert out.read_text() == text
    assert "| float (FP32) |" in text and "DPU default within 0.3 pt" in text


def test_bench_quantizer_smallest(bq):
    g = bq.run_workload("golden", n_calib=8, n_test=8, calib_bs=4, test_bs=4, synthetic=True)
    assert g["calib_s"] > 0 and g["test_eval_s"] > 0
    assert g["calib_ratio_same"] > 0 and g["test_ratio"] > 0 and g["calib_ratio_vs_test"] > 0
    # the ResNet-50 workload quantizes 53 convs (~10 s even at 32x32): only its inputs here
    make, xc, xt, yt, real = bq._resnet50_and_data(1, 32)
    assert not real and xc.shape == (1, 3, 32, 32) and xt is xc
    r = dict(g, workload="resnet50")
    args = SimpleNamespace(repeats=1, r50_size=32)
    text = bq.report({"golden": [g], "resnet50": [r]}, {"golden": {"peak_rss_mib": 1.0}}, [],
                     "test machine", args, 1.0, None)
    assert "Golden protocol" in text and "ResNet-50" in text and "≤ 0.3×" in text


def test_bench_qat_quick(tmp_path):
    """bench/bench_qat.py --quick (issue 23): every row, the deployed model and its exports, on
    synthetic data; no accuracy or timing asserted."""
    import json
    mod = _load("bench_qat")
    out, doc = tmp_path / "r.json", tmp_path / "r.md"
    assert mod.main(["--quick", "--models", "resnet20", "--json", str(out),
                     "--doc", str(doc)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    for key in ("float_top1", "ptq_top1", "ft_top1"):
        assert 0 <= r[key] <= 100
    assert r["float_epoch_s"] > 0
    assert r["qat"]["deployed_equals_trained"] is True
    assert r["qat"]["exports"] == {"onnx": "ok", "torchscript": "ok"}
    assert "error" not in r["ao"] and 0 <= r["ao"]["top1"] <= 100
    text = doc.read_text()
    assert "our QAT (LSQ" in text and "torch.ao QAT" in text and "Floor" in text
