"""Rounding modes (numerics.md 2): ties, near ties, every dtype, the fast fused path."""
from fractions import Fraction
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nndct_lite.numerics.rounding import RoundMode, round_numpy, round_tensor, scaled_round

M = RoundMode
ALL = list(RoundMode)

# numerics.md 2.2, T1: x -> (half_up, std_round, half_down, half_even, code 5, floor, ceil)
TABLE = {
    -2.5: (-2, -3, -2, -2, -2, -3, -2),
    -1.5: (-1, -2, -1, -2, -1, -2, -1),
    -0.5: (0, -1, 0, 0, 0, -1, 0),
    0.5: (1, 1, 0, 0, 0, 0, 1),
    1.5: (2, 2, 1, 2, 2, 1, 2),
    2.5: (3, 3, 2, 2, 2, 2, 3),
    -1.4: (-1, -1, -1, -1, -1, -2, -1),
    1.6: (2, 2, 2, 2, 2, 1, 2),
}
COLUMNS = (M.HALF_UP, M.STD_ROUND, M.HALF_DOWN, M.HALF_EVEN, M.TIES_NEG_UP_POS_EVEN, M.FLOOR,
           M.CEIL)


def exact_round(v: Fraction, mode: RoundMode) -> int:
    """Reference rounding on exact rationals."""
    fl = math.floor(v)
    frac = v - fl
    if mode is M.FLOOR:
        return fl
    if mode is M.CEIL:
        return math.ceil(v)
    if frac != Fraction(1, 2):
        return fl + (1 if frac > Fraction(1, 2) else 0)
    lo, hi = fl, fl + 1
    return {M.HALF_UP: hi, M.STD_ROUND: hi if v > 0 else lo, M.HALF_DOWN: lo if v > 0 else hi,
            M.HALF_EVEN: lo if lo % 2 == 0 else hi,
            M.TIES_NEG_UP_POS_EVEN: hi if v < 0 else (lo if lo % 2 == 0 else hi)}[mode]


def reference(y: torch.Tensor, mode: RoundMode) -> torch.Tensor:
    """Exact rounding of float32/float16 values computed in float64 (exact for those inputs)."""
    v = y.double().numpy()
    if mode is M.HALF_UP:
        r = np.floor(v + 0.5)
    elif mode is M.STD_ROUND:
        r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    elif mode is M.HALF_DOWN:
        r = np.sign(v) * np.ceil(np.abs(v) - 0.5)
    elif mode is M.HALF_EVEN:
        r = np.rint(v)
    elif mode is M.FLOOR:
        r = np.floor(v)
    elif mode is M.CEIL:
        r = np.ceil(v)
    else:
        r = np.where(v < 0, np.floor(v + 0.5), np.rint(v))
    big = np.abs(v) >= 2.0 ** 23
    r[big] = v[big]
    return torch.from_numpy(r)


def near_ties_f32(radius: int = 24) -> torch.Tensor:
    """Every float32 within ``radius`` ulps of k/2 for k in -64..64, plus the ties."""
    out = []
    for k in range(-64, 65):
        v = torch.tensor(k / 2, dtype=torch.float32)
        up, down = v.clone(), v.clone()
        out.append(v.item())
        for _ in range(radius):
            up = torch.nextafter(up, torch.tensor(math.inf))
            down = torch.nextafter(down, torch.tensor(-math.inf))
            out += [up.item(), down.item()]
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("x", sorted(TABLE))
def test_table_t1(x):
    y = torch.tensor([x])
    got = tuple(int(round_tensor(y, m).item()) for m in COLUMNS)
    assert got == TABLE[x]


def test_codes_and_names():
    assert [m.code for m in COLUMNS] == [2, 3, 6, 8, 5, 4, 7]
    assert all(RoundMode.from_code(m.code) is m for m in ALL)
    with pytest.raises(ValueError):
        RoundMode.from_code(1)
    assert M.HALF_UP.xir_name == "DPU_ROUND"
    assert not M.FLOOR.is_nearest and M.HALF_DOWN.is_nearest


NEAR = {  # float32 near ties: never a tie, so every nearest mode agrees
    0.49999997: 0, -0.49999997: 0, 2.5000002: 3, -2.5000002: -3, -1.4999999: -1, 1.4999999: 1,
    0.50000006: 1, -0.50000006: -1, 1.5000001: 2, -1.5000001: -2,
}


@pytest.mark.parametrize("mode", [m for m in ALL if m.is_nearest])
@pytest.mark.parametrize("fast", [False, True])
def test_near_ties_are_not_ties(mode, fast):
    y = torch.tensor(list(NEAR), dtype=torch.float32)
    assert y[0].item() != 0.5 and y[0].item() < 0.5
    got = scaled_round(y, 1.0, mode) if fast else round_tensor(y, mode)
    assert got.tolist() == [float(v) for v in NEAR.values()]


@pytest.mark.parametrize("mode", ALL)
def test_exact_ties_all_modes(mode):
    ties = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
    y = torch.tensor(ties)
    expect = [exact_round(Fraction(t), mode) for t in ties]
    assert round_tensor(y, mode).tolist() == expect
    assert scaled_round(y, 1.0, mode).tolist() == expect


@pytest.mark.parametrize("mode", ALL)
def test_float32_neighbourhoods_and_random_bits(mode):
    g = torch.Generator().manual_seed(7)
    bits = torch.randint(-2 ** 31, 2 ** 31, (200_000,), generator=g, dtype=torch.int64)
    rnd = bits.to(torch.int32).view(torch.float32)
    rnd = rnd[torch.isfinite(rnd)]
    extremes = torch.tensor([0.0, -0.0, 2.0 ** 23 + 1, -(2.0 ** 23 + 1), 2.0 ** 22 + 0.5,
                             -(2.0 ** 22 + 0.5), 3e38, -3e38, 1e-45, -1e-45])
    y = torch.cat([near_ties_f32(), rnd, torch.randn(50_000, generator=g) * 300, extremes])
    ref = reference(y, mode)
    assert torch.equal(round_tensor(y, mode).double(), ref)
    ok = y.abs() < 2.0 ** 100  # the fused path may turn |2y| overflow into inf (clamped later)
    assert torch.equal(scaled_round(y, 1.0, mode).double()[ok], ref[ok])


@pytest.mark.parametrize("mode", ALL)
def test_nonfinite_pass_through(mode):
    y = torch.tensor([math.inf, -math.inf, math.nan])
    r = round_tensor(y, mode)
    assert r[0].item() == math.inf and r[1].item() == -math.inf and math.isnan(r[2].item())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1,
                max_size=20), st.sampled_from(ALL))
def test_float64_exact_against_fractions(values, mode):
    y = torch.tensor(values, dtype=torch.float64)
    expect = [float(exact_round(Fraction(v), mode)) for v in y.tolist()]
    assert round_tensor(y, mode).tolist() == expect
    assert scaled_round(y, 1.0, mode).tolist() == expect


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL)
def test_half_dtypes(dtype, mode):
    bits = torch.arange(0, 2 ** 16, dtype=torch.int32).to(torch.int16).view(dtype)
    y = bits[torch.isfinite(bits)]
    got = round_tensor(y, mode)
    assert got.dtype == dtype
    v = y.double()
    ref = reference(y.float(), mode)
    # values of >= 2^(mantissa) are integers in these dtypes
    big = v.abs() >= 2.0 ** (10 if dtype == torch.float16 else 7)
    ref[big] = v[big]
    assert torch.equal(got.double(), ref)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-300, max_value=300, width=32), min_size=1, max_size=30),
       st.integers(-12, 12), st.sampled_from(ALL))
def test_scaled_round_equals_round_of_product(values, fp, mode):
    x = torch.tensor(values, dtype=torch.float32)
    m = math.ldexp(1.0, fp)
    assert torch.equal(scaled_round(x, m, mode), round_tensor(x * m, mode))
    mt = torch.tensor([m], dtype=torch.float32)
    assert torch.equal(scaled_round(x, mt, mode), round_tensor(x * m, mode))


def test_round_numpy():
    y = np.array([-2.5, 0.5, 0.49999997], dtype=np.float32)
    assert round_numpy(y, M.HALF_UP).tolist() == [-2.0, 1.0, 0.0]
    assert round_numpy(y, M.STD_ROUND).dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ALL)
def test_cuda_matches_cpu(mode):
    y = torch.cat([near_ties_f32(8), torch.randn(10_000) * 100])
    assert torch.equal(round_tensor(y.cuda(), mode).cpu(), round_tensor(y, mode))
    assert torch.equal(scaled_round(y.cuda(), 0.25, mode).cpu(), scaled_round(y, 0.25, mode))
