"""Cost and effect of the quantizer's algorithms on the pretrained CIFAR ResNet-20.

Times (all in one process, on the same machine, interleaved with their reference):

  epoch          ONE float training epoch over the calibration images: SGD (lr 0.01, momentum
                 0.9), batch 100, cross-entropy, on a copy of the float model in train mode. It is
                 the unit of every ratio below. It is measured before and after the algorithms
                 and the median of those runs is used.
  CLE            the cross-layer equalization pass itself (capture + BN folding with and without
                 CLE, the difference; also the pass alone on a folded graph).
  bias corr      calibration over the images with include_bias_corr true minus the same with it
                 false (CLE on in both).
  fast finetune  the ``fast_finetune(run_fn, run_args)`` call alone, at the DPU default and at
                 W4A8 (4-bit per-channel float-scale weights, 8-bit activations, CPU target).

Accuracies (top-1 on the test images, default all 10,000): float; plain (CLE and bias correction
off); +CLE; +bias corr; +CLE +bias corr (the default); default + fast finetune; W4A8 plain (CLE and
bias correction off) and W4A8 + fast finetune.

    python bench/bench_algorithms.py                  # 1000 calib images, 10,000 test images,
                                                      # writes docs/bench_algorithms.md
    python bench/bench_algorithms.py --quick          # 200 / 1000 images, prints only

Needs ../shared/data and ../shared/reference/golden/resnet20/model.py; without them it says so
and exits 0.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import importlib.util
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
GOLDEN_MODEL = SHARED / "reference" / "golden" / "resnet20" / "model.py"
NEEDED = [GOLDEN_MODEL, SHARED / "data" / "weights" / "resnet20-12fca82f.th",
          SHARED / "data" / "cifar10" / "calib.npz", SHARED / "data" / "cifar10" / "test.npz"]

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

W4A8 = {
    "target_device": "CPU", "include_cle": False, "include_bias_corr": False,
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                "calib_statistic_method": "max", "round_mode": "half_even"},
    "tensor_quantize_config": {"weights": {"bit_width": 4, "per_channel": True,
                                           "scale_type": "float", "method": "maxmin"}},
}
CONFIGS = {
    "plain": {"include_cle": False, "include_bias_corr": False},
    "+CLE": {"include_cle": True, "include_bias_corr": False},
    "+bias corr": {"include_cle": False, "include_bias_corr": True},
    "default (+CLE +bias corr)": {"include_cle": True, "include_bias_corr": True},
}


def golden_module():
    spec = importlib.util.spec_from_file_location("golden_resnet20_bench", GOLDEN_MODEL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def forward_batches(model, data, batch):
    with torch.no_grad():
        for i in range(0, len(data), batch):
            model(data[i:i + batch])


def accuracy(model, x, y, batch=500) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


def train_epoch(model_fn, x, y, batch=100) -> float:
    """Seconds of one SGD epoch over (x, y) on a fresh copy of the float model."""
    model = copy.deepcopy(model_fn()).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        opt.zero_grad()
        loss_fn(model(x[i:i + batch]), y[i:i + batch]).backward()
        opt.step()
    return time.perf_counter() - t


class Run:
    """One calib (+ optional fast finetune) -> export -> test-mode quantizer, timed by phase."""

    def __init__(self, model_fn, calib, cfg, out_dir: Path, finetune=False, batch=100):
        from nndct_lite import torch_quantizer
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = out_dir / "cfg.json"
        cfg_file.write_text(json.dumps(cfg))
        t0 = time.perf_counter()
        q = torch_quantizer("calib", model_fn(), (calib[:1],), output_dir=str(out_dir),
                            quant_config_file=str(cfg_file))
        t1 = time.perf_counter()
        if finetune:
            q.fast_finetune(forward_batches, (q.quant_model, calib, batch))
        t2 = time.perf_counter()
        forward_batches(q.quant_model, calib, batch)
        q.export_quant_config()
        t3 = time.perf_counter()
        self.prepare_s, self.finetune_s, self.calib_s = t1 - t0, t2 - t1, t3 - t2
        self.test = torch_quantizer("test", model_fn(), (calib[:1],), output_dir=str(out_dir),
                                    quant_config_file=str(cfg_file))
        if finetune:
            self.test.load_ft_param()


def calib_seconds(model_fn, calib, cfg, out_dir: Path, repeats: int, batch=100) -> float:
    """Median seconds of the calibration forwards + export_quant_config (construction excluded)."""
    from nndct_lite import torch_quantizer
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = out_dir / "cfg.json"
    cfg_file.write_text(json.dumps(cfg))
    times = []
    for _ in range(repeats):
        q = torch_quantizer("calib", model_fn(), (calib[:1],), output_dir=str(out_dir),
                            quant_config_file=str(cfg_file))
        t = time.perf_counter()
        forward_batches(q.quant_model, calib, batch)
        q.export_quant_config()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cle_pass_seconds(model_fn, example, repeats=5) -> tuple[float, float]:
    """(capture+fold+CLE minus capture+fold, the CLE pass alone), medians over ``repeats``."""
    from nndct_lite.algorithms.cle import cross_layer_equalize
    from nndct_lite.graph.capture import capture
    from nndct_lite.graph.passes.fold_bn import fold_batchnorm
    with_cle, without, alone = [], [], []
    model = model_fn()
    for _ in range(repeats):
        t = time.perf_counter()
        g, _ = capture(model, (example,))
        fold_batchnorm(g)
        t_fold = time.perf_counter()
        cross_layer_equalize(g)
        t_end = time.perf_counter()
        without.append(t_fold - t)
        with_cle.append(t_end - t)
        alone.append(t_end - t_fold)
    return statistics.median(with_cle) - statistics.median(without), statistics.median(alone)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calib", type=int, default=1000, help="calibration images (default 1000)")
    ap.add_argument("--test", type=int, default=10000, help="test images (default 10000)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="repeats of the short timings (CLE pass, calibration), default 5")
    ap.add_argument("--quick", action="store_true", help="200 calib / 1000 test images, no doc")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_algorithms.md"),
                    help="markdown report (default docs/bench_algorithms.md)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    missing = [str(p) for p in NEEDED if not p.exists()]
    if missing:
        print("bench_algorithms: ../shared is not available, nothing to measure:",
              ", ".join(missing))
        return 0
    if args.quick:
        args.calib, args.test, args.no_write = 200, 1000, True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logging.getLogger("nndct_lite").setLevel(logging.ERROR)
    gm = golden_module()
    xc, yc = gm.cifar("calib", args.calib)
    xt, yt = gm.cifar("test", args.test)
    tmp = Path(tempfile.mkdtemp(prefix="bench_algorithms_"))

    epochs = [train_epoch(gm.resnet20, xc, yc) for _ in range(2)]
    rows, acc = {}, {}
    log = lambda *a: print(*a, flush=True)  # noqa: E731

    t = time.perf_counter()
    acc["float"] = accuracy(gm.resnet20(), xt, yt)
    float_eval_s = time.perf_counter() - t
    log(f"float: {acc['float']:.2f} %  (eval {float_eval_s:.1f} s); epoch {epochs}")

    cle_total, cle_alone = cle_pass_seconds(gm.resnet20, xc[:1], args.repeats)
    rows["CLE (pass, in torch_quantizer construction)"] = cle_total
    rows["CLE (equalization only)"] = cle_alone

    runs = {}
    for name, cfg in CONFIGS.items():
        runs[name] = Run(gm.resnet20, xc, cfg, tmp / name.replace(" ", "_"))
        acc[name] = accuracy(runs[name].test.quant_model, xt, yt)
        log(f"{name}: {acc[name]:.2f} %  (calib {runs[name].calib_s:.1f} s)")
    epochs.append(train_epoch(gm.resnet20, xc, yc))
    cal_bc = calib_seconds(gm.resnet20, xc, CONFIGS["default (+CLE +bias corr)"],
                           tmp / "t_bc", args.repeats)
    cal_nobc = calib_seconds(gm.resnet20, xc, CONFIGS["+CLE"], tmp / "t_nobc", args.repeats)
    rows["bias correction (calibration with minus without)"] = cal_bc - cal_nobc
    rows["calibration, default config (for scale)"] = cal_bc

    ft = Run(gm.resnet20, xc, CONFIGS["default (+CLE +bias corr)"], tmp / "ft", finetune=True)
    acc["default + fast finetune"] = accuracy(ft.test.quant_model, xt, yt)
    rows["fast finetune, DPU default"] = ft.finetune_s
    log(f"default + fast finetune: {acc['default + fast finetune']:.2f} %  "
        f"(finetune {ft.finetune_s:.1f} s)")
    epochs.append(train_epoch(gm.resnet20, xc, yc))

    w4 = Run(gm.resnet20, xc, W4A8, tmp / "w4")
    acc["W4A8 plain"] = accuracy(w4.test.quant_model, xt, yt)
    log(f"W4A8 plain: {acc['W4A8 plain']:.2f} %")
    w4ft = Run(gm.resnet20, xc, W4A8, tmp / "w4ft", finetune=True)
    acc["W4A8 + fast finetune"] = accuracy(w4ft.test.quant_model, xt, yt)
    rows["fast finetune, W4A8"] = w4ft.finetune_s
    log(f"W4A8 + fast finetune: {acc['W4A8 + fast finetune']:.2f} %  "
        f"(finetune {w4ft.finetune_s:.1f} s)")
    epochs.append(train_epoch(gm.resnet20, xc, yc))

    epoch = statistics.median(epochs)
    lines = [f"| {k} | {v:.3f} | {v / epoch:.3f}× |" for k, v in rows.items()]
    acc_lines = [f"| {k} | {v:.2f} | {v - acc['float']:+.2f} |" for k, v in acc.items()]
    w4_lost = acc["float"] - acc["W4A8 plain"]
    w4_back = acc["W4A8 + fast finetune"] - acc["W4A8 plain"]
    cmd = "python " + " ".join(shlex.quote(a) for a in [
        "bench/bench_algorithms.py", *(argv if argv is not None else sys.argv[1:])])
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    report = "\n".join([
        "# Algorithm cost and effect on ResNet-20 (CIFAR-10)",
        "",
        f"Generated by `{cmd}` on {_dt.date.today().isoformat()}: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
        f"load average at the end {', '.join(f'{v:.1f}' for v in load)}.",
        f"Calibration / finetune data: the first {args.calib} images of `calib.npz` in batches "
        f"of 100; accuracy on the first {args.test} images of `test.npz`.",
        "",
        "## Time, as multiples of one float training epoch over the same images",
        "",
        f"One epoch (SGD, batch 100, {args.calib} images): median {epoch:.2f} s of "
        f"{len(epochs)} runs ({', '.join(f'{e:.2f}' for e in epochs)} s), measured before, "
        "between and after the algorithms.",
        "",
        "Calibration times are medians of "
        f"{args.repeats} runs (the forwards over the images and export_quant_config); the CLE "
        "rows are medians of as many graph captures.",
        "",
        "| algorithm | seconds | ratio to one epoch |",
        "|---|---:|---:|",
        *lines,
        "",
        "## Accuracy (top-1, %)",
        "",
        "| model | top-1 | vs float |",
        "|---|---:|---:|",
        *acc_lines,
        "",
        f"W4A8: plain calibration loses {w4_lost:.2f} points; fast finetune wins back "
        f"{w4_back:.2f} of them"
        + (f" ({100 * w4_back / w4_lost:.0f} %)." if w4_lost > 0 else "."),
        "",
        "The W4A8 config: " + "`" + json.dumps(W4A8) + "`",
        "",
    ])
    print(report)
    if not args.no_write:
        Path(args.out).write_text(report, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
