"""The fused CPU kernels (numerics/native.py, fused.c) against the torch-op path they replace:
fake quantization bit for bit, the diffs errors and bias-correction statistics against float64
references, the fallbacks, and a whole calibration with and without them."""
from __future__ import annotations

import contextlib
import json
import logging
import math
from unittest import mock

import pytest
import torch
import torch.nn as nn

from nndct_lite.numerics import native
from nndct_lite.numerics.fake_quant import fake_quantize_pof2, fake_quantize_pof2_
from nndct_lite.numerics.rounding import RoundMode

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: torch path only")


def _nasty(n: int = 20_000, seed: int = 0) -> torch.Tensor:
    """Normal values plus exact ties at fp 5, the float32 0.49999997 step, +-inf, NaN, huge."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 3
    x[::7] = torch.round(x[::7] * 64) / 64 + 1 / 64       # ties at fp 5 (odd multiples of 2^-6)
    x[1::11] = (0.5 - 2 ** -25) / 32                        # floor(y + 0.5) would give 1
    x[2] = math.inf
    x[3] = -math.inf
    x[4] = math.nan
    x[5] = 3e38
    x[6] = -127.5 / 32
    x[8] = 127.5 / 32
    return x


def _torch_fq_(x: torch.Tensor, fp: int, mode: RoundMode) -> torch.Tensor:
    with mock.patch.object(native, "fake_quantize_", lambda *a, **k: False):
        return fake_quantize_pof2_(x, fp, -128, 127, mode)


@needs_native
@pytest.mark.parametrize("mode", [RoundMode.HALF_UP, RoundMode.HALF_EVEN])
@pytest.mark.parametrize("fp", [-3, 0, 5, 12])
def test_fused_fake_quant_is_bit_identical(mode, fp):
    x = _nasty()
    fused = fake_quantize_pof2_(x.clone(), fp, -128, 127, mode)
    ref = _torch_fq_(x.clone(), fp, mode)
    assert torch.equal(fused.isnan(), ref.isnan())
    ok = ~ref.isnan()
    assert torch.equal(fused[ok].view(torch.int32), ref[ok].view(torch.int32))
    # and the out-of-place reference kernel agrees on the finite values
    out = fake_quantize_pof2(x, fp, -128, 127, mode)
    fin = torch.isfinite(x)
    assert torch.equal(fused[fin], out[fin])


@needs_native
def test_fused_fake_quant_worked_values():
    # numerics.md 2.1: half_up is ties toward +inf; 0.49999997 is not a tie
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.5 - 2 ** -25, 200.0, -200.0])
    y = x.clone()
    assert native.fake_quantize_(y, 0, -128, 127, True)
    assert y.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 0.0, 127.0, -128.0]
    y = x.clone()
    assert native.fake_quantize_(y, 0, -128, 127, False)
    assert y.tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, 127.0, -128.0]


@needs_native
def test_fused_fake_quant_channels_last_in_place():
    x = torch.randn(2, 3, 5, 4).to(memory_format=torch.channels_last)
    ptr = x.data_ptr()
    ref = _torch_fq_(x.clone(), 4, RoundMode.HALF_UP)
    fused = fake_quantize_pof2_(x, 4, -128, 127, RoundMode.HALF_UP)
    assert fused.data_ptr() == ptr and torch.equal(fused, ref)


def test_fused_fake_quant_declines_what_it_cannot_do():
    x = torch.randn(4, 6)[:, ::2]            # not dense
    assert native.fake_quantize_(x, 3, -128, 127, True) is False
    assert native.fake_quantize_(torch.randn(5, dtype=torch.float64), 3, -128, 127, True) is False


@needs_native
@pytest.mark.parametrize("mode", ["half_even", "floor", "ceil"])
def test_fused_diffs_errors_match_float64(mode):
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(300_001, generator=g)) * 2
    fps = [4, 5, 6, 7, 8]
    got = native.diffs_errors(x, fps, -128, 127, mode)
    rnd = {"half_even": torch.round, "floor": torch.floor, "ceil": torch.ceil}[mode]
    xd = x.double()
    for f, e in zip(fps, got):
        q = rnd(xd * 2.0 ** f).clamp(-128, 127) * 2.0 ** -f
        assert e == pytest.approx(float(((xd - q) ** 2).sum()), rel=1e-6)


@needs_native
def test_fused_search_gives_the_torch_search_fix_positions():
    from nndct_lite.calib import diffs_fix_pos
    from nndct_lite.config.spec import DPU_ACT_SPEC
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        x = torch.relu(torch.randn(50_000, generator=g)) * (0.01 * (seed + 1))
        x[:seed * 10] *= 15
        fused = diffs_fix_pos(x, DPU_ACT_SPEC)
        with mock.patch.object(native, "diffs_errors", lambda *a, **k: None):
            assert diffs_fix_pos(x, DPU_ACT_SPEC) == fused


@needs_native
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "linear", "conv1d"])
def test_fused_bc_stats_match_float64(layout):
    g = torch.Generator().manual_seed(2)
    shape = {"nchw": (8, 6, 9, 7), "channels_last": (8, 6, 9, 7), "linear": (33, 10),
             "conv1d": (4, 5, 3000)}[layout]
    f = torch.randn(shape, generator=g)
    q = f + 0.05 * torch.randn(shape, generator=g) + 0.01
    if layout == "channels_last":
        f, q = (t.contiguous(memory_format=torch.channels_last) for t in (f, q))
    dims = [0] if layout == "linear" else [d for d in range(f.dim()) if d != 1]
    sig, noise, mean = native.bc_stats(q, f, dims)
    fd, qd = f.double(), q.double()
    assert sig == pytest.approx(float((fd * fd).mean()), rel=1e-6)
    assert noise == pytest.approx(float(((qd - fd) ** 2).mean()), rel=1e-6)
    torch.testing.assert_close(mean, (qd - fd).mean(dim=dims).float(), rtol=0, atol=1e-7)


def test_fused_bc_stats_decline_other_reductions():
    q = torch.randn(2, 3, 4)
    assert native.bc_stats(q, q.clone(), [0, 1, 2]) is None      # the conv1d quirk: all dims
    assert native.bc_stats(q, q.transpose(1, 2).contiguous().transpose(1, 2), [0, 2]) is None


def test_disabled_by_environment(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    monkeypatch.setattr(native, "_state", {})
    with caplog.at_level(logging.INFO, logger="nndct_lite"):
        assert native.kernels() is None
    assert "disabled" in caplog.text and native.NATIVE_ENV in caplog.text
    x = torch.randn(10)
    assert native.fake_quantize_(x, 3, -128, 127, True) is False


def test_no_compiler_falls_back_with_one_message(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_state", {})
    with caplog.at_level(logging.INFO, logger="nndct_lite"):
        assert native.kernels() is None
        assert native.kernels() is None
    assert caplog.text.count("unavailable") == 1
    assert [r.levelname for r in caplog.records if "unavailable" in r.message] == ["WARNING"]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.so"))


@needs_native
def test_build_is_cached_and_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    assert native.kernels() is not None
    libs = list(tmp_path.rglob("*.so"))
    assert len(libs) == 1 and not list(tmp_path.rglob("*.tmp"))
    stamp = libs[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_state", {})
    with mock.patch.object(native.subprocess, "run", side_effect=AssertionError("rebuilt")):
        assert native.kernels() is not None
    assert libs[0].stat().st_mtime_ns == stamp


@needs_native
def test_tampered_or_foreign_cache_is_rebuilt_not_loaded(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(native, "_state", {})
    assert native.kernels() is not None
    lib = next(tmp_path.rglob("*.so"))
    good = lib.read_bytes()
    planted = lib.with_name("planted")
    planted.write_bytes(good + b"planted")                  # changed after the build (a new
    planted.chmod(0o755)                                    # inode: the loaded one stays mapped)
    planted.replace(lib)
    monkeypatch.setattr(native, "_state", {})
    with caplog.at_level(logging.WARNING, logger="nndct_lite"):
        assert native.kernels() is not None
    assert "ignoring the cached fused kernels" in caplog.text
    assert lib.read_bytes() == good or native._trusted(lib)
    lib.chmod(0o777)                                          # writable by others
    assert not native._trusted(lib)


def test_cache_dir_honours_env_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(native.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native._cache_dir() == tmp_path / "xdg" / "nndct_lite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert native._cache_dir().name == "nndct_lite" and native._cache_dir().is_absolute()
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "own"))
    assert native._cache_dir() == tmp_path / "own"


def test_cpu_key_is_never_empty_and_reads_arm_features(monkeypatch):
    arm = "processor\t: 0\nFeatures\t: fp asimd aes sha2\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"
    real_open = open

    def fake_open(path, *a, **kw):
        if path == "/proc/cpuinfo":
            import io
            return io.StringIO(arm)
        return real_open(path, *a, **kw)
    monkeypatch.setattr("builtins.open", fake_open)
    key = native._cpu_key()
    assert "asimd" in key and "0xd0c" in key


def test_rejected_flags_fall_back_variant_by_variant(monkeypatch, tmp_path):
    """A compiler that rejects -march=native and -fopenmp (Apple clang) still gets a build, and
    a compiler that times out or cannot start is one failed variant, not a crash."""
    import subprocess as sp
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    calls = []
    real_run = sp.run

    def picky(cmd, *a, **kw):
        calls.append(cmd)
        if "-march=native" in cmd or "-fopenmp" in cmd:
            return sp.CompletedProcess(cmd, 1, "", "error: unsupported option")
        if "-fopenmp-simd" in cmd:
            raise sp.TimeoutExpired(cmd, 120)
        return real_run(cmd, *a, **kw)
    monkeypatch.setattr(native.subprocess, "run", picky)
    monkeypatch.setattr(native, "_state", {})
    if native._compiler() is None:
        pytest.skip("no C compiler")
    assert native.kernels() is not None
    assert len(calls) == len(native._VARIANTS)               # the last variant: plain C
    assert native._state["threaded"] is False


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(y.mean(dim=(2, 3)))


@needs_native
def test_calibration_and_test_mode_agree_with_the_torch_path(tmp_path, monkeypatch):
    """Same model and data, kernels on and off: the same quant_info.json, bias corrections
    within 1e-6, and test-mode outputs bit for bit (given the same quant_info)."""
    from nndct_lite import torch_quantizer
    monkeypatch.setenv("NNDCT_LITE_REPORT_BATCHES", "0")
    torch.manual_seed(0)
    net = _Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    data = torch.randn(64, 3, 12, 12)

    results = {}
    for off in (False, True):
        out = tmp_path / ("torch" if off else "fused")
        patches = [mock.patch.object(native, n, (lambda r: (lambda *a, **k: r))(r))
                   for n, r in (("fake_quantize_", False), ("diffs_errors", None),
                                ("bc_stats", None))] if off else []
        for p in patches:
            p.start()
        try:
            model = _Net().eval()
            model.load_state_dict(net.state_dict())
            q = torch_quantizer("calib", model, (data[:1],), output_dir=str(out))
            with torch.no_grad():
                for i in range(0, 64, 16):
                    q.quant_model(data[i:i + 16])
            q.export_quant_config()
        finally:
            for p in patches:
                p.stop()
        info = json.loads((out / "quant_info.json").read_text())
        results[off] = (info, torch.load(out / "bias_corr.pth", weights_only=True))
    (i_f, b_f), (i_t, b_t) = results[False], results[True]
    assert i_f["param"] == i_t["param"] and i_f["output"] == i_t["output"]
    assert b_f.keys() == b_t.keys()
    for k in b_f:
        torch.testing.assert_close(b_f[k], b_t[k], rtol=0, atol=1e-6)
    # test mode from the same files, kernels on and off: identical outputs
    outs = []
    for off in (False, True):
        model = _Net().eval()
        model.load_state_dict(net.state_dict())
        qt = torch_quantizer("test", model, (data[:1],), output_dir=str(tmp_path / "fused"))
        with mock.patch.object(native, "fake_quantize_", lambda *a, **k: False) if off \
                else contextlib.nullcontext():
            with torch.no_grad():
                outs.append(qt.quant_model(data))
    assert torch.equal(outs[0], outs[1])


@needs_native
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_kernels_give_the_same_bits_for_any_thread_count(layout):
    """The threaded kernels split work into fixed blocks and add the partial sums in block
    order, so 1 and 2 threads give identical results (large enough to take the parallel path)."""
    g = torch.Generator().manual_seed(4)
    f = torch.randn(8, 16, 40, 40, generator=g)
    q = f + 0.05 * torch.randn(f.shape, generator=g)
    if layout == "channels_last":
        f, q = (t.contiguous(memory_format=torch.channels_last) for t in (f, q))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            x = q.clone(memory_format=torch.preserve_format)
            assert native.fake_quantize_(x, 4, -128, 127, True)
            errs = native.diffs_errors(q, [2, 3, 4, 5, 6], -128, 127, "half_even")
            sig, noise, mean = native.bc_stats(q, f, [0, 2, 3])
            results.append((x, errs, sig, noise, mean))
    finally:
        torch.set_num_threads(before)
    (x1, e1, s1, n1, m1), (x2, e2, s2, n2, m2) = results
    assert torch.equal(x1, x2) and e1 == e2 and (s1, n1) == (s2, n2) and torch.equal(m1, m2)
    assert torch.equal(x1, _torch_fq_(q.clone(memory_format=torch.preserve_format), 4,
                                      RoundMode.HALF_UP))
