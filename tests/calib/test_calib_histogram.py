"""Histogram methods: percentile, mse, entropy (numerics.md 4.4; T22, T30, T31)."""
import logging
import math

import numpy as np
import pytest
import torch

import nndct_lite.calib.histogram as H
from nndct_lite.calib import (AccumulatedHistogram, BatchMode, HistogramObserver, Role,
                              batch_histogram, entropy_amax, entropy_divergences, make_observer,
                              mse_amax, mse_errors, percentile_amax)
from nndct_lite.config.spec import (CalibMethod, QuantSpec, RoundMode, ScaleType, StatMethod,
                                    TargetDevice)
from nndct_lite.errors import ConfigError

BASE = QuantSpec(scale_type=ScaleType.FLOAT, round_mode=RoundMode.HALF_EVEN,
                 calib_statistic_method=StatMethod.MAX)
PCT = BASE.with_(method=CalibMethod.PERCENTILE)
MSE = BASE.with_(method=CalibMethod.MSE)
ENT = BASE.with_(method=CalibMethod.ENTROPY)

T31_HIST = 2048.0 - np.arange(2048)
T31_EDGES = np.arange(2049) / 512.0


def amax_of(spec, batches, **kw):
    obs = make_observer(spec, role=Role.ACTIVATION, **kw)
    for b in batches:
        obs.observe(torch.as_tensor(b, dtype=torch.float32))
    p = obs.compute()
    return p.scale * spec.int_range.qmax, p


# ----------------------------------------------------------------------- T31 (pure searches)
def test_t31_percentile():
    assert percentile_amax(T31_HIST, T31_EDGES, 99.99) == 3.9609375
    assert percentile_amax(T31_HIST, T31_EDGES, 99.0) == 3.599609375
    assert percentile_amax(torch.tensor(T31_HIST), torch.tensor(T31_EDGES), 99.99) == 3.9609375


def test_t31_mse():
    assert mse_amax(T31_HIST, T31_EDGES, MSE) == 3.9072265625 == 2000.5 / 512
    err = dict(mse_errors(T31_HIST, T31_EDGES, MSE))
    assert len(err) == 32 and min(err) == 1536 and max(err) == 2032
    assert err[2000] == pytest.approx(0.081588, abs=2e-6)
    assert err[1984] == pytest.approx(0.082048, abs=2e-6)
    assert err[2016] == pytest.approx(0.082249, abs=2e-6)


def test_t31_entropy():
    assert entropy_amax(T31_HIST, T31_EDGES, 8) == 4.0
    kl = dict(entropy_divergences(T31_HIST, T31_EDGES, 8))
    assert len(kl) == 33 and max(kl) == 2048
    assert kl[2048] == pytest.approx(3.50e-5, rel=1e-2)
    assert kl[2032] == pytest.approx(9.67e-5, rel=1e-2)


def test_entropy_second_case_empty_bins():
    h = np.zeros(2048)
    h[:1536] = 1
    h[2047] = 1
    kl = dict(entropy_divergences(h, T31_EDGES, 8))
    assert kl[1536] == pytest.approx(2.51e-4, rel=1e-2)
    assert kl[2048] == 0.0
    assert all(math.isinf(v) for i, v in kl.items() if 1536 < i < 2048)
    assert entropy_amax(h, T31_EDGES, 8) == 4.0


def naive_divergences(h, bw, unsigned, start=1536, stride=16):
    """numerics.md 4.4 entropy, step by step with Python loops."""
    h = [float(v) for v in h]
    h[0] = h[1]
    nbins = 2 ** (bw - 1 + int(unsigned))
    out = {}
    for i in range(start, len(h) + 1, stride):
        p = h[:i]
        p[-1] += sum(h[i:])
        space = np.linspace(0, i, nbins + 1)
        group = np.digitize(np.arange(i), space) - 1
        q = [0.0] * i
        for gi in range(nbins):
            members = [j for j in range(i) if group[j] == gi]
            nonempty = [j for j in members if h[j] != 0]
            for j in nonempty:
                q[j] = sum(h[m] for m in members) / len(nonempty)
        ps, qs = sum(p), sum(q)
        kl = 0.0
        for a, b in zip(p, q):
            if a > 0:
                kl = math.inf if b == 0 else kl + a / ps * math.log((a / ps) / (b / qs))
        out[i] = kl
    return out


@pytest.mark.parametrize("bw, unsigned", [(8, False), (4, True), (3, False)])
def test_entropy_matches_naive_reference(bw, unsigned):
    rng = np.random.default_rng(bw)
    h = np.floor(rng.exponential(20.0, 2048) * (rng.random(2048) < 0.7))
    got = dict(entropy_divergences(h, T31_EDGES, bw, unsigned))
    ref = naive_divergences(h, bw, unsigned, stride=64)
    for i, v in ref.items():
        assert got[i] == pytest.approx(v, rel=1e-9, abs=1e-15)


def test_entropy_last_minimum():
    h = np.ones(2048)  # every candidate is exact: KL 0 everywhere -> the last one
    assert entropy_amax(h, T31_EDGES, 8) == 4.0
    assert entropy_amax(h, T31_EDGES, 8, start_bin=1024, stride=512) == 4.0


def test_search_input_checks():
    with pytest.raises(ValueError):
        percentile_amax(T31_HIST, T31_EDGES[:-1], 99.0)
    with pytest.raises(ValueError):
        percentile_amax(T31_HIST, T31_EDGES, 0.0)
    assert percentile_amax(np.zeros(4), np.arange(5.0), 50.0) == 4.0


# ----------------------------------------------------------------------- observers, T22 / T30
def test_t22_percentile_observer():
    x = torch.full((10_000,), 0.25)
    x[-1] = 1.0
    amax, p = amax_of(PCT, [x])
    assert p.scale == 0.25 / 127 and amax == 0.25 and p.zero_point == 0


def test_t30_left_edge():
    x = torch.full((100,), 500.7)
    x[0] = 2048.0
    _, p = amax_of(PCT.with_(percentage=99.0), [x])
    assert p.scale == 500.0 / 127
    _, p = amax_of(PCT, [x])
    assert p.scale == 2047.0 / 127
    _, p = amax_of(PCT.with_(percentage=100.0), [x])
    assert p.scale == 2047.0 / 127
    _, p = amax_of(PCT, [-x])  # |x| of a negative tensor
    assert p.scale == 2047.0 / 127


def test_percentile_of_uniform_sample():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(1_000_000, generator=g)
    for pct in (90.0, 99.0, 99.9):
        amax, _ = amax_of(PCT.with_(percentage=pct), [x])
        assert abs(amax - pct / 100) < 2.5 / 2048


def laplace_with_outliers(n=1_000_000, seed=5):
    """A Laplace(0, 1) body with max ~14 and 33 outliers up to 50, one in the last bin of every
    search candidate (so that entropy's clipped mass lands in a non-empty bin)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g) - 0.5
    body = -torch.sign(u) * torch.log1p(-2 * u.abs())
    outliers = torch.tensor([(1535.5 + 16 * k) / 2047.5 * 50.0 for k in range(33)])
    return torch.cat([body, outliers])


@pytest.mark.parametrize("spec", [MSE, ENT], ids=["mse", "entropy"])
def test_laplace_with_outliers_is_clipped(spec):
    x = laplace_with_outliers()
    top = x.abs().max().item()
    amax, _ = amax_of(spec, [x])
    assert top == pytest.approx(50.0)
    assert amax < 0.8 * top
    amax_acc, _ = amax_of(spec, [x], batch_mode=BatchMode.ACCUMULATE)
    assert amax_acc < 0.8 * top
    amax_pct, _ = amax_of(PCT, [x])
    assert amax_pct < 0.5 * top


def test_all_zero_batch_and_stats():
    amax, p = amax_of(PCT, [torch.zeros(10)])
    assert p.scale == 0.0 and p.is_set
    spec = PCT.with_(calib_statistic_method=StatMethod.MEDIAN)
    x1, x2 = torch.full((100,), 0.25), torch.full((100,), 0.5)
    _, p = amax_of(spec, [x1, x2])  # constant batches: the left edge of the last bin
    assert p.scale == (0.25 * 2047 / 2048 / 127 + 0.5 * 2047 / 2048 / 127) / 2


def test_nonfinite_and_ignored_inputs():
    obs = make_observer(PCT, role=Role.ACTIVATION)
    x = torch.full((20_004,), 0.25)
    x[-1] = 1.0
    x[:3] = torch.tensor([math.nan, math.inf, -math.inf])  # 20 000 finite 0.25s remain
    obs.observe(x)
    obs.observe(torch.tensor([math.nan]))
    obs.observe(torch.tensor([], dtype=torch.float32))
    obs.observe(torch.arange(5))
    assert obs.batches == 1 and obs.nonfinite_batches == 2
    assert obs.compute().scale == 0.25 / 127


# ----------------------------------------------------------------------- histogram building
def test_histogram_chunks_add_up_exactly(monkeypatch):
    g = torch.Generator().manual_seed(2)
    a = torch.rand(100_003, generator=g) * 3
    whole = batch_histogram(a, 3.0, 2048)
    monkeypatch.setattr(H, "HISTC_CHUNK", 1000)
    assert torch.equal(batch_histogram(a, 3.0, 2048), whole)
    assert whole.sum().item() == a.numel() and whole.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bins_are_floor_of_scaled_value(dtype):
    # the bin of v is floor(v * bins / hi), the maximum in the last bin (torch.histc rules)
    g = torch.Generator().manual_seed(8)
    for k in range(20):
        hi = float(torch.tensor((torch.rand(1, generator=g).item() + 1e-3)
                                * 10.0 ** (k % 11 - 5), dtype=dtype))
        e = (torch.arange(2049, dtype=torch.float64) * (hi / 2048)).to(dtype)
        v = torch.cat([torch.rand(20_000, generator=g, dtype=dtype) * hi, e,
                       torch.nextafter(e, torch.zeros((), dtype=dtype)),
                       torch.nextafter(e, torch.full((), math.inf, dtype=dtype))]).clamp(0, hi)
        v[0] = hi
        idx = torch.mul(v, 2048.0).div_(hi).floor_().clamp_(max=2047).long()
        ref = torch.bincount(idx, minlength=2048).to(torch.float64)
        assert torch.equal(batch_histogram(v, hi, 2048), ref), hi


def test_accumulated_binning_is_exact_floor():
    g = torch.Generator().manual_seed(3)
    a = torch.cat([torch.rand(200_000, generator=g) * 5.0, torch.arange(0, 4096) / 4096 * 8])
    acc = AccumulatedHistogram(4096)
    acc.add(a, a.max().item())
    assert acc.exp == 3
    idx = torch.floor(a.double() * 4096 / 8).long()
    assert torch.equal(acc.counts, torch.bincount(idx, minlength=4096).double())


def test_accumulated_growth_equals_direct():
    g = torch.Generator().manual_seed(4)
    small = torch.rand(50_000, generator=g) * 0.3
    large = torch.rand(50_000, generator=g) * 900.0
    grown = AccumulatedHistogram(4096)
    grown.add(small, small.max().item())
    grown.add(torch.zeros(7), 0.0)
    grown.add(large, large.max().item())
    direct = AccumulatedHistogram(4096)
    direct.add(large, large.max().item())
    direct.add(small, small.max().item())
    direct.add(torch.zeros(7), 0.0)
    assert grown.exp == direct.exp == 10 and torch.equal(grown.counts, direct.counts)
    zeros_first = AccumulatedHistogram(4096)
    zeros_first.add(torch.zeros(3), 0.0)
    assert zeros_first.cropped()[0].tolist() == [3.0]
    h, e = grown.cropped()
    assert h.size + 1 == e.size and h.size > 2048 and e[1] == 1024 / 4096


def test_accumulated_mode_close_to_per_batch_for_one_batch():
    x = laplace_with_outliers(200_000)
    for spec in (PCT, MSE, ENT):
        per, _ = amax_of(spec, [x])
        acc, _ = amax_of(spec, [x], batch_mode=BatchMode.ACCUMULATE)
        assert acc == pytest.approx(per, rel=0.05)


def test_mse_with_other_round_mode_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="nndct_lite.calib"):
        obs = make_observer(MSE.with_(round_mode=RoundMode.HALF_UP), role=Role.ACTIVATION,
                            name="net/conv")
    assert "net/conv" in caplog.text and "half_even" in caplog.text
    obs.observe(laplace_with_outliers(10_000))
    assert obs.compute().is_set


def test_config_errors():
    with pytest.raises(ConfigError):
        make_observer(PCT.with_(symmetry=False), role=Role.ACTIVATION)
    with pytest.raises(ConfigError):
        make_observer(PCT.with_(per_channel=True), role=Role.PARAM, axis=0)
    with pytest.raises(ConfigError):
        make_observer(PCT.with_(percentage=0.0), role=Role.ACTIVATION)
    with pytest.raises(ConfigError):
        make_observer(PCT, role=Role.ACTIVATION, target=TargetDevice.DPU)
    with pytest.raises(ConfigError):
        HistogramObserver(BASE, role=Role.ACTIVATION)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = laplace_with_outliers(100_000)
    for spec in (PCT, MSE, ENT):
        for mode in BatchMode:
            assert amax_of(spec, [x], batch_mode=mode) == amax_of(spec, [x.cuda()],
                                                                  batch_mode=mode)
