"""Issue #9: nndct_lite against torch.ao FX post-training quantization on CIFAR-10.

Same calibration images (the first N of shared/data/cifar10/calib.npz) and the same test images
(all 10,000 of test.npz) for every configuration. Models: ResNet-20 (the golden module), and
ResNet-32/44/56 and ShuffleNetV2 x0.5 when their weights are present.

Configurations (``--configs``, default all):

  float          the float model
  ao_pt          torch.ao FX (prepare_fx/convert_fx), x86 qconfig mapping with per-tensor
                 symmetric MinMax weights, HistogramObserver activations; int8 x86 kernels
  ao_pc          torch.ao FX, the x86 default qconfig mapping (per-channel symmetric weights,
                 HistogramObserver activations); int8 x86 kernels
  nd_dpu         nndct_lite, no config file (DPU, power-of-two, diffs, CLE + bias correction)
  nd_cpu_pc      nndct_lite, CPU target, float scales, per-channel weights, mse activations
  nd_dpu_ft      nndct_lite DPU default + fast_finetune on the calibration images
  ao_w4a8        torch.ao FX QAT-style fake quant (prepare_qat_fx, evaluated in eval mode):
                 weights qint8 per-channel restricted to -8..7, activations quint8 HistogramObserver
  nd_w4a8        nndct_lite CPU target, float scales, 4-bit per-channel weights
  nd_w4a8_ft     nd_w4a8 + fast_finetune

Each (model, configuration) runs in its own subprocess, so its peak RSS is its own. Times are
ratios measured inside that subprocess: calibration against a float pass over the calibration
images (the mean of one pass just before and one just after calibrating); evaluation against the
float model run on the same test batches, interleaved batch by batch (every ``--ref-every``-th
batch), so both see the same machine load.

    python bench/compare_peers.py                 # full run, writes docs/bench_peers.md
    python bench/compare_peers.py --quick         # smoke run: ResNet-20, 200 calib / 1000 test
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_models as cm  # noqa: E402

cm.ensure_repo_on_path()

import torch  # noqa: E402

ALL_MODELS = ["resnet20", "resnet32", "resnet44", "resnet56", "shufflenetv2_x0_5"]

CONFIGS = {
    # key: (tool, label)
    "float": ("float", "float (FP32)"),
    "ao_pt": ("torch.ao", "torch.ao FX int8, per-tensor weights, Histogram act."),
    "ao_pc": ("torch.ao", "torch.ao FX int8, per-channel weights (x86 default)"),
    "nd_dpu": ("nndct_lite", "nndct_lite DPU default (pof2, no config file)"),
    "nd_cpu_pc": ("nndct_lite", "nndct_lite CPU float scale, per-channel weights"),
    "nd_dpu_ft": ("nndct_lite", "nndct_lite DPU default + fast finetune"),
    "ao_w4a8": ("torch.ao", "torch.ao W4A8 fake-quant, per-channel weights"),
    "nd_w4a8": ("nndct_lite", "nndct_lite W4A8 CPU float scale, per-channel weights"),
    "nd_w4a8_ft": ("nndct_lite", "nndct_lite W4A8 CPU per-channel + fast finetune"),
}

CPU_PC_CONFIG = {
    "target_device": "CPU",
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                "calib_statistic_method": "max", "round_mode": "half_even"},
    "tensor_quantize_config": {"weights": {"per_channel": True},
                               "activation": {"method": "mse"}},
}
W4_CONFIG = copy.deepcopy(CPU_PC_CONFIG)
W4_CONFIG["tensor_quantize_config"]["weights"]["bit_width"] = 4

ND_SETTINGS = {
    # key: (config dict or None, fast finetune)
    "nd_dpu": (None, False),
    "nd_cpu_pc": (CPU_PC_CONFIG, False),
    "nd_dpu_ft": (None, True),
    "nd_w4a8": (W4_CONFIG, False),
    "nd_w4a8_ft": (W4_CONFIG, True),
}


# --------------------------------------------------------------------------- torch.ao flows
def _ao_qconfig_mapping(key: str):
    from torch.ao.quantization import (FakeQuantize, HistogramObserver, MinMaxObserver,
                                       PerChannelMinMaxObserver, QConfig, QConfigMapping,
                                       get_default_qconfig_mapping)
    if key == "ao_pc":
        return get_default_qconfig_mapping("x86")
    if key == "ao_pt":
        qc = QConfig(activation=HistogramObserver.with_args(reduce_range=True),
                     weight=MinMaxObserver.with_args(dtype=torch.qint8,
                                                     qscheme=torch.per_tensor_symmetric))
        return get_default_qconfig_mapping("x86").set_global(qc)
    if key == "ao_w4a8":
        act = FakeQuantize.with_args(observer=HistogramObserver, quant_min=0, quant_max=255,
                                     dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                     reduce_range=False)
        wt = FakeQuantize.with_args(observer=PerChannelMinMaxObserver, quant_min=-8, quant_max=7,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                    ch_axis=0)
        return QConfigMapping().set_global(QConfig(activation=act, weight=wt))
    raise KeyError(key)


def calibrate_ao(key: str, model, xc, bs: int):
    """Calibrated torch.ao model, ready to evaluate."""
    from torch.ao.quantization import (disable_fake_quant, disable_observer, enable_fake_quant,
                                       enable_observer)
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
    torch.backends.quantized.engine = "x86"
    mapping = _ao_qconfig_mapping(key)
    example = (xc[:1],)
    if key == "ao_w4a8":
        # fake quant needs the QAT modules (weight fake quant); eval mode = running BN stats,
        # so the simulated weights are the BN-folded ones, as in the int8 flows
        prepared = prepare_qat_fx(copy.deepcopy(model).train(), mapping, example_inputs=example)
        prepared.eval()
        prepared.apply(disable_fake_quant)
        prepared.apply(enable_observer)
        cm.forward_all(prepared, xc, bs)
        prepared.apply(disable_observer)
        prepared.apply(enable_fake_quant)
        return prepared
    prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, example_inputs=example)
    cm.forward_all(prepared, xc, bs)
    return convert_fx(prepared)


# --------------------------------------------------------------------------- nndct_lite flows
def _nd_config_file(key: str, workdir: Path) -> str | None:
    cfg, _ = ND_SETTINGS[key]
    if cfg is None:
        return None
    path = workdir / f"{key}.json"
    path.write_text(json.dumps(cfg, indent=2))
    return str(path)


def calibrate_nd(key: str, model, xc, bs: int, workdir: Path) -> float:
    """Calibrate; returns the seconds ``export_quant_config()`` spent on the per-layer report
    (``report.md`` + chart, part of every default calibration; torch.ao has no counterpart)."""
    from nndct_lite import torch_quantizer
    _, ft = ND_SETTINGS[key]
    cfg = _nd_config_file(key, workdir)
    q = torch_quantizer("calib", copy.deepcopy(model), (xc[:1],), output_dir=str(workdir / "qr"),
                        quant_config_file=cfg)
    session, spent = q._session, [0.0]
    write_report = session._write_report

    def timed_report():
        t = time.perf_counter()
        write_report()
        spent[0] += time.perf_counter() - t
    session._write_report = timed_report
    if ft:
        q.fast_finetune(cm.forward_all, (q.quant_model, xc, bs))
    cm.forward_all(q.quant_model, xc, bs)
    q.export_quant_config()
    return spent[0]


def test_model_nd(key: str, model, xc, workdir: Path):
    from nndct_lite import torch_quantizer
    _, ft = ND_SETTINGS[key]
    cfg = str(workdir / f"{key}.json") if ND_SETTINGS[key][0] is not None else None
    qt = torch_quantizer("test", copy.deepcopy(model), (xc[:1],), output_dir=str(workdir / "qr"),
                         quant_config_file=cfg)
    if ft:
        qt.load_ft_param()
    return qt.quant_model


# --------------------------------------------------------------------------- one configuration
def load_data(model_name: str, n_calib: int, n_test: int, synthetic: bool):
    if synthetic or not cm.have_data():
        xc, yc = cm.synthetic_cifar("calib", n_calib, model_name)
        xt, yt = cm.synthetic_cifar("test", n_test, model_name)
        return xc, yc, xt, yt, False
    xc, yc = cm.load_cifar("calib", n_calib, model_name)
    xt, yt = cm.load_cifar("test", n_test, model_name)
    return xc, yc, xt, yt, True


def run_config(model_name: str, key: str, n_calib: int, n_test: int, bs: int = 100,
               ref_every: int = 2, synthetic: bool = False, workdir: str | None = None) -> dict:
    """Run one configuration in this process; returns its measurements."""
    tool, label = CONFIGS[key]
    model, pretrained = cm.load_model(model_name, pretrained=False if synthetic else None)
    xc, yc, xt, yt, real = load_data(model_name, n_calib, n_test, synthetic)
    res = {"model": model_name, "config": key, "tool": tool, "label": label,
           "pretrained": pretrained, "real_data": real, "n_calib": len(xc), "n_test": len(xt)}
    # the peak RSS below is that of calibration + evaluation: restart the high-water mark
    # once the model and the data are loaded, and remember what they take
    res["baseline_rss_mib"] = cm.rss_mib()
    res["peak_reset"] = cm.reset_peak_rss()
    tmp = tempfile.TemporaryDirectory(prefix=f"peers_{key}_") if workdir is None else None
    wd = Path(workdir or tmp.name)
    try:
        if key == "float":
            ev = cm.paired_eval(model, None, xt, yt, bs)
            res.update(top1=ev["top1"], eval_s=ev["seconds"], eval_ratio=1.0, calib_s=0.0,
                       calib_ratio=None, float_top1=ev["top1"])
        else:
            f_before = cm.forward_all(model, xc, bs)
            t = time.perf_counter()
            report_s = None
            if tool == "torch.ao":
                qmodel = calibrate_ao(key, model, xc, bs)
                setup_s = 0.0
            else:
                report_s = calibrate_nd(key, model, xc, bs, wd)
            calib_s = time.perf_counter() - t
            f_after = cm.forward_all(model, xc, bs)
            if tool == "nndct_lite":
                t = time.perf_counter()
                qmodel = test_model_nd(key, model, xc, wd)
                setup_s = time.perf_counter() - t
            ev = cm.paired_eval(qmodel, model, xt, yt, bs, ref_every)
            res.update(top1=ev["top1"], eval_s=ev["seconds"], eval_ratio=ev["ratio_sum"],
                       eval_ratio_median=ev["ratio_median"], float_eval_s=ev["ref_seconds"],
                       float_top1_sampled=ev["ref_top1_sampled"], calib_s=calib_s,
                       float_calib_s=(f_before + f_after) / 2,
                       calib_ratio=calib_s / ((f_before + f_after) / 2), test_setup_s=setup_s,
                       report_s=report_s,
                       calib_ratio_noreport=None if report_s is None else
                       (calib_s - report_s) / ((f_before + f_after) / 2))
    finally:
        if tmp is not None:
            tmp.cleanup()
    res["peak_rss_mib"] = cm.peak_rss_mib()
    return res


def run_config_subprocess(spec: dict, timeout: float | None = None, omp: str = "inherit") -> dict:
    """Run ``run_config(**spec)`` in a fresh interpreter (clean peak RSS)."""
    spec = dict(spec)
    threads = spec.pop("threads", 2)
    with tempfile.TemporaryDirectory(prefix="peers_worker_") as d:
        out = Path(d) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec),
               "--_result", str(out), "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=cm.worker_env(omp))
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr)[-3000:]
            return {**spec, "model": spec["model_name"], "config": spec["key"],
                    "error": f"worker exit {proc.returncode}: {tail}"}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- report
def _fmt(v, f="{:.2f}", none="–"):
    return none if v is None else f.format(v)


def _rss(r: dict) -> str:
    base = r.get("baseline_rss_mib")
    if base is None or not r.get("peak_reset"):
        return f"{r['peak_rss_mib']:.0f}"
    return f"{r['peak_rss_mib']:.0f} (+{r['peak_rss_mib'] - base:.0f})"


def table(rows: list[dict], float_top1: float | None) -> str:
    head = ("| configuration | top-1 (%) | drop vs float (pt, float − quantized) | calibration (× float pass "
            "over calib images) | evaluation (× float eval) | peak RSS, MiB (above model + data) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {CONFIGS[r['config']][1]} | error | | | | |")
            continue
        drop = None if float_top1 is None else float_top1 - r["top1"]
        calib = "–" if r["config"] == "float" else (
            f"{r['calib_ratio']:.2f}× ({r['calib_s']:.1f} s)")
        if r.get("report_s") is not None:
            calib += f"; report {r['report_s']:.2f} s, without it {r['calib_ratio_noreport']:.2f}×"
        ev = f"{r['eval_ratio']:.2f}× ({r['eval_s']:.1f} s)"
        lines.append(f"| {r['label']} | {r['top1']:.2f} | {_fmt(drop, '{:+.2f}')} | {calib} | "
                     f"{ev} | {_rss(r)} |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[str]:
    by = {r["config"]: r for r in rows if "error" not in r}
    out = []
    if "nd_dpu" in by and "ao_pc" in by:
        d = by["nd_dpu"]["top1"] - by["ao_pc"]["top1"]
        ok = d >= -0.3
        out.append(f"DPU default within 0.3 pt of torch.ao per-channel: "
                   f"{'**met**' if ok else '**missed**'} ({by['nd_dpu']['top1']:.2f} vs "
                   f"{by['ao_pc']['top1']:.2f} %, {d:+.2f} pt)")
    if "nd_cpu_pc" in by and "ao_pc" in by:
        d = by["nd_cpu_pc"]["top1"] - by["ao_pc"]["top1"]
        out.append(f"float-scale per-channel at least as accurate as torch.ao per-channel: "
                   f"{'**met**' if d >= 0 else '**missed**'} ({by['nd_cpu_pc']['top1']:.2f} vs "
                   f"{by['ao_pc']['top1']:.2f} %, {d:+.2f} pt)")
    if "nd_dpu" in by:
        for ao in ("ao_pc", "ao_pt"):
            if ao in by:
                a, b = by["nd_dpu"]["calib_ratio"], by[ao]["calib_ratio"]
                line = (f"calibration faster than torch.ao HistogramObserver calibration "
                        f"({ao}): {'**met**' if a < b else '**missed**'} (nd_dpu {a:.2f}× vs "
                        f"{b:.2f}× float pass; {by['nd_dpu']['calib_s']:.1f} s vs "
                        f"{by[ao]['calib_s']:.1f} s)")
                c = by["nd_dpu"].get("calib_ratio_noreport")
                if c is not None:
                    line += (f"; without the per-layer report, which torch.ao does not write: "
                             f"{'**met**' if c < b else '**missed**'} ({c:.2f}×)")
                out.append(line)
    return out


def median_rows(runs: list[dict]) -> dict:
    """Merge repeats of one (model, config): medians of the timings, first run's accuracy."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    out = dict(ok[0])
    for k in ("calib_ratio", "eval_ratio", "calib_s", "eval_s", "peak_rss_mib",
              "baseline_rss_mib", "report_s", "calib_ratio_noreport"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals)
    out["repeats"] = len(ok)
    out["top1_all"] = [r["top1"] for r in ok]
    return out


def write_doc(path: Path, results: dict, argv: list[str], info: str, args, elapsed: float,
              skipped: dict | None = None) -> str:
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cmd = "python bench/compare_peers.py" + ("" if not argv else " " + shlex.join(argv))
    parts = [
        "# nndct_lite vs torch.ao post-training quantization (issue #9)",
        "",
        f"* date: {now}; total wall time {elapsed / 60:.1f} min",
        f"* machine: {info}",
        f"* command: `{cmd}`",
        f"* worker subprocesses ran with `OMP_WAIT_POLICY={getattr(args, 'omp_wait_policy', 'inherit')}` "
        "(`--omp-wait-policy`; " + ("this run's own environment: " + cm.omp_note() + "; "
                                    if getattr(args, "in_process", True) else "") +
        "`inherit` is what a user gets, libgomp's default spin-then-sleep; pass `PASSIVE` on a "
        "machine shared with other jobs, where the default spin-wait makes 2-thread timings of "
        "many-small-op models, i.e. fake quant, up to 10x slower than the float reference)",
        f"* data: first {args.n_calib} images of `calib.npz` for calibration (batches of "
        f"{args.batch_size}), first {args.n_test} of `test.npz` for evaluation"
        + ("" if cm.have_data() and not args.synthetic else " — **synthetic data** (../shared absent)"),
        f"* each (model, configuration) ran in its own subprocess ({args.repeats} time(s), "
        f"fast-finetune rows {min(getattr(args, 'ft_repeats', 1), args.repeats)} time(s); "
        "timings and memory are medians over repeats); peak RSS is that subprocess's `ru_maxrss` "
        "during calibration + evaluation (the high-water mark is restarted, via "
        "`/proc/self/clear_refs`, once the model and the data are loaded); in brackets how much "
        "it exceeds the RSS of the loaded model + data (interpreter, torch, the float images)",
        "* calibration ratio: wall time of the whole calibration (nndct_lite: `torch_quantizer('calib')` "
        "construction, fast finetune where listed, the calibration forwards and "
        "`export_quant_config()`; torch.ao: `prepare_fx`/`prepare_qat_fx`, the forwards and "
        "`convert_fx`) divided by one float forward pass over the same calibration images "
        "(mean of a pass just before and one just after); the seconds are in brackets; for "
        "nndct_lite also the seconds of the per-layer report (`report.md` + PNG chart, written by "
        "`export_quant_config()` by default) and the ratio without them",
        f"* evaluation ratio: the quantized model's time over the test images divided by the float "
        f"model's time on the same batches, run interleaved (every {args.ref_every}. batch) in the same "
        "process; nndct_lite is evaluated in test mode (`torch_quantizer('test')` rebuilt from "
        "`quantize_result/`, fast finetune via `load_ft_param()`); its construction time is not "
        "included. torch.ao int8 rows run the x86 quantized kernels; the W4A8 torch.ao row is fake "
        "quant (float kernels)",
        "* torch.ao: x86 backend qconfig mapping (`get_default_qconfig_mapping('x86')`: "
        "HistogramObserver activations with `reduce_range=True`, i.e. 7-bit activation codes, as "
        "the x86 backend requires); per-tensor row replaces the weight observer by a symmetric "
        "per-tensor MinMaxObserver. W4A8: `prepare_qat_fx` with FakeQuantize (weights qint8 "
        "per-channel symmetric, quant range -8..7; activations quint8 0..255 HistogramObserver), "
        "observers on / fake quant off while calibrating, then evaluated in eval mode",
        "* nndct_lite CPU rows: `" + json.dumps(CPU_PC_CONFIG) + "` (W4A8: the same with "
        "`weights.bit_width: 4`); fast finetune: `q.fast_finetune(run, (q.quant_model, calib_images))` "
        "before the calibration loop, `load_ft_param()` in test mode",
        "",
    ]
    for model_name, rows in results.items():
        f = next((r for r in rows if r["config"] == "float" and "error" not in r), None)
        ft1 = f["top1"] if f else None
        pre = rows[0].get("pretrained")
        parts += [f"## {model_name}" + ("" if pre else " (random weights)"), "",
                  table(rows, ft1), ""]
        if skipped and skipped.get(model_name):
            parts += ["Not run for this model (fast finetune, see `--ft-models`): "
                      + ", ".join(f"`{k}`" for k in skipped[model_name]), ""]
        g = goals(rows)
        if g:
            parts += ["Goals:", ""] + [f"* {x}" for x in g] + [""]
        errs = [r for r in rows if "error" in r]
        for r in errs:
            parts += [f"Error in `{r['config']}`:", "", "```", r["error"][-1500:], "```", ""]
    text = "\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


# --------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description="nndct_lite vs torch.ao PTQ on CIFAR-10 (issue #9)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: ResNet-20 only, 200 calibration / 1000 test images")
    p.add_argument("--models", default=None, help=f"comma list of {ALL_MODELS} (default: all present)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma list of configurations")
    p.add_argument("--n-calib", type=int, default=None, help="calibration images (default 1000)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default 10000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--ref-every", type=int, default=2,
                   help="interleave the float model on every k-th evaluation batch")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per configuration (medians); default 3, 1 with --quick")
    p.add_argument("--ft-repeats", type=int, default=1,
                   help="runs of the fast-finetune configurations (at most --repeats; their "
                        "calibration takes 100-300 float passes, so one run is already stable)")
    p.add_argument("--ft-models", default="all",
                   help="models that get the fast-finetune rows ('all' or a comma list); fast "
                        "finetune is the slowest configuration by far")
    p.add_argument("--omp-wait-policy", default="inherit",
                   choices=["PASSIVE", "ACTIVE", "inherit"],
                   help="OMP_WAIT_POLICY of the worker subprocesses (default: inherit, what a "
                        "user gets; PASSIVE on a machine shared with other jobs)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--synthetic", action="store_true", help="random data and weights")
    p.add_argument("--in-process", action="store_true",
                   help="run configurations in this process (peak RSS is then cumulative)")
    p.add_argument("--out", default=str(cm.ROOT / "docs" / "bench_peers.md"))
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = args.repeats or 1
        args.models = args.models or "resnet20"
        args.n_calib = args.n_calib or 200
        args.n_test = args.n_test or 1000
    args.n_calib = args.n_calib or 1000
    args.n_test = args.n_test or 10000
    args.repeats = args.repeats or 3
    return args


def quiet():
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("nndct_lite", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    if args._worker:
        res = run_config(**json.loads(args._worker))
        Path(args._result).write_text(json.dumps(res))
        return 0
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = [m for m in ALL_MODELS if cm.have_weights(m)] or ["resnet20"]
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    for k in keys:
        if k not in CONFIGS:
            raise SystemExit(f"unknown configuration {k!r}; choose from {list(CONFIGS)}")
    synthetic = args.synthetic or not cm.have_data()
    info = cm.machine_info(args.threads)
    print(f"machine: {info}", flush=True)
    t0 = time.perf_counter()
    results = {}
    text = "nothing ran"
    skipped_rows: dict[str, list] = {}
    for model_name in models:
        if not synthetic and not cm.have_weights(model_name):
            print(f"skip {model_name}: weights not present", flush=True)
            continue
        ft_ok = args.ft_models == "all" or model_name in args.ft_models.split(",")
        mkeys = [k for k in keys if ft_ok or not ND_SETTINGS.get(k, (None, False))[1]]
        skipped = [k for k in keys if k not in mkeys]
        if skipped:
            print(f"{model_name}: skipping {skipped} (not in --ft-models)", flush=True)
        runs = {k: [] for k in mkeys}
        for rep in range(args.repeats):
            # alternate the order between repeats so slow drift of the machine load does
            # not always hit the same configurations
            order = mkeys if rep % 2 == 0 else mkeys[::-1]
            for k in order:
                if rep >= args.ft_repeats and ND_SETTINGS.get(k, (None, False))[1]:
                    continue
                spec = dict(model_name=model_name, key=k, n_calib=args.n_calib, n_test=args.n_test,
                            bs=args.batch_size, ref_every=args.ref_every, synthetic=synthetic)
                t = time.perf_counter()
                if args.in_process:
                    r = run_config(**spec)
                else:
                    r = run_config_subprocess({**spec, "threads": args.threads},
                                              omp=args.omp_wait_policy)
                runs[k].append(r)
                msg = r.get("error", "").splitlines()[-1:] if "error" in r else (
                    f"top-1 {r['top1']:.2f} %, calib {_fmt(r.get('calib_ratio'))}x, "
                    f"eval {r['eval_ratio']:.2f}x, rss {r['peak_rss_mib']:.0f} MiB")
                print(f"[{model_name} {k} rep {rep}] {msg} ({time.perf_counter() - t:.0f} s)",
                      flush=True)
        results[model_name] = [median_rows(runs[k]) for k in mkeys]
        skipped_rows[model_name] = skipped
        text = write_doc(Path(args.out), results, argv, info, args, time.perf_counter() - t0,
                         skipped_rows)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
