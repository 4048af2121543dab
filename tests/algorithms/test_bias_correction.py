"""Bias correction (numerics.md 10; T23 / Example 27, T29 / Example 27b, T32 / Example 27c).

The state machine is driven directly through ``BiasCorrector``; the file round trip
(bias_corr.pth in calib mode, reapplied in test mode) through ``torch_quantizer``.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from algo_helpers import forward_batches, layer, write_config
from nndct_lite import torch_quantizer
from nndct_lite.calib.bias_correction import BiasCorrector
from nndct_lite.errors import QuantInfoError
from nndct_lite.graph.ops import CONV_LIKE
from nndct_lite.numerics.fake_quant import fake_quantize_pof2
from nndct_lite.numerics.rounding import RoundMode

DIMS = [0, 2, 3]                   # conv2d: per output channel over batch and space


def on_grid(b):
    """A bias quantizer for a bias that already sits on its grid."""
    return b


def q7(b):
    """The bias quantizer of Example 27b: fix position 7, ties away from zero."""
    return fake_quantize_pof2(b, 7, -128, 127, RoundMode.STD_ROUND)


def conv_out(*channels) -> torch.Tensor:
    """[1, C, 1, W] from per-channel value lists."""
    return torch.tensor([[list(c)] for c in channels], dtype=torch.float64).unsqueeze(0)


# ------------------------------------------------------------------ T23 / Example 27
def test_t23_example27_first_step():
    bc = BiasCorrector()
    b_f = torch.tensor([0.5, -0.25], dtype=torch.float64)       # on its grid
    assert torch.equal(bc.current_bias(b_f, on_grid), b_f)
    out_f = conv_out([1.0, 3.0], [-2.0, 2.0])
    out_q = conv_out([1.1, 3.1], [-2.0, 1.8])
    bc.step(out_q, out_f, DIMS)
    # noise = (0.01 + 0.01 + 0 + 0.04) / 4 = 0.015; mean(out_f^2) = 18 / 4 = 4.5
    eff = 1.25 * math.log10(4.5 / 0.015)
    assert eff == pytest.approx(3.0964, abs=1e-4)
    assert bc.E == pytest.approx(eff / 5) and bc.E == pytest.approx(0.61928, abs=1e-5)
    assert bc.D == pytest.approx(eff / 5)
    assert not bc.stopped and bc.steps == 1
    # per-channel mean errors [0.1, -0.1], rate 0.05 -> bias moves by [-0.005, +0.005]
    torch.testing.assert_close(bc.current_bias(b_f, on_grid) - b_f,
                               torch.tensor([-0.005, 0.005], dtype=torch.float64))
    torch.testing.assert_close(bc.correction(), torch.tensor([0.005, -0.005],
                                                             dtype=torch.float64))


def test_correction_includes_the_grid_offset():
    """Example 27: stored = (b_f - Q(b_f)) + [0.005, -0.005] for a bias off its grid."""
    bc = BiasCorrector()
    b_f = torch.tensor([0.3, 0.1], dtype=torch.float64)
    bc.current_bias(b_f, q7)                  # Q: 38/128, 13/128
    bc.step(conv_out([1.1, 3.1], [-2.0, 1.8]), conv_out([1.0, 3.0], [-2.0, 2.0]), DIMS)
    want = (b_f - torch.tensor([38, 13], dtype=torch.float64) / 128) \
        + torch.tensor([0.005, -0.005], dtype=torch.float64)
    torch.testing.assert_close(bc.correction(), want)


def test_before_any_batch_there_is_no_correction():
    assert BiasCorrector().correction() is None


# ------------------------------------------------------------------ T29 / Example 27b
def _27b(mean_error: float) -> BiasCorrector:
    bc = BiasCorrector()
    b_f = torch.tensor([0.3], dtype=torch.float64)
    b1 = bc.current_bias(b_f, q7)
    assert float(b1) == 38 / 128 == 0.296875              # batch 1 uses Q(b_f)
    ones = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    bc.step(ones + mean_error, ones, DIMS)                # eff = 1.25*log10(1/e^2): continue
    assert not bc.stopped
    b2 = bc.current_bias(b_f, q7)                         # batch 2: not snapped again
    assert float(b2) == pytest.approx(0.296875 - 0.05 * mean_error, abs=1e-12)
    bc.step(ones, ones, DIMS)                             # noise 0: the stop fires
    assert bc.stopped and bc.steps == 1
    return bc


def test_t29_no_resnap_mean_error_0_1():
    bc = _27b(0.1)
    corr = float(bc.correction())
    assert corr == pytest.approx(0.008125, abs=1e-12)     # 0.3 - 0.291875
    b_test = q7(torch.tensor([0.3 - corr], dtype=torch.float64))    # 37.36 -> code 37
    assert float(b_test) * 128 == 37 and float(b_test) == 0.2890625


def test_t29_small_moves_are_kept():
    bc = _27b(0.01)                                       # moves 0.0005 only
    corr = float(bc.correction())
    assert corr == pytest.approx(0.003625, abs=1e-12)     # grid offset 0.003125 + 0.0005
    assert float(q7(torch.tensor([0.3 - corr], dtype=torch.float64))) * 128 == 38


# ------------------------------------------------------------------ T32 / Example 27c
E_TABLE = [1.0, 1.8, 2.44, 2.952, 3.3616, 3.68928, 3.951424, 4.161139, 4.328911]
D_TABLE = [1.0, 1.6, 1.92, 2.048, 2.048, 1.96608, 1.835008, 1.677722, 1.509949]


def test_t32_schedule():
    """eff = 5.0 on every batch (mean(out_f^2) = 1, noise 1e-4): corrections on batches 1-7
    with r = 0.05, on batch 8 with r = 0.025 (E > 4.0), stop on batch 9 (E > 4.3)."""
    bc = BiasCorrector()
    b_f = torch.zeros(1, dtype=torch.float64)
    bc.current_bias(b_f, on_grid)
    out_f = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    out_q = out_f + 0.01                                  # noise 1e-4 -> eff 5.0
    moves = []
    for batch in range(1, 12):
        before = float(bc.current_bias(b_f, on_grid))
        bc.step(out_q, out_f, DIMS)
        moves.append(before - float(bc.current_bias(b_f, on_grid)))
        if batch <= 9:
            assert bc.E == pytest.approx(E_TABLE[batch - 1], abs=1e-6), batch
            assert bc.D == pytest.approx(D_TABLE[batch - 1], abs=1e-6), batch
        assert bc.stopped is (batch >= 9), batch
    expected = [0.05 * 0.01] * 7 + [0.025 * 0.01] + [0.0] * 3
    assert moves == pytest.approx(expected, abs=1e-12)
    assert bc.steps == 8
    assert float(bc.correction()) == pytest.approx(7 * 0.0005 + 0.00025, abs=1e-12)


def test_stop_on_small_relative_deviation():
    """D/E < 0.05 stops: a constant eff after a long constant run (E close to eff)."""
    bc = BiasCorrector()
    bc.current_bias(torch.zeros(1, dtype=torch.float64), on_grid)
    bc.E, bc.D = 3.0, 0.1            # as if many batches had passed
    ones = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    err = 10 ** -1.2                 # eff = 1.25 * log10(1 / err^2) = 3.0 = E
    bc.step(ones + err, ones, DIMS)  # E stays 3.0, D -> (0.4 + ~0) / 5 = 0.08: D/E < 0.05
    assert bc.stopped and bc.steps == 0
    assert bc.D / bc.E < 0.05


def test_linear_layer_means_over_all_but_the_last_dim():
    bc = BiasCorrector()
    b_f = torch.zeros(3, dtype=torch.float64)
    bc.current_bias(b_f, on_grid)
    out_f = torch.ones(4, 3, dtype=torch.float64) * 2
    out_q = out_f + torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64)
    bc.step(out_q, out_f, [0])
    torch.testing.assert_close(bc.correction(),
                               torch.tensor([0.005, -0.01, 0.0], dtype=torch.float64))


# ------------------------------------------------------------------ bias_corr.pth round trip
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        x = torch.relu(self.c2(x))
        return self.fc(x.mean([2, 3]))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 3, 8, 8, generator=g)


def _model():
    torch.manual_seed(0)
    return Net().eval()


def test_bias_corr_file_written_and_reapplied(tmp_path):
    x = _data()
    q = torch_quantizer("calib", _model(), (x[:1],), output_dir=str(tmp_path))
    forward_batches(q.quant_model, x, 8)                  # 5 batches
    q.export_quant_config()
    info = json.loads((tmp_path / "quant_info.json").read_text())
    assert info["bias_corrected"] is True
    stored = torch.load(tmp_path / "bias_corr.pth", weights_only=True)
    convs = [n for n in q.graph.nodes if n.kind in CONV_LIKE]
    assert set(stored) == {n.name for n in convs}
    for n in convs:                      # every layer has a bias (c2 none: stays uncorrected)
        mod = layer(q, n)
        if mod.bias is None:
            assert stored[n.name] is None
            continue
        assert isinstance(stored[n.name], list) and len(stored[n.name]) == mod.bias.numel()
        torch.testing.assert_close(torch.tensor(stored[n.name]),
                                   mod.bias_corrector.correction(), rtol=0, atol=1e-7)
        assert 1 <= mod.bias_corrector.steps <= 5
    assert any(any(v != 0 for v in c) for c in stored.values() if c)

    qt = torch_quantizer("test", _model(), (x[:1],), output_dir=str(tmp_path))
    for n in convs:
        mod = layer(qt, n)
        if mod.bias is None:
            continue
        torch.testing.assert_close(mod.bias_correction, torch.tensor(stored[n.name]))
        bq = mod._modules["bias_q"]
        want = fake_quantize_pof2(mod.bias - torch.tensor(stored[n.name]),
                                  bq.params.fix_pos, -128, 127, RoundMode.STD_ROUND)
        torch.testing.assert_close(mod._qbias(), want, rtol=0, atol=0)
    with torch.no_grad():
        y = qt.quant_model(x[:8])
    assert torch.isfinite(y).all()


def test_test_mode_needs_the_file(tmp_path):
    x = _data()
    q = torch_quantizer("calib", _model(), (x[:1],), output_dir=str(tmp_path))
    forward_batches(q.quant_model, x, 20)
    q.export_quant_config()
    (tmp_path / "bias_corr.pth").unlink()
    with pytest.raises(QuantInfoError):
        torch_quantizer("test", _model(), (x[:1],), output_dir=str(tmp_path))


def test_test_mode_needs_every_layer(tmp_path):
    x = _data()
    q = torch_quantizer("calib", _model(), (x[:1],), output_dir=str(tmp_path))
    forward_batches(q.quant_model, x, 20)
    q.export_quant_config()
    stored = torch.load(tmp_path / "bias_corr.pth", weights_only=True)
    stored.pop(next(k for k, v in stored.items() if v is not None))
    torch.save(stored, tmp_path / "bias_corr.pth")
    info_path = tmp_path / "quant_info.json"      # edited by hand: drop the file checksum
    info = json.loads(info_path.read_text())
    info.pop("bias_corr_sha256", None)
    info_path.write_text(json.dumps(info))
    with pytest.raises(QuantInfoError, match="no entry"):
        torch_quantizer("test", _model(), (x[:1],), output_dir=str(tmp_path))


def test_switch_off(tmp_path):
    x = _data()
    cfg = write_config(tmp_path, {"include_bias_corr": False})
    q = torch_quantizer("calib", _model(), (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=cfg)
    assert all(getattr(layer(q, n), "bias_corrector", None) is None for n in q.graph.nodes)
    forward_batches(q.quant_model, x, 20)
    q.export_quant_config()
    assert json.loads((tmp_path / "quant_info.json").read_text())["bias_corrected"] is False
    assert not (tmp_path / "bias_corr.pth").exists()
    qt = torch_quantizer("test", _model(), (x[:1],), output_dir=str(tmp_path),
                         quant_config_file=cfg)
    assert all(getattr(layer(qt, n), "bias_correction", None) is None for n in qt.graph.nodes)


def test_calibration_moves_the_bias_off_its_grid(tmp_path):
    """T29 end to end: during calibration the bias is snapped once, then moves in float."""
    x = _data()
    q = torch_quantizer("calib", _model(), (x[:1],), output_dir=str(tmp_path))
    forward_batches(q.quant_model, x, 8)
    node = next(n for n in q.graph.nodes if n.kind in CONV_LIKE)
    mod = layer(q, node)
    bc, fp = mod.bias_corrector, mod._modules["bias_q"].params.fix_pos
    codes = bc.bias * 2.0 ** fp
    assert bc.steps >= 1
    assert not torch.allclose(codes, codes.round(), atol=1e-6)


# ------------------------------------------------------------------ evidence on real data
@pytest.mark.shared
@pytest.mark.slow
def test_bias_correction_lowers_the_logit_error_on_resnet20(tmp_path):
    """Pretrained ResNet-20, DPU default, calibrated on 500 calib images; on 1000 test images the
    mean absolute logit error against the float model is lower with bias correction than with
    include_bias_corr false (measured: 0.4736 vs 0.4767), and so is the systematic part that
    bias correction targets, the per-class mean error (0.195 vs 0.201)."""
    from algo_helpers import calibrate, outputs, resnet20_module
    gm = resnet20_module()
    xc, _ = gm.cifar("calib", 500)
    xt, _ = gm.cifar("test", 1000)
    ref = outputs(gm.resnet20(), xt)
    err = {}
    for bc in (True, False):
        _, qt = calibrate(gm.resnet20, xc, tmp_path / str(bc), {"include_bias_corr": bc})
        err[bc] = outputs(qt.quant_model, xt) - ref
    mae = {k: float(v.abs().mean()) for k, v in err.items()}
    systematic = {k: float(v.mean(0).abs().mean()) for k, v in err.items()}
    assert mae[True] < mae[False], mae
    assert systematic[True] < systematic[False], systematic


@pytest.mark.parametrize("calib_bc", [True, False])
def test_include_bias_corr_mismatch_follows_the_calibration_with_a_warning(tmp_path, calib_bc,
                                                                            caplog):
    """decisions.md 6/10: a test-mode config that disagrees with quant_info.json's
    bias_corrected is not silently ignored; the calibration's choice is applied."""
    import logging
    x = _data()
    q = torch_quantizer("calib", _model(), (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, {"include_bias_corr": calib_bc}))
    forward_batches(q.quant_model, x, 8)
    q.export_quant_config()
    with caplog.at_level(logging.WARNING, logger="nndct_lite"):
        qt = torch_quantizer("test", _model(), (x[:1],), output_dir=str(tmp_path),
                             quant_config_file=write_config(
                                 tmp_path, {"include_bias_corr": not calib_bc}, "test.json"))
    assert f"include_bias_corr is {str(not calib_bc).lower()}" in caplog.text
    corrected = [layer(qt, n).bias_correction is not None for n in qt.graph.nodes
                 if n.kind in CONV_LIKE and layer(qt, n).bias is not None]
    assert all(corrected) if calib_bc else not any(corrected)
