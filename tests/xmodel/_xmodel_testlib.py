"""Shared helpers of the xmodel tests (paths to ../shared, the XIR checker, a sample graph)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nndct_lite.xmodel import XGraph, XOp, XTensor, const_op, data_op, fix_op

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT / ".." / "shared").resolve()
XIR = SHARED / "xir"
GOLDEN = SHARED / "reference" / "golden" / "resnet20"
GOLDEN_XMODEL = GOLDEN / "CifarResNet_int.xmodel"
CIFAR_TEST = SHARED / "data" / "cifar10" / "test.npz"


def need(*paths: Path):
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} is not available")


def run_xir_check(path: Path, brief: bool = False) -> subprocess.CompletedProcess:
    """Run ../shared/xir/check_xmodel.py on ``path`` in a child process (skip if unusable)."""
    need(XIR / "check_xmodel.py")
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        pytest.skip("the XIR build needs CPython 3.11")
    env = dict(os.environ)
    env["XIR_HOME"] = str(XIR)
    env["LD_LIBRARY_PATH"] = str(XIR / "lib") + (os.pathsep + env["LD_LIBRARY_PATH"]
                                                 if env.get("LD_LIBRARY_PATH") else "")
    env["PYTHONPATH"] = str(XIR / "python") + (os.pathsep + env["PYTHONPATH"]
                                               if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, str(XIR / "check_xmodel.py")] + (["--brief"] if brief else []) + [str(path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode == 2:
        pytest.skip(f"XIR is not importable here: {r.stdout[-300:]} {r.stderr[-300:]}")
    return r


def op_lines(check_output: str) -> list[str]:
    """The per-op part of check_xmodel's listing (without the file name / size line)."""
    out, on = [], False
    for line in check_output.splitlines():
        if line.startswith("op["):
            on = True
        if line.startswith("subgraph tree:"):
            on = False
        if on:
            out.append(line)
    return out


def _on_grid(rng, shape, fp, lo=-100, hi=100):
    return (rng.integers(lo, hi + 1, size=shape) * 2.0 ** -fp).astype(np.float32)


def sample_graph(seed: int = 0) -> XGraph:
    """A small graph touching the op types the exporter uses, shapes consistent with XIR."""
    rng = np.random.default_rng(seed)
    g = XGraph("sample")

    def fix(name, src, shape, fp):
        return g.add(fix_op(name, src, shape, fp))

    def wconst(name, shape, fp):
        g.add(const_op(name, _on_grid(rng, shape, fp)))
        return fix(name + "_fix", name, shape, fp)

    g.add(data_op("x", [1, 8, 8, 4]))
    fix("x_fix", "x", [1, 8, 8, 4], 5)
    wconst("w1", [8, 3, 3, 4], 7)
    wconst("b1", [8], 6)
    g.add(XOp("conv1", "conv2d", {"kernel": [3, 3], "stride": [1, 1], "dilation": [1, 1],
                                  "pad": [1, 1, 1, 1], "pad_mode": "FLOOR", "group": 1,
                                  "bias_term": True, "in_dim": 4, "out_dim": 8},
              {"input": ["x_fix"], "weights": ["w1_fix"], "bias": ["b1_fix"]},
              XTensor("conv1", (1, 8, 8, 8))))
    g.add(XOp("relu1", "relu", {}, {"input": ["conv1"]}, XTensor("relu1", (1, 8, 8, 8))))
    fix("relu1_fix", "relu1", [1, 8, 8, 8], 4)
    wconst("wd", [1, 3, 3, 8], 6)
    g.add(XOp("dw", "depthwise-conv2d", {"kernel": [3, 3], "stride": [2, 2], "pad": [1, 1, 1, 1],
                                         "pad_mode": "FLOOR"},
              {"input": ["relu1_fix"], "weights": ["wd_fix"]}, XTensor("dw", (1, 4, 4, 8))))
    g.add(XOp("lrelu", "leaky-relu", {"alpha": 26 / 256}, {"input": ["dw"]},
              XTensor("lrelu", (1, 4, 4, 8))))
    fix("lrelu_fix", "lrelu", [1, 4, 4, 8], 4)
    g.add(XOp("ap_i0", "avgpool2d", {"kernel": [3, 3], "stride": [1, 1], "pad": [1, 1, 1, 1],
                                     "pad_mode": "FLOOR", "global": False,
                                     "count_include_pad": True, "count_include_invalid": True},
              {"input": ["lrelu_fix"]}, XTensor("ap_i0", (1, 4, 4, 8))))
    g.add(const_op("ap_i1", np.array([63 / 64], np.float32)))
    g.add(XOp("ap", "mul", {}, {"input": ["ap_i0", "ap_i1"]}, XTensor("ap", (1, 4, 4, 8))))
    fix("ap_fix", "ap", [1, 4, 4, 8], 5)
    g.add(XOp("add", "add", {}, {"input": ["ap_fix", "lrelu_fix"]}, XTensor("add", (1, 4, 4, 8))))
    fix("add_fix", "add", [1, 4, 4, 8], 4)
    g.add(XOp("hsw", "hard-swish", {}, {"input": ["add_fix"]}, XTensor("hsw", (1, 4, 4, 8))))
    fix("hsw_fix", "hsw", [1, 4, 4, 8], 4)
    g.add(XOp("hsg", "hard-sigmoid", {}, {"input": ["add_fix"]}, XTensor("hsg", (1, 4, 4, 8))))
    fix("hsg_fix", "hsg", [1, 4, 4, 8], 7)
    g.add(XOp("cat", "concat", {"axis": -1}, {"input": ["hsw_fix", "hsg_fix"]},
              XTensor("cat", (1, 4, 4, 16))))
    fix("cat_fix", "cat", [1, 4, 4, 16], 4)
    g.add(XOp("mp", "maxpool2d", {"kernel": [2, 2], "stride": [2, 2], "pad_mode": "FLOOR"},
              {"input": ["cat_fix"]}, XTensor("mp", (1, 2, 2, 16))))
    fix("mp_fix", "mp", [1, 2, 2, 16], 4)
    wconst("wt", [4, 2, 2, 16], 7)
    g.add(XOp("up", "transposed-conv2d", {"kernel": [2, 2], "stride": [2, 2], "pad": [0, 0, 0, 0],
                                          "pad_mode": "FLOOR"},
              {"input": ["mp_fix"], "weights": ["wt_fix"]}, XTensor("up", (1, 4, 4, 4))))
    fix("up_fix", "up", [1, 4, 4, 4], 3)
    g.add(XOp("rs", "resize", {"mode": "NEAREST", "scale": [2.0, 2.0]}, {"input": ["up_fix"]},
              XTensor("rs", (1, 8, 8, 4))))
    g.add(XOp("sl", "strided_slice", {"begin": [0, 1, 0, 0], "end": [1, 7, 8, 4],
                                      "strides": [1, 2, 2, 1]}, {"input": ["rs"]},
              XTensor("sl", (1, 3, 4, 4))))
    g.add(XOp("pd", "pad", {"paddings": [0, 0, 1, 0, 0, 0, 2, 2], "mode": "CONSTANT",
                            "constant_values": [0.0] * 8}, {"input": ["sl"]},
              XTensor("pd", (1, 4, 4, 8))))
    fix("pd_fix", "pd", [1, 4, 4, 8], 3)
    g.add(XOp("gap", "avgpool2d", {"kernel": [4, 4], "stride": [4, 4], "pad_mode": "FLOOR",
                                   "global": True}, {"input": ["pd_fix"]},
              XTensor("gap", (1, 1, 1, 8))))
    fix("gap_fix", "gap", [1, 1, 1, 8], 5)
    g.add(XOp("flat", "reshape", {"shape": [1, 8]}, {"input": ["gap_fix"]}, XTensor("flat", (1, 8))))
    wconst("fc_w", [3, 8], 7)
    wconst("fc_b", [3], 7)
    g.add(XOp("fc", "matmul", {"transpose_a": False, "transpose_b": True},
              {"input": ["flat", "fc_w_fix"], "bias": ["fc_b_fix"]}, XTensor("fc", (1, 3))))
    fix("fc_fix", "fc", [1, 3], 4)
    return g
