"""GPTQ (issue 24): the column-wise rounding with error feedback, checked by hand on a 2-column
layer, against a straightforward reference (explicit inverse-Hessian updates, no Cholesky, no
blocks) on random problems, the im2col Hessian of convolutions (groups included), and on real
layers of both grids (power-of-two per tensor, float scale per channel)."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from algo_helpers import PLAIN, W4A8, forward_batches, write_config
from nndct_lite import torch_quantizer
from nndct_lite.algorithms.gptq import GptqOptions, gptq_quantize, layer_hessian
from nndct_lite.algorithms.grid import weight_grid
from nndct_lite.quant.build import quantizers

EXACT = GptqOptions(damp=0.0, act_order=False)


def _round(col: torch.Tensor) -> torch.Tensor:
    return torch.round(col)


# ------------------------------------------------------------------ by hand
def test_two_columns_by_hand():
    # w = [0.4, 0.35], H = [[1, .5], [.5, 1]]; column 0 rounds to 0 with error 0.4, which GPTQ
    # moves onto column 1 as 0.4 * H01 / H11 = 0.2: 0.35 + 0.2 = 0.55 rounds to 1.
    # Output error (w-q) H (w-q)^T: rounding to nearest [0, 0] gives 0.4225, GPTQ's [0, 1] 0.3225.
    w = torch.tensor([[[0.4, 0.35]]], dtype=torch.float64)
    h = torch.tensor([[[1.0, 0.5], [0.5, 1.0]]], dtype=torch.float64)
    q = gptq_quantize(w, h, _round, EXACT)
    assert q.tolist() == [[[0.0, 1.0]]]

    def cost(v):
        e = (w - v)[0]
        return float(e @ h[0] @ e.T)
    assert cost(torch.zeros_like(w)) == pytest.approx(0.4225)
    assert cost(q) == pytest.approx(0.3225)


def test_uncorrelated_inputs_round_to_nearest():
    w = torch.tensor([[[0.4, 0.35, -1.6]]], dtype=torch.float64)
    h = torch.diag(torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64))[None]
    assert gptq_quantize(w, h, _round, EXACT).tolist() == [[[0.0, 0.0, -2.0]]]


def test_act_order_takes_the_strongest_input_first():
    # with column 1 first (H11 = 4 > H00 = 1), its error moves onto column 0 instead
    w = torch.tensor([[[0.35, 0.4]]], dtype=torch.float64)
    h = torch.tensor([[[1.0, 0.5], [0.5, 4.0]]], dtype=torch.float64)
    q = gptq_quantize(w, h, _round, GptqOptions(damp=0.0, act_order=True))
    # column 1: 0.4 -> 0, error 0.4 moved as 0.4 * H10 / H00 = 0.2: 0.55 -> 1
    assert q.tolist() == [[[1.0, 0.0]]]


def test_dead_inputs_neither_take_nor_spread_error():
    w = torch.tensor([[[0.4, 0.7, 0.35]]], dtype=torch.float64)
    h = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [0.5, 0.0, 1.0]]], dtype=torch.float64)
    assert gptq_quantize(w, h, _round, EXACT).tolist() == [[[0.0, 1.0, 1.0]]]


# ------------------------------------------------------------------ against a reference
def _reference(w: torch.Tensor, h: torch.Tensor, quant, order=None) -> torch.Tensor:
    """Optimal-brain-surgeon rounding written out: keep H^-1 of the columns not yet rounded,
    round one column, spread its error with that inverse, remove the column from it."""
    w = w.clone()
    k = w.shape[1]
    order = list(range(k)) if order is None else order
    hinv = torch.linalg.inv(h)
    q = torch.zeros_like(w)
    left = list(order)
    for j in order:
        q[:, j] = quant(w[:, j])
        err = (w[:, j] - q[:, j]) / hinv[j, j]
        left.remove(j)
        for c in left:
            w[:, c] -= err * hinv[j, c]
        hinv = hinv - torch.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
    return q


def _grid_quant(col: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(col * 4), -8, 7) / 4


@pytest.mark.parametrize("act_order", [False, True])
def test_matches_the_reference_on_random_problems(act_order):
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        rows, k = 6, 20
        x = torch.randn(k, 300, generator=g, dtype=torch.float64)
        x[3] *= 4   # uneven input energy: act_order changes the order
        h = 2 * x @ x.T / 300
        w = torch.randn(rows, k, generator=g, dtype=torch.float64) * 0.6
        order = None
        if act_order:
            order = torch.argsort(torch.diagonal(h), descending=True, stable=True).tolist()
        want = _reference(w, h, _grid_quant, order)
        got = gptq_quantize(w[None], h[None], _grid_quant,
                            GptqOptions(damp=0.0, block=4, act_order=act_order))[0]
        assert torch.equal(got, want), trial
        e_gptq = ((w - got) @ h * (w - got)).sum()
        e_near = ((w - _grid_quant(w)) @ h * (w - _grid_quant(w))).sum()
        assert e_gptq < e_near


def test_groups_are_solved_independently():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 100, generator=g, dtype=torch.float64)
    h = 2 * x @ x.transpose(1, 2) / 100
    w = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    both = gptq_quantize(w, h, _grid_quant, EXACT)
    for i in range(2):
        assert torch.equal(both[i], gptq_quantize(w[i:i + 1], h[i:i + 1], _grid_quant, EXACT)[0])


# ------------------------------------------------------------------ the Hessian of a layer
@pytest.mark.parametrize("groups,stride,dilation,padding", [(1, 1, 1, 1), (2, 2, 1, 0),
                                                            (4, 1, 2, 2)])
def test_conv_hessian_is_the_im2col_product(groups, stride, dilation, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, dilation=dilation, padding=padding, groups=groups)
    x = torch.randn(3, 4, 9, 9)
    h = layer_hessian(conv, x)
    cols = F.unfold(x, 3, dilation, padding, stride).double()            # [n, C*9, L]
    k = 4 // groups * 9
    assert h.shape == (groups, k, k)
    n = cols.shape[0] * cols.shape[2]
    for gi in range(groups):
        xs = cols[:, gi * k:(gi + 1) * k].permute(1, 0, 2).reshape(k, -1)
        torch.testing.assert_close(h[gi], 2 * xs @ xs.T / n, rtol=1e-5, atol=1e-5)


def test_linear_and_conv1d_hessians():
    x = torch.randn(7, 5)
    h = layer_hessian(nn.Linear(5, 3), x)
    torch.testing.assert_close(h[0], (2 * x.T.double() @ x.double() / 7), rtol=1e-6, atol=1e-6)
    x1 = torch.randn(2, 3, 10)
    c1 = nn.Conv1d(3, 4, 3, padding=1)
    cols = F.unfold(x1.unsqueeze(2), (1, 3), padding=(0, 1)).double()
    xs = cols.permute(1, 0, 2).reshape(9, -1)
    torch.testing.assert_close(layer_hessian(c1, x1)[0], 2 * xs @ xs.T / xs.shape[1],
                               rtol=1e-5, atol=1e-5)
    assert layer_hessian(nn.Conv3d(2, 2, 1), torch.randn(1, 2, 2, 2, 2)) is None


# ------------------------------------------------------------------ real layers, both grids
class Net(nn.Module):
    """conv -> relu -> depthwise conv -> relu -> 1x1 conv -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.dw(F.relu(self.c1(x))))
        return self.fc(self.pw(x).mean([2, 3]))


def net():
    torch.manual_seed(0)
    return Net().eval()


def data(n=48):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def _fix_positions(model):
    return {k: q.params for k, q in quantizers(model).items()}


@pytest.mark.parametrize("cfg", [None, W4A8], ids=["dpu_pof2_per_tensor", "w4_float_per_channel"])
def test_tuned_weights_lie_on_the_calibrated_grid(tmp_path, cfg):
    x = data()
    full = {**(cfg or {}), **PLAIN, "fast_finetune_method": "gptq"}
    q = torch_quantizer("calib", net(), (x[:1],), output_dir=str(tmp_path / "ft"),
                        quant_config_file=write_config(tmp_path, full))
    q.fast_finetune(forward_batches, (q.quant_model, x, 16))
    forward_batches(q.quant_model, x, 16)
    q.export_quant_config()
    plain = torch_quantizer("calib", net(), (x[:1],), output_dir=str(tmp_path / "plain"),
                            quant_config_file=write_config(tmp_path, {**(cfg or {}), **PLAIN},
                                                           "plain.json"))
    forward_batches(plain.quant_model, x, 16)
    plain.export_quant_config()
    # the grid is calibration's: the same fix positions / scales as a plain calibration
    assert _fix_positions(q.quant_model) == _fix_positions(plain.quant_model)
    changed = 0
    for name, mod in q.quant_model.named_modules():
        grid = weight_grid(mod)
        if grid is None:
            continue
        w = mod.weight.detach()
        assert torch.equal(grid.snap(w), w), name                 # a fixed point of the quantizer
        if cfg is None:
            fp = grid.quantizer.params.fix_pos
            assert isinstance(fp, int)
            assert torch.equal(w * 2.0 ** fp, torch.round(w * 2.0 ** fp)), name
        changed += int(not torch.equal(w, grid.snap(_float_weight(mod))))
    assert changed > 0                 # GPTQ chose another rounding than nearest somewhere


def _float_weight(mod):
    """The float weight of the generated layer ``mod`` (Net has no BN: nothing is folded; its
    four layers have four different weight shapes)."""
    return {m.weight.shape: m.weight for m in net().modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}[mod.weight.shape].detach()


def test_gptq_lowers_each_layers_output_error(tmp_path):
    """On the inputs the layer sees, (W - Q) H (W - Q)^T is below rounding to nearest."""
    from nndct_lite.algorithms import layerwise
    from nndct_lite.algorithms.gptq import GptqTuner
    x = data()
    cfg = write_config(tmp_path, {**W4A8, **PLAIN})
    q = torch_quantizer("calib", net(), (x[:1],), output_dir=str(tmp_path), quant_config_file=cfg)
    errs = []
    base = GptqTuner()

    def tune(index, name, layer, grid, act, xin, target):
        w = layer.weight.detach().clone()
        h = layer_hessian(layer, xin)
        base(index, name, layer, grid, act, xin, target)
        groups = h.shape[0]

        def cost(v):
            d = (w - v).reshape(groups, w.shape[0] // groups, -1).double()
            return float((torch.bmm(d, h) * d).sum())
        errs.append((cost(grid.snap(w)), cost(layer.weight.detach())))
    layerwise.run_layerwise(q._session, q.quant_model, forward_batches, (q.quant_model, x, 16),
                            tune, desc="gptq", float_pass=False)
    assert len(errs) == 4
    assert sum(t for _, t in errs) < sum(n for n, _ in errs)


# ------------------------------------------------------------------ the float-input fit
def test_float_input_fit_is_the_identity_without_input_error():
    from nndct_lite.algorithms.gptq import float_input_fit
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 200, generator=g, dtype=torch.float64)
    h = 2 * x @ x.transpose(1, 2) / 200
    w = torch.randn(1, 4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(float_input_fit(w, h, h.clone(), 0.01), w, rtol=0, atol=1e-12)


def test_float_input_fit_solves_the_least_squares_problem():
    """X_f = 2 X (the quantized input is half the float one): W' = 2 W reproduces W X_f; with
    dampening d the solution is W + W H (H + dI)^-1, checked against a direct solve."""
    from nndct_lite.algorithms.gptq import float_input_fit
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 5, 400, generator=g, dtype=torch.float64)
    h = 2 * x @ x.transpose(1, 2) / 400
    w = torch.randn(1, 3, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(float_input_fit(w, h, 2 * h, 0.0), 2 * w, rtol=1e-9, atol=1e-9)
    d = 0.05 * float(torch.diagonal(h[0]).mean())
    want = w[0] + w[0] @ h[0] @ torch.linalg.inv(h[0] + d * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(float_input_fit(w, h, 2 * h, 0.05)[0], want, rtol=1e-9, atol=1e-9)


def test_moments_of_a_linear_layer():
    from nndct_lite.algorithms.gptq import layer_moments
    x = torch.randn(50, 4)
    xf = x + 0.1
    mo = layer_moments(nn.Linear(4, 2), x, xf)
    xd, xfd = x.double(), xf.double()
    torch.testing.assert_close(mo.h[0], 2 * xd.T @ xd / 50, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mo.m[0], 2 * xfd.T @ xd / 50, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mo.mean[0], xd.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mo.mean_float[0], xfd.mean(0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("groups,stride,dilation,padding,size", [(1, 1, 1, 1, 9), (2, 2, 1, 0, 11),
                                                                 (4, 1, 2, 2, 10)])
def test_capped_moments_use_every_fth_output_position(groups, stride, dilation, padding, size):
    # with more columns than max_columns, the statistics of image k come from the output
    # positions (i*f + oy, j*f + ox) of the full grid, the phase (oy, ox) = divmod(k mod f², f),
    # f the smallest factor that brings the count under the cap
    from nndct_lite.algorithms.gptq import _stride_factor, layer_moments
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, stride=stride, dilation=dilation, padding=padding, groups=groups)
    n_img = 5
    x = torch.randn(n_img, 4, size, size)
    full = F.unfold(x, 3, dilation, padding, stride).double()              # [n, C*9, L]
    ho = (size + 2 * padding - dilation * 2 - 1) // stride + 1
    cap = n_img * ((ho + 1) // 2) ** 2                                      # f = 2 exactly
    assert _stride_factor(n_img, (ho, ho), cap) == 2
    picked = []
    for k in range(n_img):
        oy, ox = divmod(k % 4, 2)
        keep = [i * ho + j for i in range(oy, ho, 2) for j in range(ox, ho, 2)]
        picked.append(full[k][:, keep])                                     # [C*9, L_k]
    cols = torch.cat(picked, 1)
    mo = layer_moments(conv, x, x * 0.5, max_columns=cap)
    k = 4 // groups * 9
    n = cols.shape[1]
    for gi in range(groups):
        xs = cols[gi * k:(gi + 1) * k]
        torch.testing.assert_close(mo.h[gi], 2 * xs @ xs.T / n, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mo.m[gi], xs @ xs.T / n, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mo.mean[gi], xs.mean(1), rtol=1e-5, atol=1e-5)
    # no cap, or a cap above the count: every column
    assert _stride_factor(3, (ho, ho), 0) == 1 and _stride_factor(3, (ho, ho), 10 ** 6) == 1
    assert _stride_factor(1000, (32, 32), 1 << 18) == 2


def test_capped_moments_of_a_conv1d_layer():
    from nndct_lite.algorithms.gptq import layer_moments
    torch.manual_seed(0)
    conv = nn.Conv1d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 8)
    full = F.unfold(x.unsqueeze(2), (1, 3), padding=(0, 1)).double()       # [4, 6, 8]
    cols = torch.cat([full[k][:, k % 2::2] for k in range(4)], 1)          # f = 2, 2 phases
    mo = layer_moments(conv, x, max_columns=16)
    torch.testing.assert_close(mo.h[0], 2 * cols @ cols.T / cols.shape[1], rtol=1e-5,
                               atol=1e-5)


def test_capped_moments_of_a_linear_layer_take_every_fth_row():
    from nndct_lite.algorithms.gptq import layer_moments
    x = torch.randn(10, 3)
    mo = layer_moments(nn.Linear(3, 2), x, max_columns=5)
    xd = x.double()[::2]
    torch.testing.assert_close(mo.h[0], 2 * xd.T @ xd / 5, rtol=1e-6, atol=1e-6)
