"""Two calibrations of the same model on the same data, in two separate Python processes (other
hash seeds, other output folders, other working directories, 1 and 2 torch threads), produce
byte-identical ``quant_info.json``, ``<Model>.py``, ``resolved_config.json``, ``report.json`` and
XModel, and the same ``bias_corr.pth`` contents. Both the default DPU flow (CLE, bias correction, power-of-two
``diffs``) and a CPU float-scale flow with histogram methods are run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

CPU_CONFIG = {
    "target_device": "CPU", "include_cle": False, "include_bias_corr": True,
    "overall_quantize_config": {"scale_type": "float", "method": "entropy",
                                "calib_statistic_method": "median"},
    "tensor_quantize_config": {"weights": {"method": "maxmin", "per_channel": True},
                               "bias": {"method": "maxmin"},
                               "input": {"method": "percentile", "percentage": 99.9}},
}

CHILD = textwrap.dedent('''
    import json, sys
    import torch, torch.nn as nn, torch.nn.functional as F
    torch.set_num_threads(int(sys.argv[3]))
    from nndct_lite import torch_quantizer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.conv3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            x = F.relu(self.bn(self.conv1(x)))
            y = F.relu(self.conv2(x)) + x
            z = F.leaky_relu(self.conv3(y), 0.1)
            p = torch.cat([F.adaptive_avg_pool2d(y, 1), F.max_pool2d(z, 8)], 1)
            return self.fc(torch.flatten(p, 1))

    base, cpu_config = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():                      # a trained-looking BN
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    torch.manual_seed(1)
    data = [torch.randn(8, 3, 8, 8) * s for s in (1.0, 1.5, 0.7)]
    for name, cfg in (("dpu", None), ("cpu", cpu_config)):
        out = f"{base}/{name}/quantize_result"
        q = torch_quantizer("calib", model, (data[0][:1],), output_dir=out,
                            quant_config_file=cfg)
        for x in data:
            q.quant_model(x)
        q.export_quant_config()
        qt = torch_quantizer("test", model, (data[0][:1],), output_dir=out,
                             quant_config_file=cfg)
        qt.quant_model(data[0])
        if name == "dpu":
            qt.export_xmodel(output_dir=out)
    print("OK", flush=True)
''')


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("determinism")
    script = tmp / "child.py"
    script.write_text(CHILD)
    cfg = tmp / "cpu_config.json"
    cfg.write_text(json.dumps(CPU_CONFIG))
    procs, bases = [], []
    for i, (seed, threads) in enumerate((("0", "1"), ("4242", "2"))):
        base = tmp / f"process_{i}" / ("a" * (i + 1))
        base.mkdir(parents=True)
        env = dict(os.environ, PYTHONHASHSEED=seed, OMP_NUM_THREADS=threads,
                   MKL_NUM_THREADS=threads,
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, str(script), str(base), str(cfg), threads],
                                      cwd=str(base), env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        bases.append(base)
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "OK" in out, err[-3000:]
    return bases


def _dirs(two_runs, flow):
    return [b / flow / "quantize_result" for b in two_runs]


@pytest.mark.parametrize("flow", ["dpu", "cpu"])
def test_same_files_are_written(two_runs, flow):
    a, b = _dirs(two_runs, flow)
    names = sorted(p.name for p in a.iterdir() if p.is_file())
    assert names == sorted(p.name for p in b.iterdir() if p.is_file())
    expected = {"quant_info.json", "Net.py", "resolved_config.json", "bias_corr.pth",
                "report.json", "report.md"}
    if flow == "dpu":
        expected.add("Net_int.xmodel")
    assert expected <= set(names), names


@pytest.mark.parametrize("name", ["quant_info.json", "Net.py", "resolved_config.json",
                                  "report.json", "report.md"])
@pytest.mark.parametrize("flow", ["dpu", "cpu"])
def test_text_results_are_byte_identical(two_runs, flow, name):
    a, b = _dirs(two_runs, flow)
    ta, tb = (a / name).read_bytes(), (b / name).read_bytes()
    if ta != tb:
        import difflib
        diff = "\n".join(difflib.unified_diff(ta.decode().splitlines(), tb.decode().splitlines(),
                                              "process 0", "process 1", lineterm="", n=1))
        pytest.fail(f"{flow}/{name} differs between the two processes:\n{diff[:3000]}")


def test_quant_info_is_set_and_not_trivially_equal(two_runs):
    """Guard against comparing two empty files: every tensor got parameters."""
    info = json.loads((_dirs(two_runs, "dpu")[0] / "quant_info.json").read_text())
    entries = [e[0] for s in ("param", "output") for e in info[s].values()]
    assert len(entries) >= 10 and all(e[1] is not None for e in entries)


def test_xmodel_is_byte_identical(two_runs):
    a, b = _dirs(two_runs, "dpu")
    assert (a / "Net_int.xmodel").read_bytes() == (b / "Net_int.xmodel").read_bytes()


@pytest.mark.parametrize("flow", ["dpu", "cpu"])
def test_bias_corrections_are_identical(two_runs, flow):
    a, b = _dirs(two_runs, flow)
    ca = torch.load(a / "bias_corr.pth", weights_only=True)
    cb = torch.load(b / "bias_corr.pth", weights_only=True)
    assert list(ca) == list(cb)                      # same keys, same order
    assert ca == cb                                  # exact floats (lists) or None
    assert any(v is not None for v in ca.values())
    assert (a / "bias_corr.pth").read_bytes() == (b / "bias_corr.pth").read_bytes()


def test_outputs_do_not_depend_on_the_output_folder(two_runs):
    """Nothing of the folder (absolute path, name length) leaks into a result file."""
    for flow in ("dpu", "cpu"):
        for d in _dirs(two_runs, flow):
            for p in d.iterdir():
                if p.suffix in (".json", ".py"):
                    text = p.read_text()
                    assert str(d) not in text and "process_" not in text, p
