"""Issue #24: the fast finetune methods (adaquant, gptq, adaround) on CIFAR-10.

Models: ResNet-20, ShuffleNetV2 x0.5 and ResNet-56 from ../shared/data. Quantization
configurations:

  w4a8   CPU target, float scales, 4-bit per-channel weights, 8-bit mse activations, CLE and bias
         correction off (the configuration of the issue's figures; compare_peers.py's W4_CONFIG
         with include_cle/include_bias_corr false)
  dpu    the DPU default (no config file: power-of-two, per-tensor, CLE + bias correction)

Methods: ``none`` (plain calibration), ``adaquant``, ``gptq``, ``adaround`` (the config key
``fast_finetune_method``), and the peers of bench/peers_finetune.py in the same run:
``brevitas_gptq`` (brevitas' FX PTQ + GPTQ: W4A8 per-channel float scale, or 8-bit power-of-two
per-tensor for the DPU configuration) and ``torchao`` (torch.ao FX: W4A8 fake quant, or the x86
int8 per-channel default as the reference of the DPU rows). brevitas must be importable (the bench's
own environment: ``pip install brevitas``, never a dependency of nndct_lite); without it its rows
show the import error and the rest of the run goes on.

Every (model, config, method) runs in its own subprocess on one torch thread. Calibration
(fast finetune + the calibration pass + export) is timed and given as a ratio to one float
evaluation of the 10,000 test images, measured in the same process interleaved with the
quantized evaluation (every ``--ref-every``-th batch, scaled to all batches). Results are appended
to a JSONL file as each run ends, and the Markdown page is rendered from it.

    python bench/bench_finetune.py --jobs 2              # everything (run it with the bench's own
                                                         # python, brevitas installed); writes
                                                         # docs/bench_finetune.md and the issue-24
                                                         # section of docs/benchmarks.md
    python bench/bench_finetune.py --models resnet20 --runs w4a8:gptq,dpu:none
    python bench/bench_finetune.py --plan resnet20:w4a8:gptq,resnet56:dpu:none
    python bench/bench_finetune.py --render              # only re-render the page from the JSONL
    python bench/bench_finetune.py --quick --models resnet20   # smoke run: 200/1000 images,
                                                         # results and page under /tmp
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_models as cm  # noqa: E402
import peers_finetune as peers  # noqa: E402

cm.ensure_repo_on_path()

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bench_finetune.md"
RESULTS = ROOT / "bench" / "results_finetune.jsonl"
MODELS = ["resnet20", "shufflenetv2_x0_5", "resnet56"]
OURS = ["none", "adaquant", "gptq", "adaround"]
METHODS = OURS + list(peers.PEER_METHODS)
METHOD_LABELS = {
    ("w4a8", "brevitas_gptq"): "brevitas GPTQ (W4A8 per-channel)",
    ("dpu", "brevitas_gptq"): "brevitas GPTQ (int8 pof2 per-tensor)",
    ("w4a8", "torchao"): "torch.ao (W4A8 per-channel fake quant)",
    ("dpu", "torchao"): "torch.ao (x86 int8 per-channel)",
}
FLOAT_TOP1 = {"resnet20": 91.73, "resnet56": 93.39, "shufflenetv2_x0_5": 90.65}

W4A8 = {
    "target_device": "CPU", "include_cle": False, "include_bias_corr": False,
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                "calib_statistic_method": "max", "round_mode": "half_even"},
    "tensor_quantize_config": {"weights": {"per_channel": True, "bit_width": 4},
                               "activation": {"method": "mse"}},
}
CONFIGS = {"w4a8": W4A8, "dpu": None}
LABELS = {"w4a8": "W4A8 per-channel float scale (CPU)", "dpu": "DPU default (pof2 per-tensor)"}


def _calibrate(model, xc, cfg: dict | None, method: str, wd: Path, bs: int) -> str | None:
    from nndct_lite import torch_quantizer
    cfg_file = None
    if cfg is not None or method not in ("none",):
        full = dict(cfg or {})
        if method not in ("none",):
            full["fast_finetune_method"] = method
        cfg_file = str(wd / "cfg.json")
        Path(cfg_file).write_text(json.dumps(full, indent=2))
    q = torch_quantizer("calib", copy.deepcopy(model), (xc[:1],), output_dir=str(wd / "qr"),
                        quant_config_file=cfg_file)
    if method != "none":
        q.fast_finetune(cm.forward_all, (q.quant_model, xc, bs))
    cm.forward_all(q.quant_model, xc, bs)
    q.export_quant_config()
    return cfg_file


def _test_model(model, xc, cfg_file: str | None, method: str, wd: Path):
    from nndct_lite import torch_quantizer
    qt = torch_quantizer("test", copy.deepcopy(model), (xc[:1],), output_dir=str(wd / "qr"),
                         quant_config_file=cfg_file)
    if method != "none":
        qt.load_ft_param()
    return qt.quant_model


def run_one(model_name: str, config: str, method: str, n_calib: int, n_test: int,
            bs: int, ref_every: int) -> dict:
    torch.manual_seed(0)
    model, pretrained = cm.load_model(model_name)
    xc, _ = cm.load_cifar("calib", n_calib, model_name)
    xt, yt = cm.load_cifar("test", n_test, model_name)
    res = {"model": model_name, "config": config, "method": method, "n_calib": len(xc),
           "n_test": len(xt), "pretrained": pretrained}
    with tempfile.TemporaryDirectory(prefix="bench_ft_") as d:
        wd = Path(d)
        t = time.perf_counter()
        if method in peers.PEER_METHODS:
            qmodel = peers.calibrate_peer(method, model, xc, bs, config)
            calib_s = time.perf_counter() - t
        else:
            cfg_file = _calibrate(model, xc, CONFIGS[config], method, wd, bs)
            calib_s = time.perf_counter() - t
            qmodel = _test_model(model, xc, cfg_file, method, wd)
        ev = cm.paired_eval(qmodel, model, xt, yt, bs, ref_every)
    res["load_after"] = os.getloadavg()[0]
    res.update(top1=ev["top1"], calib_s=calib_s, float_eval_s=ev["ref_seconds"],
               ratio=calib_s / ev["ref_seconds"], float_top1_sampled=ev["ref_top1_sampled"])
    return res


def _worker(spec: dict, out: Path) -> None:
    torch.set_num_threads(1)
    import logging
    logging.getLogger("nndct_lite").setLevel(logging.WARNING)
    out.write_text(json.dumps(run_one(**spec)))


_RUNNING: set = set()   # worker processes in flight, killed when the run is stopped


def run_subprocess(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_ft_worker_") as d:
        out = Path(d) / "r.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec),
               "--_result", str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=cm.worker_env("inherit"))
        _RUNNING.add(proc)
        try:
            log, _ = proc.communicate()
        finally:
            _RUNNING.discard(proc)
        if proc.returncode != 0 or not out.is_file():
            return {"model": spec["model_name"], "config": spec["config"],
                    "method": spec["method"], "error": (log or "")[-2000:]}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- the page
def _row(rows: list[dict], model: str, config: str, method: str) -> dict | None:
    for r in rows:
        if (r["model"], r["config"], r["method"]) == (model, config, method) and "error" not in r:
            return r
    return None


MODEL_LABELS = {"resnet20": "ResNet-20", "shufflenetv2_x0_5": "ShuffleNetV2 ×0.5",
                "resnet56": "ResNet-56"}
PEER_SHORT = {"brevitas_gptq": "brevitas GPTQ", "torchao": "torch.ao"}


def _drop(r: dict) -> float:
    return FLOAT_TOP1[r["model"]] - r["top1"]


def _ok_rows(rows: list[dict], model: str, config: str, methods) -> list[dict]:
    return [r for r in rows if r["model"] == model and r["config"] == config
            and r["method"] in methods and "error" not in r]


def goals(rows: list[dict]) -> list[str]:
    """One line per goal of issue 24: met/missed by the best of our methods, the peers beside."""
    finetune = [m for m in OURS if m != "none"]

    def peers_note(model: str, config: str) -> str:
        out = []
        for m in peers.PEER_METHODS:
            r = _row(rows, model, config, m)
            if r is not None:
                out.append(f"{METHOD_LABELS[(config, m)]} {r['top1']:.2f} % "
                           f"(drop {_drop(r):+.2f} pt, {r['ratio']:.2f}×)")
        return "; peers: " + ", ".join(out) if out else "; peers: not run"

    def line(text: str, model: str, config: str, limit: float, ratio: float | None = None) -> str:
        cands = _ok_rows(rows, model, config, finetune)
        if ratio is not None:   # the most accurate method within the time limit, else the best
            fit = [r for r in cands if r["ratio"] <= ratio]
            cands = fit or cands
        if not cands:
            return f"- {text}: **not run**"
        r = max(cands, key=lambda x: x["top1"])
        acc_ok = _drop(r) <= limit + 1e-9
        time_ok = ratio is None or r["ratio"] <= ratio
        verdict = ("met" if acc_ok and time_ok else "missed" if not acc_ok
                   else f"missed on time, accuracy met (load average {r.get('load_after', 0):.1f} "
                        "when the row ended)")
        extra = f" in {r['ratio']:.2f}× a float evaluation" if ratio is not None else \
            f", {r['ratio']:.2f}×"
        return (f"- {text}: **{verdict}** ({r['method']}: {r['top1']:.2f} %, "
                f"drop {_drop(r):+.2f} pt{extra}{peers_note(model, config)})")

    return [
        line("W4A8 per-channel ResNet-20: drop ≤ 0.05 pt in ≤ 3× a float evaluation",
             "resnet20", "w4a8", 0.05, 3.0),
        line("W4A8 per-channel ShuffleNetV2 ×0.5: drop ≤ 1.0 pt",
             "shufflenetv2_x0_5", "w4a8", 1.0),
        line("DPU default + the best method, ResNet-56: drop ≤ 0.2 pt", "resnet56", "dpu", 0.2),
        line("DPU default + the best method, ShuffleNetV2 ×0.5: drop ≤ 0.05 pt",
             "shufflenetv2_x0_5", "dpu", 0.05),
    ]


def _method_label(config: str, method: str) -> str:
    if method == "none":
        return "none (plain calibration)"
    return METHOD_LABELS.get((config, method), method)


def _not_run(rows: list[dict], plan_rows: list[tuple] | None) -> list[str]:
    done = {(r["model"], r["config"], r["method"]) for r in rows}
    return [f"{m}:{c}:{meth}" for m in MODELS for c in CONFIGS for meth in METHODS
            if (m, c, meth) not in done]


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100, break_long_words=False, break_on_hyphens=False)


def _jobs_note(meta: dict) -> str:
    jobs = meta.get("jobs", 1)
    return "" if jobs == 1 else (f" {jobs} rows ran at a time (`--jobs {jobs}`), each in its "
                                 "own one-thread subprocess.")


def _preamble(rows: list[dict], meta: dict) -> list[str]:
    n_calib = rows[0]["n_calib"] if rows else "?"
    n_test = rows[0]["n_test"] if rows else "?"
    return [
        _wrap(f"Run: {meta.get('start', '?')} – {meta.get('end', '?')} UTC, one run of one "
              f"command, every row below from it. Machine: {meta.get('machine', '?')}. Load "
              f"average (1 min) during the run: {meta.get('load', '?')}."), "",
        f"Command: `{meta.get('command', '?')}`", "",
        f"Interpreter: {meta.get('python', '?')} (the bench's own environment).", "",
        _wrap("Each row is one subprocess on one torch thread: calibration on the first "
              f"{n_calib} images of `calib.npz` (batches of 100), top-1 on the first {n_test} "
              "images of `test.npz`." + _jobs_note(meta) + " *Time* is the whole calibration "
              "as a ratio to one float evaluation of the test images measured in the same "
              "subprocess (the float model runs every 4th batch, interleaved with the quantized "
              "evaluation, scaled to all batches). For nndct_lite the calibration is fast "
              "finetune + the calibration pass + `export_quant_config()`; for brevitas the "
              "trace and graph rewrite, the activation calibration and GPTQ; for torch.ao "
              "`prepare_*_fx`, the observer pass and (int8) `convert_fx`. Drops are against the "
              "float top-1 of shared/data/README.md (ResNet-20 91.73, ResNet-56 93.39, "
              "ShuffleNetV2 ×0.5 90.65). The machine has 2 cores shared with other jobs (see the "
              "load averages): the calibration and the float reference are slowed by different "
              "amounts, so read the time ratios loosely and the accuracies exactly (they do not "
              "depend on the load)."), "",
        _wrap("Configurations: *W4A8 per-channel* = nndct_lite `target_device` CPU, float "
              "scales, 4-bit per-channel weights, 8-bit mse activations, CLE and bias correction "
              "off; *DPU default* = no config file (power-of-two per-tensor, CLE + bias "
              "correction). Peers (bench/peers_finetune.py): brevitas FX flow (BN merged), W4A8 = "
              "4-bit per-channel float-scale weights (scale fixed from the weight statistics) "
              "and 8-bit MSE activations, DPU = 8-bit power-of-two per-tensor weights and "
              "activations, then activation calibration and GPTQ (`act_order=True`) over the "
              "same calibration images; torch.ao FX, W4A8 = `prepare_qat_fx` with FakeQuantize "
              "(4-bit per-channel symmetric weights, 8-bit HistogramObserver activations), "
              "observers frozen and the fake-quant model evaluated (there are no 4-bit CPU "
              "kernels, and `prepare_fx` alone inserts no weight fake quant to evaluate); the "
              "reference of the DPU rows is `prepare_fx`/`convert_fx` with the x86 default int8 "
              "per-channel qconfig mapping, on the int8 kernels (a finer grid than the DPU's). "
              "For brevitas the CIFAR ResNet's option-A shortcut and ShuffleNetV2's channel "
              "split and shuffle are swapped, inside the bench, for equivalent modules that keep "
              "brevitas' QuantTensor (its graph cannot slice, pad or chunk one)."), ""]


def render(rows: list[dict], meta: dict) -> str:
    lines = ["# Fast finetune methods (bench/bench_finetune.py)", ""] + _preamble(rows, meta)
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        lines += [f"## {model} (float {FLOAT_TOP1[model]:.2f} %)", "",
                  "| configuration | method | top-1 (%) | drop (pt, float − quantized) | "
                  "time (× float eval) | calibration (s) | float eval (s) | load average after |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for config in CONFIGS:
            for method in METHODS:
                r = next((x for x in mine if x["config"] == config and x["method"] == method),
                         None)
                if r is None:
                    continue
                label = _method_label(config, method)
                if "error" in r:
                    err = r["error"].strip().splitlines()[-1][:120] if r["error"].strip() else "?"
                    lines.append(f"| {LABELS[config]} | {label} | error: {err} | | | | | |")
                    continue
                load = r.get("load_after")
                lines.append(f"| {LABELS[config]} | {label} | {r['top1']:.2f} | "
                             f"{_drop(r):+.2f} | {r['ratio']:.2f}× | {r['calib_s']:.1f} | "
                             f"{r['float_eval_s']:.1f} | "
                             f"{'–' if load is None else f'{load:.1f}'} |")
        lines.append("")
    missing = _not_run(rows, None)
    lines += ["## Goals of issue 24", "", "Our best fast finetune method against each goal "
              "(for the ResNet-20 goal, the most accurate one within 3×), the peers' rows of the "
              "same run beside it.", ""] + goals(rows) + [""]
    if missing:
        lines += [_wrap("Not run in this run: " + ", ".join(f"`{m}`" for m in missing)
                        + (f". {meta['skip_note']}" if meta.get("skip_note") else ".")), ""]
    return "\n".join(lines)


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    if "error" in r:
        return "error"
    time_s = "" if r["method"] == "none" else f"; {r['ratio']:.1f}×"
    return f"{r['top1']:.2f} % ({-_drop(r):+.2f}{time_s})"


def section(rows: list[dict], meta: dict) -> str:
    """The "Fast finetune methods (issue 24)" section of docs/benchmarks.md."""
    out = ["## Fast finetune methods (issue 24)", "",
           _wrap("From [bench_finetune.md](bench_finetune.md) (methods explained in "
                 "[algorithms.md](algorithms.md#fast-finetune)): `fast_finetune_method` `gptq` "
                 "or `adaround` against the default `adaquant` and plain calibration, and the "
                 "peers brevitas GPTQ and torch.ao, all from one run "
                 f"({meta.get('start', '?')} – {meta.get('end', '?')} UTC, "
                 f"{meta.get('machine_short', '')}; the command is on that page). "
                 f"{rows[0]['n_calib'] if rows else '?'} calibration images, "
                 f"{rows[0]['n_test'] if rows else '?'} test images, one torch thread per row"
                 + ("" if meta.get("jobs", 1) == 1 else f", {meta['jobs']} rows at a time")
                 + "; time = the whole calibration (for us fast finetune + calibration + export) "
                 "as a multiple of one float evaluation of the test images measured in the same "
                 "subprocess. Other jobs shared the 2 cores (load average "
                 f"{meta.get('load', '?')}): the accuracies are exact, the time ratios noisy. "
                 "brevitas: 4-bit per-channel weights / 8-bit MSE activations (W4A8) or 8-bit "
                 "power-of-two per-tensor (DPU rows), activation calibration + GPTQ "
                 "(`act_order`); torch.ao: W4A8 fake quant, and for the DPU rows the x86 int8 "
                 "per-channel default (a finer grid than the DPU's: a reference, not the same "
                 "problem)."), "",
           "| model | configuration | plain | adaquant | gptq | adaround | brevitas GPTQ | "
           "torch.ao |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for model in MODELS:
        for config in CONFIGS:
            cells = [_cell(_row(rows, model, config, m)) for m in METHODS]
            out.append(f"| {MODEL_LABELS[model]} (float {FLOAT_TOP1[model]:.2f} %) | "
                       f"{LABELS[config]} | " + " | ".join(cells) + " |")
    out += ["", _wrap("Each cell: top-1 (difference to float, pt; time × one float "
                      "evaluation). – : not run" + (f"; {meta['skip_note']}" if
                                                   meta.get("skip_note") else "") + "."),
            "", "Goals of the issue, each measured in that run:", ""] + goals(rows) + [""]
    return "\n".join(out)


def write_section(path: Path, text: str) -> None:
    """Replace only this bench's section of ``path`` (up to the next ``## `` heading)."""
    doc = path.read_text()
    head = "## Fast finetune methods (issue 24)"
    i = doc.index(head)
    j = doc.find("\n## ", i + len(head))
    old = doc[i:] if j < 0 else doc[i:j + 1]
    new = text if j < 0 else text + "\n"
    path.write_text(doc.replace(old, new, 1))


def default_plan(models: list[str]) -> list[tuple[str, str, str]]:
    """The rows the goals need first (plain, gptq and torch.ao on every model and both
    configurations), then brevitas GPTQ W4A8 on every model, then the rest in order of value per
    minute, so a time budget (``--budget-min``, or stopping the run: SIGTERM or Ctrl-C renders what
    finished) cuts the most expensive rows (ResNet-56's adaquant/adaround last)."""
    plan = [(m, c, meth) for m in models for c, meth in
            (("w4a8", "none"), ("w4a8", "gptq"), ("w4a8", "torchao"),
             ("dpu", "none"), ("dpu", "gptq"), ("dpu", "torchao"))]
    plan += [(m, "w4a8", "brevitas_gptq") for m in models]
    rest = [("resnet20", "w4a8", "adaquant"), ("resnet20", "dpu", "brevitas_gptq"),
            ("shufflenetv2_x0_5", "dpu", "brevitas_gptq"), ("resnet20", "w4a8", "adaround"),
            ("shufflenetv2_x0_5", "w4a8", "adaround"), ("shufflenetv2_x0_5", "w4a8", "adaquant"),
            ("resnet20", "dpu", "adaround"), ("resnet20", "dpu", "adaquant"),
            ("shufflenetv2_x0_5", "dpu", "adaround"), ("shufflenetv2_x0_5", "dpu", "adaquant"),
            ("resnet56", "dpu", "brevitas_gptq")]
    rest = [t for t in rest if t[0] in models]
    rest += [(m, c, meth) for m in models for meth in ("adaquant", "adaround") for c in CONFIGS
             if (m, c, meth) not in rest]
    return plan + rest + [(m, "dpu", "brevitas_gptq") for m in models
                          if (m, "dpu", "brevitas_gptq") not in rest]


def _read_results(path: Path) -> tuple[list[dict], dict]:
    if not path.is_file():
        return [], {}
    meta, rows = {}, []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            if "meta" in d:
                meta.update(d["meta"])
            else:
                rows.append(d)
    last: dict[tuple, dict] = {}
    for r in rows:   # a rerun replaces the earlier row of the same run
        last[(r["model"], r["config"], r["method"])] = r
    return list(last.values()), meta


def _append(path: Path, d: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(d) + "\n")


def _now() -> str:
    return f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", default=None,
                    help="config:method pairs, comma-separated (default: the default plan, "
                         "cheap rows first)")
    ap.add_argument("--plan", default=None,
                    help="model:config:method triples, comma-separated, run in this order "
                         "(instead of --models x --runs)")
    ap.add_argument("--skip", default="",
                    help="model:config:method triples to leave out (a field may be '*')")
    ap.add_argument("--skip-note", default="",
                    help="why rows were skipped, for the pages")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="start no row after this many minutes; the rest are listed as not run")
    ap.add_argument("--jobs", type=int, default=1,
                    help="rows run at the same time (each its own one-thread subprocess)")
    ap.add_argument("--n-calib", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--ref-every", type=int, default=4)
    ap.add_argument("--results", default=None,
                    help=f"JSONL of the run (default {RESULTS.relative_to(ROOT)}; started afresh "
                         "unless --append)")
    ap.add_argument("--append", action="store_true",
                    help="add rows to the results file (a rerun replaces the same row)")
    ap.add_argument("--doc", default=None, help=f"page to write (default {DOC.relative_to(ROOT)})")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 200 calibration / 1000 test images, results and pages "
                         "under /tmp, docs/ untouched")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--_worker")
    ap.add_argument("--_result")
    args = ap.parse_args()
    if args._worker:
        _worker(json.loads(args._worker), Path(args._result))
        return 0
    tmp = Path(tempfile.gettempdir())
    if args.quick:
        args.n_calib, args.n_test = min(args.n_calib, 200), min(args.n_test, 1000)
    results = Path(args.results or (tmp / "bench_finetune_quick.jsonl" if args.quick
                                    else RESULTS))
    doc = Path(args.doc or (tmp / "bench_finetune_quick.md" if args.quick else DOC))
    bench_md = (tmp / "bench_finetune_quick_section.md" if args.quick or args.doc
                else ROOT / "docs" / "benchmarks.md")
    if not args.render:
        if not cm.have_data():
            print("shared/data is not available; nothing to run")
            return 0
        if args.plan:
            plan = [tuple(p.split(":")) for p in args.plan.split(",")]
        elif args.runs:
            pairs = [tuple(p.split(":")) for p in args.runs.split(",")]
            plan = [(model, c, m) for model in args.models.split(",") for c, m in pairs]
        else:
            plan = default_plan(args.models.split(","))
        skips = [tuple(p.split(":")) for p in args.skip.split(",") if p]
        plan = [t for t in plan
                if not any(all(a in ("*", b) for a, b in zip(sk, t)) for sk in skips)]
        if not args.append and results.exists():
            results.unlink()
        start = time.time()
        loads = [os.getloadavg()[0]]
        command = ("python bench/bench_finetune.py "
                   + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip()
        _append(results, {"meta": {"command": command, "start": _now(),
                                   "machine": cm.machine_info(1),
                                   "python": _interpreter(), "skip_note": args.skip_note,
                                   "jobs": args.jobs}})
        signal.signal(signal.SIGTERM, _stop)
        todo = list(plan)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    if args.budget_min is not None and time.time() - start > 60 * args.budget_min:
                        print(f"time budget spent: {len(todo)} rows not run", flush=True)
                        todo.clear()
                        return
                    model, config, method = todo.pop(0)
                spec = dict(model_name=model, config=config, method=method,
                            n_calib=args.n_calib, n_test=args.n_test, bs=100,
                            ref_every=args.ref_every)
                r = run_subprocess(spec)
                r["finished"] = f"{_dt.datetime.now(_dt.timezone.utc):%H:%M:%S}"
                with lock:
                    loads.append(os.getloadavg()[0])
                    print(json.dumps({k: v for k, v in r.items() if k != "error"}),
                          r.get("error", "")[-500:], flush=True)
                    if not stopping:
                        _append(results, r)

        stopping = False
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.jobs)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(1.0)
        except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the rows in progress are dropped
            stopping = True
            with lock:
                todo.clear()
            for proc in list(_RUNNING):
                proc.kill()
            print("stopped: rendering the rows that finished", flush=True)
        _append(results, {"meta": {"end": f"{_dt.datetime.now(_dt.timezone.utc):%H:%M}",
                                   "load": f"{min(loads):.1f}–{max(loads):.1f}"}})
    rows, meta = _read_results(results)
    meta["machine_short"] = meta.get("machine", "").split(";")[0]
    doc.write_text(render(rows, meta))
    print(f"wrote {doc}")
    if bench_md.name == "benchmarks.md":
        write_section(bench_md, section(rows, meta))
    else:
        bench_md.write_text(section(rows, meta))
    print(f"wrote {bench_md}")
    return 0


def _stop(signum, frame):
    raise KeyboardInterrupt


def _interpreter() -> str:
    try:
        import brevitas
        bv = f"brevitas {brevitas.__version__}"
    except ImportError:
        bv = "no brevitas"
    return f"{sys.executable}, torch {torch.__version__}, {bv}"


if __name__ == "__main__":
    sys.exit(main())
