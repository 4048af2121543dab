"""Power-of-two calibration: diffs search, scope 1, modal over batches (numerics.md 4.1, 4.2)."""
import logging
import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings, strategies as st

from nndct_lite.calib import Pof2Observer, Role, diffs_fix_pos, make_observer, range_fix_pos
from nndct_lite.config.spec import (DPU_ACT_SPEC, DPU_PARAM_SPEC, CalibMethod, QuantSpec,
                                    RoundMode, StatMethod, TargetDevice)
from nndct_lite.errors import CalibrationError, ConfigError
from nndct_lite.numerics import fake_quantize_pof2, native

ACT, PAR = DPU_ACT_SPEC, DPU_PARAM_SPEC


def observe_all(obs, batches):
    for b in batches:
        obs.observe(torch.as_tensor(b, dtype=torch.float32))
    return obs.compute()


def act(**kw):
    return make_observer(ACT, role=Role.ACTIVATION, **kw)


# ----------------------------------------------------------------------- worked numbers
def test_t5_example_4():
    assert diffs_fix_pos(torch.tensor([0.3, -0.7, 1.9]), ACT) == [6]
    assert diffs_fix_pos(torch.tensor([0.3, -0.7, 1.9]), ACT, scope=1) == [6]
    x = torch.tensor([0.3, -0.7, 1.9])
    errs = [((x - fake_quantize_pof2(x, f, -128, 127, RoundMode.HALF_UP)) ** 2).sum().item()
            for f in (6, 7)]
    assert errs[0] == pytest.approx(5.86e-5, rel=1e-2) and errs[1] == pytest.approx(0.824, rel=1e-3)
    assert observe_all(act(), [[0.3, -0.7, 1.9]]).fix_pos == 6


def test_t6_search_beats_max_rule():
    x = [1.0, 0.01, 0.07]
    assert observe_all(act(), [x]).fix_pos == 7
    assert observe_all(make_observer(ACT, role=Role.MODEL_INPUT), [x]).fix_pos == 6


def test_t7_cap_and_zero_tensor():
    par = make_observer(PAR, role=Role.PARAM)
    assert observe_all(par, [[0.001, -0.0004, 0.0002]]).fix_pos == 12
    assert observe_all(make_observer(PAR, role=Role.PARAM), [[0.0, 0.0, 0.0]]).fix_pos == 12
    fp0, _ = range_fix_pos(torch.tensor([-0.0004, 0.0]), torch.tensor([0.001, 0.0]), 8)
    assert fp0.tolist() == [16.0, 18.0]  # raw, before the cap
    assert diffs_fix_pos(torch.zeros(4), PAR.with_(bit_width=16)) == [15]


@pytest.mark.parametrize("lo, hi, fp", [(0.0, 255.0, -1), (0.0, 1.0, 6), (-2.1179, 2.64, 5)])
def test_t8_model_input(lo, hi, fp):
    obs = make_observer(ACT, role=Role.MODEL_INPUT)
    assert obs.scope == 1
    assert observe_all(obs, [torch.linspace(lo, hi, 101)]).fix_pos == fp


def test_example_6_signed_asymmetry():
    assert diffs_fix_pos(torch.tensor([-1.0]), ACT) == [7]
    assert diffs_fix_pos(torch.tensor([1.0]), ACT) == [6]
    assert diffs_fix_pos(torch.tensor([1.0, -1.0]), ACT) == [6]


def test_t9_modal_ties_to_smaller_and_running_value():
    obs = act()
    running = []
    for v in [2.0, 1.0, 1.0, 2.0]:  # per-batch fps 5, 6, 6, 5
        obs.observe(torch.tensor([v]))
        running.append(obs.compute().fix_pos)
    assert running == [5, 5, 6, 5]
    obs = act()
    assert [observe_all(obs, [[v]]).fix_pos for v in (1.0, 2.0, 2.0)] == [6, 5, 5]  # 6, 5, 5
    assert observe_all(act(), [[4.0], [1.0], [1.0]]).fix_pos == 6                    # 4, 6, 6


def test_t27_cpu_gpu_votes_on_scale():
    batches = [[2.0], [1.0], [1.0], [2.0]]
    assert observe_all(act(vote_on_scale=True), batches).fix_pos == 6
    assert observe_all(act(target=TargetDevice.CPU), batches).fix_pos == 6
    assert observe_all(act(target=TargetDevice.DPU), batches).fix_pos == 5


def test_t25_exact_error_tie():
    assert diffs_fix_pos(torch.tensor([1.0, 0.5078125]), ACT) == [6]
    assert diffs_fix_pos(torch.tensor([1.0, 0.5078125, 0.5078125]), ACT) == [7]


def test_t26_negative_fp():
    assert observe_all(act(), [[1000.0]]).fix_pos == -3
    q = fake_quantize_pof2(torch.tensor([1000.0]), -3, -128, 127, RoundMode.HALF_UP)
    assert q.tolist() == [1000.0]


def test_maxmin_pof2_is_scope_1_on_every_target():
    # the original's DPU path would run the diffs search (scope 5) here: we honour maxmin
    spec = ACT.with_(method=CalibMethod.MAXMIN)
    assert make_observer(spec, role=Role.ACTIVATION).scope == 1
    assert make_observer(spec, role=Role.ACTIVATION, target=TargetDevice.CPU).scope == 1
    assert make_observer(spec, role=Role.ACTIVATION, target=TargetDevice.DPU).scope == 1
    assert make_observer(spec, role=Role.MODEL_INPUT, target=TargetDevice.DPU).scope == 1
    assert observe_all(make_observer(spec, role=Role.ACTIVATION), [[1.0, 0.01, 0.07]]).fix_pos == 6


def test_param_is_calibrated_once():
    par = make_observer(PAR, role=Role.PARAM)
    par.observe(torch.tensor([1.0, 0.01, 0.07]))
    par.observe(torch.tensor([100.0]))
    assert par.batches == 1 and par.compute().fix_pos == 7


def test_sixteen_bit_and_round_modes():
    spec = ACT.with_(bit_width=16)
    assert diffs_fix_pos(torch.tensor([0.001]), spec) == [15]
    assert diffs_fix_pos(torch.tensor([1.0, -0.5]), spec) == [14]
    for mode in RoundMode:
        assert diffs_fix_pos(torch.tensor([0.3, -0.7, 1.9]), ACT.with_(round_mode=mode)) == [6]


# ----------------------------------------------------------------------- brute force
def brute_errors(x, mode, lo=-128, hi=127):
    return {f: ((x - fake_quantize_pof2(x, f, lo, hi, mode)) ** 2).sum().item()
            for f in range(-24, 25)}


def float32_fp0(x, bw=8):
    t = torch.stack([x.min(), x.max()])
    step = torch.maximum(t[0] / (-(2.0 ** (bw - 1)) - 0.5), t[1] / (2.0 ** (bw - 1) - 0.5))
    return int(torch.floor(torch.log2(1 / step)))


values = st.floats(min_value=2.0 ** -10, max_value=1024.0, width=32).flatmap(
    lambda v: st.sampled_from([v, -v]))


@settings(max_examples=120, deadline=None)
@given(st.lists(values, min_size=1, max_size=24), st.sampled_from(list(RoundMode)))
def test_diffs_matches_brute_force(vals, mode):
    x = torch.tensor(vals, dtype=torch.float32)
    spec = ACT.with_(round_mode=mode)
    errors = brute_errors(x, mode)
    fp0 = float32_fp0(x)
    assert -20 <= fp0 <= 20
    window = [f for f in range(fp0, fp0 + 5)]
    best = min(window, key=lambda f: (errors[f], f))          # smallest error, then smaller fp
    assert diffs_fix_pos(x, spec) == [min(best, 12)]
    assert diffs_fix_pos(x, spec, scope=1) == [min(fp0, 12)]
    # no coarser position is ever better than fp0 (the search only looks finer)
    assert all(errors[f] >= errors[fp0] for f in range(-24, fp0))
    # fp0 is the largest position at which no value overflows by more than half a step
    xs = [float(v) for v in x.tolist()]
    ok = [f for f in range(-24, 25)
          if max(xs) * 2.0 ** f <= 127.5 and min(xs) * 2.0 ** f >= -128.5]
    if max(ok) != fp0:  # only within float32 rounding of a boundary (numerics.md 15)
        assert fp0 == max(ok) + 1
        assert max(xs) * 2.0 ** fp0 <= 127.5 * (1 + 2 ** -21) \
            and min(xs) * 2.0 ** fp0 >= -128.5 * (1 + 2 ** -21)
    # so the result is the best of every position up to fp0 + 4
    chosen = diffs_fix_pos(x, spec)[0]
    if chosen < 12:
        assert errors[chosen] == min(errors[f] for f in range(-24, fp0 + 5))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(values, min_size=6, max_size=6), min_size=1, max_size=5))
def test_per_channel_equals_per_slice(rows):
    w = torch.tensor(rows, dtype=torch.float32)
    per_channel = diffs_fix_pos(w, PAR, axis=0)
    assert per_channel == [diffs_fix_pos(r, PAR)[0] for r in w]
    wt = w.t().contiguous()
    assert diffs_fix_pos(wt, PAR, axis=1) == per_channel


def test_per_channel_observer_with_zero_channel():
    w = torch.tensor([[0.3, -0.7, 1.9], [0.0, 0.0, 0.0], [1.0, 0.01, 0.07]])
    obs = make_observer(PAR.with_(per_channel=True), role=Role.PARAM, axis=0)
    p = observe_all(obs, [w])
    assert p.fix_pos == (6, 12, 7) and p.axis == 0
    acts = make_observer(ACT.with_(per_channel=True), role=Role.ACTIVATION, axis=1)
    for v in ([2.0, 1.0], [1.0, 1.0], [1.0, 2.0]):
        acts.observe(torch.tensor([v]))
    assert acts.compute().fix_pos == (6, 6)


# ----------------------------------------------------------------------- odd inputs
def test_nonfinite_values_are_ignored_and_counted():
    obs = act()
    obs.observe(torch.tensor([0.3, math.nan, -0.7, math.inf, 1.9]))
    assert obs.nonfinite_batches == 1 and obs.batches == 1
    assert obs.compute().fix_pos == 6
    obs.observe(torch.tensor([math.nan, -math.inf]))
    assert obs.nonfinite_batches == 2 and obs.batches == 1
    pc = make_observer(PAR.with_(per_channel=True), role=Role.PARAM, axis=0)
    pc.observe(torch.tensor([[1.0, 0.01, math.nan, 0.07], [math.inf, 0.3, -0.7, 1.9]]))
    assert pc.compute().fix_pos == (7, 6) and pc.nonfinite_batches == 1


def test_empty_and_integer_tensors_are_ignored():
    obs = act()
    obs.observe(torch.tensor([]))
    obs.observe(torch.tensor([1, 2, 3]))
    obs.observe(torch.tensor([True]))
    assert obs.batches == 0 and not obs.compute().is_set
    obs.observe(torch.tensor([1.0], dtype=torch.float16))
    obs.observe(torch.tensor([1.0], dtype=torch.float64))
    assert obs.batches == 2 and obs.compute().fix_pos == 6


def test_tiny_tensor_is_treated_as_zero(caplog):
    obs = make_observer(ACT, role=Role.ACTIVATION, name="net/relu")
    with caplog.at_level(logging.WARNING, logger="nndct_lite.calib"):
        obs.observe(torch.tensor([1e-38, -2e-38]))
    assert obs.compute().fix_pos == 12
    assert "net/relu" in caplog.text and "all-zero" in caplog.text
    fp0, overflow = range_fix_pos(torch.tensor([0.0]), torch.tensor([1e-38]), 8)
    assert fp0.tolist() == [18.0] and overflow.tolist() == [True]


def test_huge_values():
    assert diffs_fix_pos(torch.tensor([3e38, -3e38]), ACT) == [-121]
    assert diffs_fix_pos(torch.tensor([1e300], dtype=torch.float64), ACT) == [-990]


def test_per_channel_shape_errors():
    obs = make_observer(PAR.with_(per_channel=True), role=Role.ACTIVATION, axis=0)
    obs.observe(torch.ones(3, 2))
    with pytest.raises(CalibrationError):
        obs.observe(torch.ones(4, 2))
    with pytest.raises(CalibrationError):
        make_observer(PAR.with_(per_channel=True), role=Role.PARAM, axis=2).observe(torch.ones(3))


def test_config_errors():
    with pytest.raises(ConfigError):
        make_observer(ACT.with_(calib_statistic_method=StatMethod.MAX), role=Role.ACTIVATION)
    # parameters are calibrated once: their statistic does not matter
    make_observer(PAR.with_(calib_statistic_method=StatMethod.MAX), role=Role.PARAM)
    with pytest.raises(ConfigError, match="per-tensor only"):
        make_observer(PAR.with_(method=CalibMethod.PERCENTILE, per_channel=True), role=Role.PARAM,
                      axis=0)
    with pytest.raises(ConfigError):
        make_observer(ACT.with_(symmetry=False), role=Role.ACTIVATION)
    with pytest.raises(ConfigError):
        make_observer(PAR.with_(per_channel=True), role=Role.PARAM)
    with pytest.raises(ConfigError):
        Pof2Observer(QuantSpec().with_(scale_type=QuantSpec().scale_type.FLOAT),
                     role=Role.PARAM)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 16, 8, 8, generator=g) * s for s in (0.1, 1.0, 7.0)]
    for role in (Role.ACTIVATION, Role.MODEL_INPUT):
        cpu, gpu = make_observer(ACT, role=role), make_observer(ACT, role=role)
        for x in xs:
            cpu.observe(x)
            gpu.observe(x.cuda())
        assert cpu.compute() == gpu.compute()
    w = torch.randn(32, 16, 3, 3, generator=g)
    spec = PAR.with_(per_channel=True)
    assert diffs_fix_pos(w.cuda(), spec, axis=0) == diffs_fix_pos(w, spec, axis=0)


@pytest.mark.parametrize("mode", list(RoundMode))
def test_search_error_is_bitwise_the_plain_sum(mode):
    from nndct_lite.calib.pof2 import _sq_errors
    g = torch.Generator().manual_seed(9)
    x = torch.cat([torch.randn(5000, generator=g) * 2,
                   torch.arange(-400, 400, dtype=torch.float32) / 128])  # many exact ties
    spec = ACT.with_(round_mode=mode)
    x2 = x.reshape(1, -1)
    for fp in (3, 5, 6, 7, 9):
        fq = fake_quantize_pof2(x, fp, -128, 127, mode)
        plain = ((x - fq) ** 2).sum()
        got = _sq_errors(x2, -x2, [fp], spec, torch.empty_like(x2))
        assert torch.equal(got, plain.reshape(1))
    w = x[:4800].reshape(3, 1600)
    fps = [4, 6, 8]
    got = _sq_errors(w, -w, fps, spec, torch.empty_like(w))
    for c, fp in enumerate(fps):
        fq = fake_quantize_pof2(w[c], fp, -128, 127, mode)
        assert got[c].item() == pytest.approx(((w[c] - fq) ** 2).sum().item(), rel=1e-6)


# ------------------------------------------------------------ the pruned per-tensor search
def _exhaustive(x: torch.Tensor, spec) -> int:
    """Every one of the 5 candidates, errors as the plain float64 sum of squares."""
    from nndct_lite.calib.pof2 import range_fix_pos as rfp
    from nndct_lite.numerics.fixpoint import max_fix_pos
    fp0, _ = rfp(x.amin().reshape(1), x.amax().reshape(1), spec.bit_width)
    fp0 = int(fp0[0])
    cap = max_fix_pos(spec.bit_width)
    if fp0 >= cap:
        return cap
    r = spec.int_range
    errs = [float(((x.double() - fake_quantize_pof2(x, fp0 + k, r.qmin, r.qmax,
                                                    spec.round_mode).double()) ** 2).sum())
            for k in range(5)]
    return min(fp0 + errs.index(min(errs)), cap)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4000),
       tail=st.sampled_from([0.0, 1e-3, 0.02, 0.3]), relu=st.booleans(),
       mag=st.sampled_from([1e-3, 0.1, 1.0, 40.0]))
def test_pruned_search_picks_the_exhaustive_minimum(seed, n, tail, relu, mag):
    """Skipping candidates whose clipping error alone exceeds the best error never changes the
    answer (heavy-tailed, rectified, tiny and large tensors)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * mag
    k = int(n * tail)
    if k:
        x[:k] *= 20.0
    if relu:
        x = torch.relu(x)
    got = diffs_fix_pos(x, ACT)[0]
    with mock.patch.object(native, "diffs_errors", lambda *a, **k: None):
        got_torch = diffs_fix_pos(x, ACT)[0]   # the pruned torch-op search
    want = _exhaustive(x, ACT)
    for got in (got, got_torch):
        _near_tie_if_different(x, got, want)


def _near_tie_if_different(x, got, want):
    if got != want:  # only a float32-vs-float64 near tie may differ; prove it is one
        r = ACT.int_range
        e = [float(((x.double() - fake_quantize_pof2(x, f, r.qmin, r.qmax, ACT.round_mode)
                     .double()) ** 2).sum()) for f in (got, want)]
        assert e[0] == pytest.approx(e[1], rel=1e-5), (got, want, e)


def test_pruned_search_skips_the_hopeless_candidates(monkeypatch):
    """A rectified normal activation: fp0 and fp0+1 are evaluated, fp0+2's clipping error
    already exceeds the best, so fp0+2..fp0+4 are never fake-quantized."""
    import nndct_lite.calib.pof2 as pof2
    monkeypatch.setattr(pof2.native, "diffs_errors", lambda *a, **k: None)  # the torch path
    calls = []
    real = pof2._error_one
    monkeypatch.setattr(pof2, "_error_one", lambda x, fp, *a: calls.append(fp) or real(x, fp, *a))
    x = torch.relu(torch.randn(100_000, generator=torch.Generator().manual_seed(0)))
    fp = diffs_fix_pos(x, ACT)[0]
    assert len(calls) == 2 and fp in calls
    assert fp == _exhaustive(x, ACT)


def test_channels_last_activation_is_observed_without_a_copy():
    from nndct_lite.calib.base import dense_flat
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    flat = dense_flat(x)
    assert flat.data_ptr() == x.data_ptr() and flat.numel() == x.numel()
    assert sorted(flat.tolist()) == sorted(x.flatten().tolist())
    assert diffs_fix_pos(x, ACT) == diffs_fix_pos(x.contiguous(), ACT)
    sliced = x[:, :, ::2]                       # not dense: falls back to a copy
    assert dense_flat(sliced).numel() == sliced.numel()
