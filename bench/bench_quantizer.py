"""Issues #3 and #14: how long nndct_lite's calibration and test-mode evaluation take, as multiples
of a float evaluation over the same images, plus peak memory.

Workloads (``--workloads``, default all):

  golden     the protocol of shared/reference/golden/resnet20/README.md, with its exact module:
             calibrate on cifar('calib', 1000) in 10 batches of 100 (torch_quantizer construction,
             the forwards and export_quant_config), then test mode on a fresh model over all
             10,000 test images in batches of 100. Both times are shown as ratios to ONE float
             evaluation of the 10,000 test images, side by side with the original's figures.
             The same run also gives the ResNet-20 row of the "same images" table (calibration
             against a float pass over the 1000 calibration images).
  resnet50   torchvision ResNet-50, random weights, random 224x224 inputs (``--r50-images``,
             default 64, batches of ``--r50-batch``): calibration and test-mode evaluation on the
             same images, against float evaluation of those images.

Every repeat of a workload runs in its own subprocess (clean peak RSS); the table shows medians.
Inside a subprocess the float reference is measured right next to what it normalises: a float
pass over the calibration images just before and just after calibrating, and the float model on
the same test batches interleaved batch by batch with the quantized model.

``--profile`` also profiles one calibration and one test-mode evaluation of ResNet-20
(torch.profiler, by op, and cProfile, by Python function) and appends the tables.

    python bench/bench_quantizer.py               # writes docs/bench_quantizer.md
    python bench/bench_quantizer.py --quick       # smoke run: fewer images, one repeat
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import datetime as _dt
import io
import json
import logging
import os
import pstats
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

ORIGINAL = {"calib": "2.5×", "test": "5.0–5.5×", "float_top1": 91.73, "quant_top1": 91.63}
GOALS = {"calib": 0.3, "test": 1.2}


# --------------------------------------------------------------------------- workloads
def _resnet20_and_data(n_calib: int, n_test: int, synthetic: bool):
    gm = cm.golden_module()
    if not synthetic and gm is not None and cm.have_weights("resnet20") and cm.have_data():
        xc, _ = gm.cifar("calib", n_calib)
        xt, yt = gm.cifar("test", n_test)
        return gm.resnet20, xc, xt, yt, True

    def make():
        return cm.load_model("resnet20", pretrained=False)[0]
    xc, _ = cm.synthetic_cifar("calib", n_calib)
    xt, yt = cm.synthetic_cifar("test", n_test)
    return make, xc, xt, yt, False


def _resnet50_and_data(n_images: int, size: int = 224):
    import torchvision

    def make():
        torch.manual_seed(0)
        return torchvision.models.resnet50(weights=None).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_images, 3, size, size, generator=g)
    y = torch.randint(0, 1000, (n_images,), generator=g)
    return make, x, x, y, False


def run_workload(workload: str, n_calib: int = 1000, n_test: int = 10000, calib_bs: int = 100,
                 test_bs: int = 100, r50_images: int = 64, r50_batch: int = 16,
                 r50_size: int = 224, synthetic: bool = False, config_file: str | None = None) -> dict:
    """One repeat of ``workload`` in this process; returns its measurements."""
    from nndct_lite import torch_quantizer
    if workload == "golden":
        make, xc, xt, yt, real = _resnet20_and_data(n_calib, n_test, synthetic)
    elif workload == "resnet50":
        make, xc, xt, yt, real = _resnet50_and_data(r50_images, r50_size)
        calib_bs = test_bs = r50_batch
    else:
        raise KeyError(workload)
    float_model = make()
    res = {"workload": workload, "real_data": real, "n_calib": len(xc), "n_test": len(xt),
           "calib_bs": calib_bs, "test_bs": test_bs}
    # peak RSS of what follows only: restart the high-water mark after loading model + data
    res["baseline_rss_mib"] = cm.rss_mib()
    res["peak_reset"] = cm.reset_peak_rss()
    with tempfile.TemporaryDirectory(prefix=f"bq_{workload}_") as d:
        # float reference over the test images (alone; the interleaved one comes later)
        ev_f = cm.paired_eval(float_model, None, xt, yt, test_bs)
        f_calib_before = cm.forward_all(float_model, xc, calib_bs)
        t0 = time.perf_counter()
        q = torch_quantizer("calib", make(), (xc[:1],), output_dir=d, quant_config_file=config_file)
        t1 = time.perf_counter()
        cm.forward_all(q.quant_model, xc, calib_bs)
        t2 = time.perf_counter()
        q.export_quant_config()
        t3 = time.perf_counter()
        f_calib_after = cm.forward_all(float_model, xc, calib_bs)
        del q
        t4 = time.perf_counter()
        qt = torch_quantizer("test", make(), (xc[:1],), output_dir=d, quant_config_file=config_file)
        t5 = time.perf_counter()
        ev = cm.paired_eval(qt.quant_model, float_model, xt, yt, test_bs, ref_every=1)
    f_calib = (f_calib_before + f_calib_after) / 2
    # one float evaluation of the test images: the interleaved measurement (same load as the
    # quantized evaluation) and the standalone one just before calibrating; their mean is the
    # denominator of the calibration ratio, the interleaved one that of the test ratio
    f_test_pair = ev["ref_seconds"]
    f_test_alone = ev_f["seconds"]
    f_test_mean = (f_test_pair + f_test_alone) / 2
    calib_s = t3 - t0
    res.update(
        float_top1=ev_f["top1"], quant_top1=ev["top1"],
        calib_s=calib_s, calib_setup_s=t1 - t0, calib_forward_s=t2 - t1, calib_export_s=t3 - t2,
        test_setup_s=t5 - t4, test_eval_s=ev["seconds"],
        float_test_s=f_test_pair, float_test_alone_s=f_test_alone, float_calib_s=f_calib,
        # "same images" ratios
        calib_ratio_same=calib_s / f_calib,
        test_ratio=ev["ratio_sum"], test_ratio_median=ev["ratio_median"],
        test_ratio_incl_setup=(ev["seconds"] + t5 - t4) / f_test_pair,
        # golden-protocol ratios: against one float evaluation of the test images
        calib_ratio_vs_test=calib_s / f_test_mean,
        calib_ratio_vs_test_scaled=(calib_s / f_calib) * (len(xc) / len(xt)),
    )
    res["peak_rss_mib"] = cm.peak_rss_mib()
    return res


def run_float_rss(workload: str, **kw) -> dict:
    """Peak RSS of a float-only evaluation of the same workload (the memory baseline)."""
    if workload == "golden":
        make, xc, xt, yt, _ = _resnet20_and_data(kw.get("n_calib", 1000), kw.get("n_test", 10000),
                                                 kw.get("synthetic", False))
        bs = kw.get("test_bs", 100)
    else:
        make, xc, xt, yt, _ = _resnet50_and_data(kw.get("r50_images", 64), kw.get("r50_size", 224))
        bs = kw.get("r50_batch", 16)
    m = make()
    base, reset = cm.rss_mib(), cm.reset_peak_rss()
    cm.forward_all(m, xc, bs)
    cm.paired_eval(m, None, xt, yt, bs)
    return {"workload": workload, "float_only": True, "peak_rss_mib": cm.peak_rss_mib(),
            "baseline_rss_mib": base, "peak_reset": reset}


def subprocess_call(fn: str, spec: dict, threads: int, timeout: float | None = None,
                    omp: str = "inherit") -> dict:
    with tempfile.TemporaryDirectory(prefix="bq_worker_") as d:
        out = Path(d) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", fn,
               "--_spec", json.dumps(spec), "--_result", str(out), "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=cm.worker_env(omp))
        if proc.returncode != 0 or not out.is_file():
            return {**spec, "error": f"worker exit {proc.returncode}: "
                                     f"{(proc.stdout + proc.stderr)[-3000:]}"}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- profiling
def profile_resnet20(n_calib: int, n_test: int, synthetic: bool, top: int = 25) -> str:
    """torch.profiler (ops) and cProfile (Python) tables of one calibration and one test eval."""
    from torch.profiler import ProfilerActivity, profile
    from nndct_lite import torch_quantizer
    make, xc, xt, yt, real = _resnet20_and_data(n_calib, n_test, synthetic)
    out = [f"Profiled on {len(xc)} calibration and {len(xt)} test images "
           f"({'real' if real else 'synthetic'} data), batches of 100.", ""]
    fm = make()
    f_c = cm.forward_all(fm, xc, 100)
    f_t = cm.forward_all(fm, xt, 100)
    with tempfile.TemporaryDirectory(prefix="bq_prof_") as d:
        # --- calibration, cProfile
        pr = cProfile.Profile()
        t = time.perf_counter()
        pr.enable()
        q = torch_quantizer("calib", make(), (xc[:1],), output_dir=d)
        cm.forward_all(q.quant_model, xc, 100)
        q.export_quant_config()
        pr.disable()
        cal_s = time.perf_counter() - t
        out += [f"### Calibration, cProfile ({cal_s:.1f} s under the profiler; float pass over "
                f"the same images {f_c:.2f} s)", "", "```", _pstats(pr, top), "```", ""]
        # --- calibration forwards, torch.profiler (ops)
        q = torch_quantizer("calib", make(), (xc[:1],), output_dir=d)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            cm.forward_all(q.quant_model, xc[:300], 100)
        out += ["### Calibration forwards (300 images), torch.profiler by op", "", "```",
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top), "```", ""]
        q.export_quant_config()
        # --- test mode
        qt = torch_quantizer("test", make(), (xc[:1],), output_dir=d)
        pr = cProfile.Profile()
        t = time.perf_counter()
        pr.enable()
        cm.forward_all(qt.quant_model, xt, 100)
        pr.disable()
        te_s = time.perf_counter() - t
        out += [f"### Test-mode evaluation, cProfile ({te_s:.1f} s under the profiler; float "
                f"{f_t:.2f} s)", "", "```", _pstats(pr, top), "```", ""]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            cm.forward_all(qt.quant_model, xt[:1000], 100)
        out += ["### Test-mode evaluation (1000 images), torch.profiler by op", "", "```",
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top), "```", ""]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            cm.forward_all(fm, xt[:1000], 100)
        out += ["### Float evaluation (1000 images), torch.profiler by op, for comparison", "",
                "```", prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
                "```", ""]
    return "\n".join(out)


def breakdown_resnet20(n_calib: int, n_test: int, synthetic: bool, bs: int = 100) -> str:
    """Where test-mode and calibration time go, by switching parts of nndct_lite off.

    Test mode: four models run interleaved on every test batch (median per-batch time, as a
    ratio to the float model): the float model; the generated test-mode model with every
    quantizer off (BN folded, nndct_lite's module structure); the same with only weight and
    bias fake quant on; full test mode. Calibration: the forwards of the default calibration,
    and of one without bias correction, each against a float pass over the same images."""
    from nndct_lite import torch_quantizer
    from nndct_lite.calib import Role
    from nndct_lite.quant.build import set_mode
    from nndct_lite.quant.fake_quantizer import FakeQuantizer
    from nndct_lite.state.modes import QuantMode
    make, xc, xt, yt, real = _resnet20_and_data(n_calib, n_test, synthetic)
    fm = make()
    lines = []
    with tempfile.TemporaryDirectory(prefix="bq_bd_") as d:
        no_bc = Path(d) / "no_bias_corr.json"
        no_bc.write_text(json.dumps({"include_bias_corr": False}))
        calib = {}
        for label, cfg in (("default", None), ("bias correction off", str(no_bc))):
            out = Path(d) / label.replace(" ", "_")
            f0 = cm.forward_all(fm, xc, bs)
            t = time.perf_counter()
            q = torch_quantizer("calib", make(), (xc[:1],), output_dir=str(out),
                                quant_config_file=cfg)
            t1 = time.perf_counter()
            cm.forward_all(q.quant_model, xc, bs)
            t2 = time.perf_counter()
            q.export_quant_config()
            t3 = time.perf_counter()
            f1 = cm.forward_all(fm, xc, bs)
            calib[label] = (t1 - t, t2 - t1, t3 - t2, (f0 + f1) / 2)
        out = Path(d) / "default"
        models = {"float": fm}
        for label in ("quantizers off", "weights + bias fake quant only", "test mode"):
            qt = torch_quantizer("test", make(), (xc[:1],), output_dir=str(out))
            m = qt.quant_model
            if label == "quantizers off":
                set_mode(m, QuantMode.FLOAT)
            elif label.startswith("weights"):
                for mod in m.modules():
                    if isinstance(mod, FakeQuantizer) and mod.role is not Role.PARAM:
                        mod.set_mode(QuantMode.FLOAT)
            models[label] = m
        times = {k: [] for k in models}
        with torch.no_grad():
            for xb, _ in cm.iter_batches(xt, None, bs):
                for k, m in models.items():
                    t = time.perf_counter()
                    m(xb)
                    times[k].append(time.perf_counter() - t)
    ref = statistics.median(times["float"])
    lines += [f"Test mode, {len(xt)} images in batches of {bs}, the four models interleaved on "
              "every batch; median seconds per batch and ratio to the float model:", "",
              "| model | s / batch | × float | increment |", "|---|---:|---:|---:|"]
    prev = None
    for k, v in times.items():
        m = statistics.median(v)
        inc = "" if prev is None else f"{(m - prev) / ref:+.2f}×"
        lines.append(f"| {k} | {m * 1000:.1f} ms | {m / ref:.2f}× | {inc} |")
        prev = m
    lines += ["", f"Calibration, {len(xc)} images in batches of {bs} (seconds; × a float pass "
              "over the same images):", "",
              "| calibration | construction | forwards | export | float pass |",
              "|---|---:|---:|---:|---:|"]
    for label, (c, fw, ex, f) in calib.items():
        lines.append(f"| {label} | {c:.2f} s ({c / f:.2f}×) | {fw:.2f} s ({fw / f:.2f}×) | "
                     f"{ex:.2f} s ({ex / f:.2f}×) | {f:.2f} s |")
    return "\n".join(lines)


def run_profile(n_calib: int, n_test: int, synthetic: bool) -> dict:
    """The breakdown (up to 5000 test images) and the profiles (up to 2000) of ResNet-20."""
    text = ("### Breakdown\n\n" + breakdown_resnet20(n_calib, min(n_test, 5000), synthetic)
            + "\n\n" + profile_resnet20(n_calib, min(n_test, 2000), synthetic))
    return {"text": text}


def _pstats(pr: cProfile.Profile, top: int) -> str:
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    st.sort_stats("tottime").print_stats(top)
    text = s.getvalue()
    root = str(cm.ROOT) + "/"
    text = text.replace(root, "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return "\n".join(lines[start:])


# --------------------------------------------------------------------------- report
def med(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def spread(rows: list[dict], key: str) -> str:
    vals = sorted(r[key] for r in rows if r.get(key) is not None)
    if len(vals) < 2:
        return ""
    return f" [{vals[0]:.2f}–{vals[-1]:.2f}]"


def _rss(peak, base, reset) -> str:
    if peak is None:
        return "–"
    if base is None or not reset:
        return f"{peak:.0f}"
    return f"{peak:.0f} (+{peak - base:.0f})"


def report(results: dict, float_rss: dict, argv, info: str, args, elapsed: float,
           profile_text: str | None) -> str:
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cmd = "python bench/bench_quantizer.py" + ("" if not argv else " " + shlex.join(argv))
    parts = ["# nndct_lite quantizer speed and memory (issues #3, #14)", "",
             f"* date: {now}; total wall time {elapsed / 60:.1f} min",
             f"* machine: {info}",
             f"* command: `{cmd}`",
             f"* worker subprocesses ran with OMP_WAIT_POLICY "
             f"`{getattr(args, 'omp_wait_policy', 'inherit')}` (`--omp-wait-policy`; `inherit` "
             "is what a user gets: libgomp's default spin-then-sleep). On a machine shared with "
             "other jobs pass `PASSIVE`: there the default spin-wait makes a 2-thread process "
             "wait for a descheduled partner thread on every op, while on an idle machine "
             "PASSIVE adds a wake-up (~70 us) to every op and penalises the op-heavy quantized "
             "model",
             f"* every repeat ran in its own subprocess; values are medians over {args.repeats} "
             "repeat(s), [min–max] where there is more than one",
             "* peak RSS: the subprocess's `ru_maxrss` from the moment the model and the data are "
             "loaded (high-water mark restarted via `/proc/self/clear_refs`) to the end of "
             "calibration + test-mode evaluation; in brackets how much it exceeds the RSS of the "
             "loaded model + data. The float-only column is the same for a float evaluation",
             "* calibration = `torch_quantizer('calib', ...)` construction (trace, BN folding, CLE, "
             "code generation) + the calibration forwards + `export_quant_config()` (fix-position "
             "adjustment, bias correction, files); test-mode evaluation = the forwards of "
             "`torch_quantizer('test', ...).quant_model` over the test images (the construction "
             "is listed separately)",
             "* float reference: the float model on the same batches, interleaved batch by batch "
             "with the quantized model in the same process (test ratio); for calibration a float "
             "pass over the calibration images just before and just after (same-images ratio), "
             "and the mean of the interleaved and a standalone float evaluation of the test "
             "images (golden-protocol ratio)",
             ""]
    g = results.get("golden")
    if g:
        ok = [r for r in g if "error" not in r]
        if ok:
            r0 = ok[0]
            c = med(ok, "calib_ratio_vs_test")
            t = med(ok, "test_ratio")
            parts += [
                "## Golden protocol (ResNet-20)", "",
                f"Calibrate {r0['n_calib']} calib images in batches of {r0['calib_bs']}; evaluate "
                f"test mode on {r0['n_test']} test images in batches of {r0['test_bs']}. Ratios to "
                f"one float evaluation of the {r0['n_test']} test images"
                + ("" if r0["real_data"] else " (**synthetic data and random weights**: "
                   "../shared absent)") + ".", "",
                "| | vai_q_pytorch 3.5.0, same protocol | goal | nndct_lite | met? |",
                "|---|---:|---:|---:|:---:|",
                f"| calibration ({r0['n_calib']} images) | {ORIGINAL['calib']} | ≤ {GOALS['calib']}× | "
                f"{c:.2f}×{spread(ok, 'calib_ratio_vs_test')} | "
                f"{'yes' if c <= GOALS['calib'] else '**no**'} |",
                f"| test-mode evaluation ({r0['n_test']:,} images) | {ORIGINAL['test']} | ≤ {GOALS['test']}× | "
                f"{t:.2f}×{spread(ok, 'test_ratio')} | {'yes' if t <= GOALS['test'] else '**no**'} |",
                f"| float top-1 | {ORIGINAL['float_top1']:.2f} % | | {r0['float_top1']:.2f} % | |",
                f"| quantized top-1 | {ORIGINAL['quant_top1']:.2f} % | | {r0['quant_top1']:.2f} % | |",
                "",
                "Seconds (medians): float evaluation of the test images "
                f"{med(ok, 'float_test_s'):.1f} s interleaved / {med(ok, 'float_test_alone_s'):.1f} s "
                f"alone; calibration {med(ok, 'calib_s'):.1f} s = construction "
                f"{med(ok, 'calib_setup_s'):.1f} s + forwards {med(ok, 'calib_forward_s'):.1f} s + "
                f"export {med(ok, 'calib_export_s'):.1f} s; test-mode construction "
                f"{med(ok, 'test_setup_s'):.1f} s, evaluation {med(ok, 'test_eval_s'):.1f} s "
                f"(median of per-batch ratios {med(ok, 'test_ratio_median'):.2f}×; including the "
                f"construction {med(ok, 'test_ratio_incl_setup'):.2f}×). A load-independent "
                "cross-check of the calibration ratio, (calibration / float pass over the calib "
                f"images) × {r0['n_calib']}/{r0['n_test']}: "
                f"{med(ok, 'calib_ratio_vs_test_scaled'):.2f}×.", ""]
    parts += ["## Same images: ratios to a float evaluation of the same images", "",
              "| workload | images | calibration (× float) | test-mode evaluation (× float) | "
              "peak RSS, MiB (above model + data) | float only: peak RSS, MiB (above model + data) |",
              "|---|---|---:|---:|---:|---:|"]
    for w, rows in results.items():
        ok = [r for r in rows if "error" not in r]
        if not ok:
            parts.append(f"| {w} | error | | | | |")
            continue
        r0 = ok[0]
        name = ("ResNet-20, CIFAR-10" + ("" if r0["real_data"] else " (synthetic)")
                if w == "golden" else "torchvision ResNet-50, random weights and inputs")
        imgs = (f"calib {r0['n_calib']} (bs {r0['calib_bs']}), test {r0['n_test']} "
                f"(bs {r0['test_bs']})" if w == "golden" else
                f"{r0['n_calib']} × 3×{args.r50_size}×{args.r50_size} (bs {r0['calib_bs']}), "
                "same images for both")
        fr = float_rss.get(w, {})
        parts.append(
            f"| {name} | {imgs} | {med(ok, 'calib_ratio_same'):.2f}×{spread(ok, 'calib_ratio_same')} "
            f"({med(ok, 'calib_s'):.1f} s) | {med(ok, 'test_ratio'):.2f}×{spread(ok, 'test_ratio')} "
            f"({med(ok, 'test_eval_s'):.1f} s) | "
            f"{_rss(med(ok, 'peak_rss_mib'), med(ok, 'baseline_rss_mib'), r0.get('peak_reset'))} | "
            f"{_rss(fr.get('peak_rss_mib'), fr.get('baseline_rss_mib'), fr.get('peak_reset'))} |")
    parts.append("")
    for w, rows in results.items():
        for r in rows:
            if "error" in r:
                parts += [f"Error in `{w}`:", "", "```", r["error"][-1500:], "```", ""]
    if profile_text:
        parts += ["## Profile", "", profile_text, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description="nndct_lite calibration / test-mode speed (#3, #14)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 calib / 1000 test images, ResNet-50 on 8 images, 1 repeat")
    p.add_argument("--workloads", default="golden,resnet50")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--n-calib", type=int, default=None, help="default 1000 (golden protocol)")
    p.add_argument("--n-test", type=int, default=None, help="default 10000 (golden protocol)")
    p.add_argument("--r50-images", type=int, default=None, help="default 64")
    p.add_argument("--r50-batch", type=int, default=16)
    p.add_argument("--r50-size", type=int, default=224)
    p.add_argument("--omp-wait-policy", default="inherit",
                   choices=["PASSIVE", "ACTIVE", "inherit"],
                   help="OMP_WAIT_POLICY of the worker subprocesses (default: inherit, what a "
                        "user gets; PASSIVE on a machine shared with other jobs)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--profile", action="store_true", help="append profiles of ResNet-20")
    p.add_argument("--profile-only", action="store_true",
                   help="only profile, in this process (stdout; set OMP_WAIT_POLICY yourself)")
    p.add_argument("--out", default=str(cm.ROOT / "docs" / "bench_quantizer.md"))
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_spec", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.n_calib = a.n_calib or 200
        a.n_test = a.n_test or 1000
        a.r50_images = a.r50_images or 8
        a.r50_batch = min(a.r50_batch, 8)
        a.repeats = a.repeats or 1
    a.n_calib = a.n_calib or 1000
    a.n_test = a.n_test or 10000
    a.r50_images = a.r50_images or 64
    a.repeats = a.repeats or 3
    return a


def quiet():
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("nndct_lite", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    quiet()
    if a._worker:
        spec = json.loads(a._spec)
        fn = {"run_workload": run_workload, "run_float_rss": run_float_rss,
              "run_profile": run_profile}[a._worker]
        Path(a._result).write_text(json.dumps(fn(**spec)))
        return 0
    synthetic = a.synthetic or cm.golden_module() is None or not cm.have_data() \
        or not cm.have_weights("resnet20")
    if a.profile_only:
        print(run_profile(a.n_calib, a.n_test, synthetic)["text"])
        return 0
    info = cm.machine_info(a.threads)
    print(f"machine: {info}", flush=True)
    t0 = time.perf_counter()
    workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    spec = dict(n_calib=a.n_calib, n_test=a.n_test, r50_images=a.r50_images,
                r50_batch=a.r50_batch, r50_size=a.r50_size, synthetic=synthetic)
    results = {w: [] for w in workloads}
    float_rss = {}
    for w in workloads:
        float_rss[w] = subprocess_call("run_float_rss", {"workload": w, **spec}, a.threads,
                                      omp=a.omp_wait_policy)
    for rep in range(a.repeats):
        for w in (workloads if rep % 2 == 0 else workloads[::-1]):
            t = time.perf_counter()
            r = subprocess_call("run_workload", {"workload": w, **spec}, a.threads,
                                omp=a.omp_wait_policy)
            results[w].append(r)
            if "error" in r:
                print(f"[{w} rep {rep}] {r['error'][-800:]}", flush=True)
            else:
                print(f"[{w} rep {rep}] calib {r['calib_ratio_same']:.2f}x same images / "
                      f"{r['calib_ratio_vs_test']:.2f}x vs float test eval; test "
                      f"{r['test_ratio']:.2f}x; top-1 {r['float_top1']:.2f} -> "
                      f"{r['quant_top1']:.2f}; rss {r['peak_rss_mib']:.0f} MiB "
                      f"({time.perf_counter() - t:.0f} s)", flush=True)
    prof = None
    if a.profile:
        r = subprocess_call("run_profile", {"n_calib": a.n_calib, "n_test": a.n_test,
                                            "synthetic": synthetic}, a.threads,
                            omp=a.omp_wait_policy)
        prof = r.get("text") or f"profiling failed:\n\n```\n{r.get('error', '')[-2000:]}\n```"
    text = report(results, float_rss, argv, info, a, time.perf_counter() - t0, prof)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
