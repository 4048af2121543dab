"""merge() of two halves == observing the whole; state_dict round trips (every method)."""
import io

import pytest
import torch

from nndct_lite.calib import BatchMode, Role, make_observer
from nndct_lite.config.spec import (DPU_ACT_SPEC, DPU_PARAM_SPEC, CalibMethod, QuantSpec,
                                    RoundMode, ScaleType, StatMethod, TargetDevice)
from nndct_lite.errors import CalibrationError

FLOAT = QuantSpec(scale_type=ScaleType.FLOAT, round_mode=RoundMode.HALF_EVEN,
                  calib_statistic_method=StatMethod.MAX)

# (id, spec, role, axis, make_observer kwargs)
CASES = [
    ("diffs", DPU_ACT_SPEC, Role.ACTIVATION, None, {}),
    ("diffs-input", DPU_ACT_SPEC, Role.MODEL_INPUT, None, {}),
    ("diffs-cpu-vote", DPU_ACT_SPEC, Role.ACTIVATION, None, {"target": TargetDevice.CPU}),
    ("diffs-per-channel", DPU_ACT_SPEC.with_(per_channel=True), Role.ACTIVATION, 1, {}),
    ("diffs-param", DPU_PARAM_SPEC, Role.PARAM, None, {}),
    ("diffs-param-per-channel", DPU_PARAM_SPEC.with_(per_channel=True), Role.PARAM, 0, {}),
    ("pof2-maxmin", DPU_ACT_SPEC.with_(method=CalibMethod.MAXMIN), Role.ACTIVATION, None, {}),
]
for stat in StatMethod:
    CASES.append((f"maxmin-{stat.value}", FLOAT.with_(method=CalibMethod.MAXMIN,
                                                       calib_statistic_method=stat),
                  Role.ACTIVATION, None, {}))
CASES += [
    ("maxmin-asym", FLOAT.with_(method=CalibMethod.MAXMIN, symmetry=False,
                                calib_statistic_method=StatMethod.MEDIAN),
     Role.ACTIVATION, None, {}),
    ("maxmin-per-channel", FLOAT.with_(method=CalibMethod.MAXMIN, per_channel=True,
                                       calib_statistic_method=StatMethod.MEAN),
     Role.ACTIVATION, 1, {}),
    ("maxmin-asym-per-channel-acc", FLOAT.with_(method=CalibMethod.MAXMIN, per_channel=True,
                                                symmetry=False),
     Role.ACTIVATION, 1, {"batch_mode": BatchMode.ACCUMULATE}),
    ("maxmin-acc", FLOAT.with_(method=CalibMethod.MAXMIN), Role.ACTIVATION, None,
     {"batch_mode": BatchMode.ACCUMULATE}),
    ("maxmin-param-per-channel", FLOAT.with_(method=CalibMethod.MAXMIN, per_channel=True),
     Role.PARAM, 0, {}),
]
for method in (CalibMethod.PERCENTILE, CalibMethod.MSE, CalibMethod.ENTROPY):
    for mode in BatchMode:
        CASES.append((f"{method.value}-{mode.value}",
                      FLOAT.with_(method=method, calib_statistic_method=StatMethod.MEAN),
                      Role.ACTIVATION, None, {"batch_mode": mode}))
CASES.append(("percentile-param", FLOAT.with_(method=CalibMethod.PERCENTILE), Role.PARAM, None,
              {}))


def batches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        x = torch.randn(4, 3, 40, generator=g) * (0.3 * 3 ** k)
        x[0, 0, 0] = 5.0 * 2 ** k  # growing outliers: the accumulated histogram must re-bin
        out.append(x)
    return out


def fresh(case):
    _, spec, role, axis, kw = case
    return make_observer(spec, role=role, axis=axis, **kw)


def states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_merge_halves_equals_whole(case):
    data = batches()
    whole, first, second = fresh(case), fresh(case), fresh(case)
    for x in data:
        whole.observe(x)
    for x in data[:3]:
        first.observe(x)
    for x in data[3:]:
        second.observe(x)
    expect = whole.compute()
    assert expect.is_set
    a = fresh(case)
    a.load_state_dict(first.state_dict())
    a.merge(second)
    assert a.compute() == expect
    assert a.batches == whole.batches
    states_equal(a.state_dict(), whole.state_dict())
    if case[2] is not Role.PARAM:  # every statistic is independent of the batch order
        b = fresh(case)
        b.load_state_dict(second.state_dict())
        b.merge(first)
        assert b.compute() == expect
    else:                          # a parameter's union is the first batch of the first stream
        b = fresh(case)
        b.load_state_dict(second.state_dict())
        b.merge(first)
        assert b.compute() == second.compute()
    empty = fresh(case)
    empty.merge(whole)
    assert empty.compute() == expect
    whole.merge(fresh(case))
    assert whole.compute() == expect


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_state_dict_round_trip(case):
    data = batches(4, seed=1)
    obs = fresh(case)
    for x in data[:2]:
        obs.observe(x)
    obs.nonfinite_batches = 3
    buf = io.BytesIO()
    torch.save(obs.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    for v in state.values():
        assert isinstance(v, (int, float, bool, torch.Tensor))
    back = fresh(case)
    back.load_state_dict(state)
    assert back.compute() == obs.compute()
    assert (back.batches, back.nonfinite_batches, back.channels) == \
        (obs.batches, 3, obs.channels)
    for x in data[2:]:
        obs.observe(x)
        back.observe(x)
    assert back.compute() == obs.compute()
    states_equal(back.state_dict(), obs.state_dict())
    empty = fresh(case)
    states_equal(fresh(case).state_dict(), empty.state_dict())
    assert not empty.compute().is_set


def test_state_size_is_bounded():
    case = next(c for c in CASES if c[0] == "entropy-accumulate")
    obs = fresh(case)
    for x in batches(6):
        obs.observe(x)
    sizes = {k: v.numel() for k, v in obs.state_dict().items() if isinstance(v, torch.Tensor)}
    assert sizes["hist_counts"] == 4096 and sizes["scales"] == 0
    votes = fresh(CASES[0])
    for x in batches(6):
        votes.observe(x)
    assert votes.state_dict()["fp_counts"].numel() <= 6


def test_merge_rejects_other_configs():
    a = make_observer(DPU_ACT_SPEC, role=Role.ACTIVATION)
    with pytest.raises(ValueError):
        a.merge(make_observer(DPU_ACT_SPEC, role=Role.MODEL_INPUT))
    with pytest.raises(ValueError):
        a.merge(make_observer(DPU_ACT_SPEC, role=Role.ACTIVATION, vote_on_scale=True))
    with pytest.raises(ValueError):
        a.merge(make_observer(FLOAT.with_(method=CalibMethod.MAXMIN), role=Role.ACTIVATION))
    pc = DPU_ACT_SPEC.with_(per_channel=True)
    b, c = (make_observer(pc, role=Role.ACTIVATION, axis=0) for _ in range(2))
    b.observe(torch.ones(3, 2))
    c.observe(torch.ones(4, 2))
    with pytest.raises(CalibrationError):
        b.merge(c)
    with pytest.raises(CalibrationError):
        b.load_state_dict({"batches": 1})


def test_merge_adds_counters():
    a, b = (make_observer(DPU_ACT_SPEC, role=Role.ACTIVATION) for _ in range(2))
    a.observe(torch.tensor([1.0, float("nan")]))
    b.observe(torch.tensor([float("inf")]))
    b.observe(torch.tensor([2.0]))
    a.merge(b)
    assert (a.batches, a.nonfinite_batches) == (2, 2)
