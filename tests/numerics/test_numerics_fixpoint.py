"""Integer ranges, the fix-position cap and the range -> fp0 rule (numerics.md 1.2, 1.3, 4.1)."""
import math

import pytest

from nndct_lite.numerics.fixpoint import (TINY_STEP_FIX_POS, IntRange, fix_pos_from_range,
                                          int_range, max_fix_pos, scale_of_fix_pos)


@pytest.mark.parametrize("args, expect", [
    ((8,), (-128, 127)),
    ((16,), (-32768, 32767)),
    ((4,), (-8, 7)),
    ((2,), (-2, 1)),
    ((8, True, True), (-127, 127)),          # narrow range raises qmin only
    ((8, False), (0, 255)),                  # unsigned symmetric
    ((8, False, True), (0, 255)),            # narrow range ignored when unsigned
    ((8, True, False, False), (0, 255)),     # asymmetric is always unsigned
    ((2, True, True), (-1, 1)),
    ((16, False), (0, 65535)),
])
def test_int_range_table(args, expect):
    r = int_range(*args)
    assert (r.qmin, r.qmax) == expect


@pytest.mark.parametrize("bw", [0, 1, 33])
def test_int_range_rejects_bit_widths(bw):
    with pytest.raises(ValueError):
        int_range(bw)


def test_int_range_32_bits_is_int32():   # the int32 bias of CPU/GPU kernels
    r = int_range(32)
    assert (r.qmin, r.qmax) == (-2 ** 31, 2 ** 31 - 1)


def test_empty_range_rejected():
    with pytest.raises(ValueError):
        IntRange(3, 3)


def test_cap():
    assert [max_fix_pos(b) for b in (2, 4, 8, 9, 16)] == [12, 12, 12, 15, 15]


@pytest.mark.parametrize("hi, fp", [
    (0.99, 7),        # 127.5 / 0.99 = 128.8
    (1.0, 6),         # 127.5
    (1.01, 6),        # 126.2
    (1e-8, 33),       # uncapped: 1.275e10 -> 33 (the cap then gives 12)
    (0.0, TINY_STEP_FIX_POS),
    (127.5 / 64, 6),  # exactly on a power of two: exact integer log2
    (255.0, -1),      # T8: raw pixels
    (1.0 - 2 ** -24, 6),
])
def test_fix_pos_for_maxima(hi, fp):
    assert fix_pos_from_range(0.0, hi, 8) == fp
    assert min(fix_pos_from_range(0.0, hi, 8), max_fix_pos(8)) == min(fp, 12)


@pytest.mark.parametrize("lo, hi, fp", [
    (-2.1179, 2.64, 5),   # T8: ImageNet-normalized input
    (0.0, 1.0, 6),        # T8
    (-1.0, 0.0, 7),       # Example 6: 1/128.5 step
    (-1.0, 1.0, 6),
    (-0.7, 1.9, 6),       # Example 4
    (-1000.0, 0.0, -3),
])
def test_fix_pos_from_range_examples(lo, hi, fp):
    assert fix_pos_from_range(lo, hi, 8) == fp


def test_float32_boundary_quirk():
    # numerics.md 15: fp0 is computed in float32; a maximum one or two ulps above 127.5 / 2^7
    # still gets fp 7 (its float32 step rounds to exactly 2^-7), as in the original
    at = 127.5 / 128
    above = [0.9960938096046448, 0.9960938692092896, 0.9960939288139343]
    assert fix_pos_from_range(0.0, at, 8) == 7
    assert [fix_pos_from_range(0.0, v, 8) for v in above] == [7, 7, 6]
    assert all(v * 128 > 127.5 for v in above)


def test_fix_pos_16_bit():
    assert fix_pos_from_range(0.0, 1.0, 16) == 14   # 32767.5 -> log2 = 14.99
    assert fix_pos_from_range(-1.0, 0.0, 16) == 15  # 32768.5


def test_overflowing_inverse_step():
    assert fix_pos_from_range(0.0, 1e-38, 8) == math.inf


def test_scale_of_fix_pos():
    assert scale_of_fix_pos(7) == 1 / 128 and scale_of_fix_pos(-1) == 2.0


def test_raw_positions_of_t5_to_t7():
    assert fix_pos_from_range(-0.7, 1.9, 8) == 6            # T5: fp0 (the search keeps 6)
    assert fix_pos_from_range(0.0, 1.0, 8) == 6             # T6: fp0 of [1.0, 0.01, 0.07]
    assert fix_pos_from_range(-0.0004, 0.001, 8) == 16      # T7: raw 16, capped to 12
    assert fix_pos_from_range(0.0, 0.0, 8) == 18            # T7: zero tensor, capped to 12
    assert min(fix_pos_from_range(-0.0004, 0.001, 8), max_fix_pos(8)) == 12
