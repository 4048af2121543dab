"""AdaRound (issue 24): the rectified sigmoid and its start, the β schedule, and on real layers of
both grids: hard rounding leaves every weight on the calibrated grid, one of the two grid values
around its float value, and the layer's reconstruction error does not grow."""
from __future__ import annotations


import pytest
import torch

from algo_helpers import PLAIN, W4A8, forward_batches, write_config
from test_gptq import _float_weight, data, net
from nndct_lite import torch_quantizer
from nndct_lite.algorithms import adaround
from nndct_lite.algorithms.adaround import (AdaroundOptions, AdaroundTuner,
                                            initial_v, rectified_sigmoid)
from nndct_lite.algorithms.fast_finetune import FinetuneOptions, fast_finetune
from nndct_lite.algorithms.grid import weight_grid

QUICK = AdaroundOptions(iters=60, batch_size=8)


def test_rectified_sigmoid_starts_at_the_weights_position():
    rest = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.9, 0.999])
    torch.testing.assert_close(rectified_sigmoid(initial_v(rest)), rest, atol=1e-5, rtol=0)
    # the stretch makes 0 and 1 reachable with a finite V, and h(0) = 1/2
    assert rectified_sigmoid(torch.tensor([-20.0, 0.0, 20.0])).tolist() == [0.0, 0.5, 1.0]


def test_beta_schedule():
    opts = AdaroundOptions(iters=100, warmup=0.2)
    assert adaround._beta(opts, 0) is None and adaround._beta(opts, 19) is None
    assert adaround._beta(opts, 20) == pytest.approx(20.0)
    assert adaround._beta(opts, 60) == pytest.approx(11.0)
    assert adaround._beta(opts, 100) == pytest.approx(2.0)


def _run(tmp_path, cfg, opts=QUICK):
    x = data()
    full = {**(cfg or {}), **PLAIN, "fast_finetune_method": "adaround"}
    q = torch_quantizer("calib", net(), (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, full))
    fast_finetune(q._session, forward_batches, (q.quant_model, x, 16),
                  FinetuneOptions(adaround=opts))
    return q, x


@pytest.mark.parametrize("cfg", [None, W4A8], ids=["dpu_pof2_per_tensor", "w4_float_per_channel"])
def test_hard_rounding_gives_grid_values_next_to_the_float_weight(tmp_path, cfg):
    q, _ = _run(tmp_path, cfg)
    n = 0
    for name, mod in q.quant_model.named_modules():
        grid = weight_grid(mod)
        if grid is None:
            continue
        n += 1
        w = mod.weight.detach()
        assert torch.equal(grid.snap(w), w), name
        wf = _float_weight(mod)
        low = torch.floor(wf / grid.step) * grid.step
        lo_v = grid.snap(low)
        hi_v = grid.snap(low + grid.step)
        # down or up (a clamped code may make both the same value)
        assert bool(((w == lo_v) | (w == hi_v)).all()), name
        if cfg is None:
            fp = grid.quantizer.params.fix_pos
            assert torch.equal(w * 2.0 ** fp, torch.round(w * 2.0 ** fp)), name
    assert n == 4


def test_reconstruction_error_does_not_grow(tmp_path, caplog):
    """The tuner's own before/after numbers: the learned rounding reconstructs the float output
    at least as well as rounding to nearest on the cached inputs (checked per layer)."""
    import logging
    caplog.set_level(logging.DEBUG, logger="nndct_lite")
    _run(tmp_path, W4A8, AdaroundOptions(iters=200, batch_size=16))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("adaround ")]
    assert len(lines) == 4
    pairs = [tuple(float(v) for v in m.split("error ")[1].split(" (rounding to nearest) -> "))
             for m in lines]
    assert sum(a for _, a in pairs) < sum(b for b, _ in pairs)


def test_tuner_requires_float_targets():
    with pytest.raises(ValueError, match="float model"):
        AdaroundTuner()(0, "x", None, None, None, torch.zeros(1), None)
