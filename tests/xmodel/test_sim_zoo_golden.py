"""Issue 21: our simulator runs the original vai_q_pytorch's xmodels of three timm models
(../shared/reference/golden/zoo, see its README) and reproduces the original's test-mode logits.

The xmodels contain the CPU ops ``aten::mean`` (squeeze-excite) and ``aten::silu_`` (tinynet),
the original's hard-swish / hard-sigmoid decomposition (hard-sigmoid -> mul by 8193/8192 -> fix),
NCHW <-> NHWC transposes around the CPU ops, and stack / reshape shape plumbing.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest

from nndct_lite.sim import Simulator
from nndct_lite.xmodel import read_xmodel

from shared_paths import SHARED, need

ZOO = SHARED / "reference" / "golden" / "zoo"
MODELS = {"mobilenetv3_small_050": "MobileNetV3", "tinynet_e": "EfficientNet",
          "ghostnet_050": "GhostNet"}


def _files(folder: str):
    d = need(ZOO / folder)
    return (need(d / f"{MODELS[folder]}_int.xmodel"), need(d / "test.npy"),
            need(d / "test_logits.npy"))


@pytest.mark.parametrize("folder", sorted(MODELS))
def test_original_xmodel_matches_original_test_logits(folder):
    xmodel, test, logits = _files(folder)
    sim = Simulator(xmodel)
    x = np.load(test).astype(np.float32)
    x = x.reshape(-1, *x.shape[-3:])            # 8 inputs, NCHW float (the xmodel is NHWC)
    ref = np.load(logits).reshape(len(x), -1)   # the original's logits at batch 1
    out = sim(x, layout="NCHW")
    assert out.shape == ref.shape == (8, 10)
    bw, fp = sim.output_fix()
    step = 2.0 ** -fp
    assert np.abs(ref).max() > 4 * step, "degenerate reference: logits are all ~0"
    same = float(np.mean(out == ref))
    assert same >= 0.99, f"{folder}: only {same:.2%} of the logits are identical"
    assert np.abs(out - ref).max() <= step, f"{folder}: a logit is more than one step {step} off"
    # batch 1 gives the same numbers as the batch of 8
    one = np.concatenate([sim(x[i:i + 1], layout="NCHW") for i in range(2)])
    assert np.array_equal(one, out[:2])


@pytest.mark.parametrize("folder", sorted(MODELS))
def test_original_xmodel_op_types_are_all_simulated(folder):
    xmodel, _, _ = _files(folder)
    g = read_xmodel(xmodel)
    types = collections.Counter(op.type for op in g)
    assert "aten::mean" in types
    sim = Simulator(g)
    x = np.load(ZOO / folder / "test.npy").astype(np.float32)
    sim(x.reshape(-1, *x.shape[-3:])[:1], layout="NCHW")
    # only the CPU ops (and ops fed by them before their fix) run in float
    cpu = {op.name for op in g if op.type.startswith("aten::")}
    assert cpu and cpu <= set(sim.float_ops)
