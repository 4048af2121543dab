"""Numerics benchmark: fake-quant cost against the plain expression, observe cost against a copy.

    python bench/bench_numerics.py [--quick] [--threads N] [--append] [--out FILE]

Two tensors: 1M elements and a ResNet-50-sized activation (32x256x56x56). Each fake-quant row
times ``torch.clamp(torch.round(x * s), lo, hi) / s`` (the plain expression: half-even ties
only) and nndct_lite's exact kernel alternately in one loop, so machine load hits both; the
reported ratio is the median of the per-pair ratios. The "before" column is the previous
tie-fixing formula (round half-even, then correct ``y - r == +-0.5`` with boolean masks).
Observe rows time one ``observe()`` of an ACTIVATION observer (the per-batch path that runs on
every calibration batch) against ``x.clone()``. 2 threads (``--threads``), warm-up, median and
minimum of repeats.
Not a test.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nndct_lite.calib import BatchMode, Role, make_observer  # noqa: E402
from nndct_lite.config.spec import (CalibMethod, QuantSpec, RoundMode, ScaleType,  # noqa: E402
                                    StatMethod)
from nndct_lite.numerics import fake_quantize_affine, fake_quantize_pof2  # noqa: E402

M = RoundMode


def previous_round(y: torch.Tensor, mode: RoundMode) -> torch.Tensor:
    """The rounding formula this package used before (kept here for the 'before' column)."""
    q = torch.round(y)
    d = y - q
    if mode is M.HALF_UP:
        return q.add_((d == 0.5).to(q.dtype))
    if mode is M.STD_ROUND:
        up = (d == 0.5) & (y > 0)
        down = (d == -0.5) & (y < 0)
        return q.add_(up.to(q.dtype)).sub_(down.to(q.dtype))
    return q


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Pair:
    """Times of two alternated functions."""

    def __init__(self, ta: list[float], tb: list[float]):
        self.med_a, self.med_b = statistics.median(ta), statistics.median(tb)
        self.min_a, self.min_b = min(ta), min(tb)
        self.ratio = statistics.median(b / a for a, b in zip(ta, tb))
        self.min_ratio = self.min_b / self.min_a


def paired(fa, fb, reps: int) -> Pair:
    """Alternate fa and fb after a warm-up."""
    for _ in range(2):
        fa(), fb()
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(fa))
        tb.append(timed(fb))
    return Pair(ta, tb)


def fake_quant_rows(x: torch.Tensor, reps: int):
    axis = 1 if x.dim() > 1 else None
    rows = []
    fp, lo, hi = 5, -128, 127
    s = 2.0 ** fp
    plain = lambda: torch.clamp(torch.round(x * s), lo, hi) / s  # noqa: E731
    for mode in (M.HALF_UP, M.STD_ROUND):
        ours = lambda mode=mode: fake_quantize_pof2(x, fp, lo, hi, mode)  # noqa: E731
        before = lambda mode=mode: torch.clamp(  # noqa: E731
            previous_round(x * s, mode), lo, hi) * (1 / s)
        rows.append((f"{mode.value} pof2, per-tensor", paired(plain, ours, reps),
                     paired(plain, before, reps)))
    scale = 0.0123
    inv = float(torch.tensor(1 / scale, dtype=torch.float32))
    plain_f = lambda: torch.clamp(torch.round(x * inv), lo, hi) / inv  # noqa: E731
    ours_f = lambda: fake_quantize_affine(x, scale, 0, lo, hi, M.HALF_EVEN)  # noqa: E731
    rows.append(("half_even float scale, per-tensor", paired(plain_f, ours_f, reps), None))
    if axis is None:
        x2 = x.reshape(256, -1)
        axis = 0
    else:
        x2 = x
    c = x2.shape[axis]
    shape = [1] * x2.dim()
    shape[axis] = c
    fps = [4 + k % 4 for k in range(c)]
    sc = torch.tensor([2.0 ** f for f in fps], dtype=torch.float32).reshape(shape)
    plain_c = lambda: torch.clamp(torch.round(x2 * sc), lo, hi) / sc  # noqa: E731
    ours_c = lambda: fake_quantize_pof2(x2, fps, lo, hi, M.STD_ROUND, axis)  # noqa: E731
    before_c = lambda: torch.clamp(  # noqa: E731
        previous_round(x2 * sc, M.STD_ROUND), lo, hi) * (1 / sc)
    rows.append((f"std_round pof2, per-channel ({c} ch)", paired(plain_c, ours_c, reps),
                 paired(plain_c, before_c, reps)))
    scales = [0.01 + 0.001 * (k % 7) for k in range(c)]
    fs = torch.tensor([float(torch.tensor(1 / v, dtype=torch.float32)) for v in scales])
    fs = fs.reshape(shape)
    plain_cf = lambda: torch.clamp(torch.round(x2 * fs), lo, hi) / fs  # noqa: E731
    ours_cf = lambda: fake_quantize_affine(  # noqa: E731
        x2, scales, [0] * c, lo, hi, M.HALF_EVEN, axis)
    rows.append((f"half_even float scale, per-channel ({c} ch)", paired(plain_cf, ours_cf, reps),
                 None))
    return rows


FLOAT = QuantSpec(scale_type=ScaleType.FLOAT, round_mode=RoundMode.HALF_EVEN,
                  calib_statistic_method=StatMethod.MAX)
POF2 = QuantSpec(round_mode=RoundMode.HALF_UP)
CALIBRATORS = [
    ("diffs (pof2, scope 5)", POF2, Role.ACTIVATION, False, {}),
    ("diffs, model input (scope 1)", POF2, Role.MODEL_INPUT, False, {}),
    ("diffs per-channel (scope 5)", POF2.with_(per_channel=True), Role.ACTIVATION, True, {}),
    ("maxmin float, symmetric", FLOAT.with_(method=CalibMethod.MAXMIN), Role.ACTIVATION, False,
     {}),
    ("maxmin float, asymmetric per-channel",
     FLOAT.with_(method=CalibMethod.MAXMIN, symmetry=False, per_channel=True), Role.ACTIVATION,
     True, {}),
    ("percentile, per-batch", FLOAT.with_(method=CalibMethod.PERCENTILE), Role.ACTIVATION,
     False, {}),
    ("mse, per-batch", FLOAT.with_(method=CalibMethod.MSE), Role.ACTIVATION, False, {}),
    ("entropy, per-batch", FLOAT.with_(method=CalibMethod.ENTROPY), Role.ACTIVATION, False, {}),
    ("histogram, accumulated (any method)", FLOAT.with_(method=CalibMethod.ENTROPY),
     Role.ACTIVATION, False, {"batch_mode": BatchMode.ACCUMULATE}),
]


def observe_rows(x: torch.Tensor, reps: int):
    rows = []
    x_pc = x if x.dim() > 1 else x.reshape(256, -1)
    axis = 1 if x.dim() > 1 else 0
    for label, spec, role, per_channel, kw in CALIBRATORS:
        obs = make_observer(spec, role=role, axis=axis if per_channel else None, **kw)
        t = x_pc if per_channel else x
        rows.append((label, paired(lambda: t.clone(), lambda: obs.observe(t), reps)))
    obs = make_observer(FLOAT.with_(method=CalibMethod.ENTROPY), role=Role.ACTIVATION,
                        batch_mode=BatchMode.ACCUMULATE)
    obs.observe(x)
    t_compute = statistics.median(timed(obs.compute) for _ in range(5))
    return rows, t_compute


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
            f"1-min load average at start {load:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--append", action="store_true",
                    help="add this run as a section of the output file instead of replacing it")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"
                                         / "bench_numerics.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = machine()
    tensors = [("1M elements (1048576,)", torch.randn(1 << 20), 9 if args.quick else 41),
               ("ResNet-50 activation 32x256x56x56", torch.randn(32, 256, 56, 56),
                3 if args.quick else 7)]
    flags = (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads != 2 else "")
    lines = ["# Numerics benchmark" if not args.append else f"# Run with{flags}", "",
             f"Command: `python bench/bench_numerics.py{flags}`", "",
             f"Machine: {info}", "",
             "Fake quant: time of nndct_lite's exact kernel over the plain expression "
             "`torch.clamp(torch.round(x*s), lo, hi)/s`, the two timed alternately. "
             "`before` = the tie-fixing formula used before this change. Observe: one "
             "`observe()` of an ACTIVATION observer over one `x.clone()`. With other jobs on "
             "the machine the medians carry their noise; the min / min ratio is the "
             "uncontended estimate.", ""]
    for label, x, reps in tensors:
        lines += [f"## {label}", "",
                  "| fake quant | plain ms, median (min) | ours ms, median (min) | ours / plain "
                  "(median of pairs) | ours / plain (min / min) | before / plain (min / min) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, p, b in fake_quant_rows(x, reps):
            before = "" if b is None else f"{b.min_ratio:.2f}x"
            lines.append(f"| {name} | {p.med_a * 1e3:.2f} ({p.min_a * 1e3:.2f}) | "
                         f"{p.med_b * 1e3:.2f} ({p.min_b * 1e3:.2f}) | {p.ratio:.2f}x | "
                         f"{p.min_ratio:.2f}x | {before} |")
        rows, t_compute = observe_rows(x, max(3, reps // 2))
        lines += ["", "| observe (one batch) | clone ms, median (min) | observe ms, median (min) "
                  "| observe / clone (median of pairs) | observe / clone (min / min) |",
                  "|---|---:|---:|---:|---:|"]
        for name, p in rows:
            lines.append(f"| {name} | {p.med_a * 1e3:.2f} ({p.min_a * 1e3:.2f}) | "
                         f"{p.med_b * 1e3:.1f} ({p.min_b * 1e3:.1f}) | {p.ratio:.1f}x | "
                         f"{p.min_ratio:.1f}x |")
        lines += ["", f"compute() of the accumulated entropy histogram: {t_compute * 1e3:.1f} ms "
                  "(independent of the tensor size)", ""]
        print("\n".join(lines[-(len(rows) + 13):]), flush=True)
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    if args.append and out.exists():
        text = out.read_text().rstrip("\n") + "\n\n" + text.replace("\n## ", "\n### ")
    out.write_text(text)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
