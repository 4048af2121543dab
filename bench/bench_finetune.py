"""Issue #24: the fast finetune methods (adaquant, gptq, adaround) on CIFAR-10.

Models: ResNet-20, ShuffleNetV2 x0.5 and ResNet-56 from ../shared/data. Quantization
configurations:

  w4a8   CPU target, float scales, 4-bit per-channel weights, 8-bit mse activations, CLE and bias
         correction off (the configuration of the issue's figures; compare_peers.py's W4_CONFIG
         with include_cle/include_bias_corr false)
  dpu    the DPU default (no config file: power-of-two, per-tensor, CLE + bias correction)

Methods: ``none`` (plain calibration), ``adaquant``, ``gptq``, ``adaround`` (the config key
``fast_finetune_method``). Peer rows (brevitas GPTQ, torch.ao) are not run here; their figures
are in docs/bench_peers.md and in issue 24.

Every (model, config, method) runs in its own subprocess on one torch thread. Calibration
(fast finetune + the calibration pass + export) is timed and given as a ratio to one float
evaluation of the 10,000 test images, measured in the same process interleaved with the
quantized evaluation (every ``--ref-every``-th batch, scaled to all batches). Results are appended
to a JSONL file as each run ends, and the Markdown page is rendered from it.

    python bench/bench_finetune.py                       # everything, writes docs/bench_finetune.md
    python bench/bench_finetune.py --models resnet20 --runs w4a8:gptq,dpu:none
    python bench/bench_finetune.py --plan resnet20:w4a8:gptq,resnet56:dpu:none
    python bench/bench_finetune.py --render              # only re-render the page from the JSONL
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_models as cm  # noqa: E402

cm.ensure_repo_on_path()

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bench_finetune.md"
RESULTS = ROOT / "bench" / "results_finetune.jsonl"
MODELS = ["resnet20", "shufflenetv2_x0_5", "resnet56"]
METHODS = ["none", "adaquant", "gptq", "adaround"]
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
        cfg_file = _calibrate(model, xc, CONFIGS[config], method, wd, bs)
        calib_s = time.perf_counter() - t
        qmodel = _test_model(model, xc, cfg_file, method, wd)
        ev = cm.paired_eval(qmodel, model, xt, yt, bs, ref_every)
    import os
    res["load_after"] = os.getloadavg()[0]
    res.update(top1=ev["top1"], calib_s=calib_s, float_eval_s=ev["ref_seconds"],
               ratio=calib_s / ev["ref_seconds"], float_top1_sampled=ev["ref_top1_sampled"])
    return res


def _worker(spec: dict, out: Path) -> None:
    torch.set_num_threads(1)
    import logging
    logging.getLogger("nndct_lite").setLevel(logging.WARNING)
    out.write_text(json.dumps(run_one(**spec)))


def run_subprocess(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_ft_worker_") as d:
        out = Path(d) / "r.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec),
               "--_result", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=cm.worker_env("inherit"))
        if proc.returncode != 0 or not out.is_file():
            return {"model": spec["model_name"], "config": spec["config"],
                    "method": spec["method"], "error": (proc.stdout + proc.stderr)[-2000:]}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- the page
def _load(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last: dict[tuple, dict] = {}
    for r in rows:   # a rerun replaces the earlier row of the same run
        last[(r["model"], r["config"], r["method"])] = r
    return list(last.values())


def _row(rows: list[dict], model: str, config: str, method: str) -> dict | None:
    for r in rows:
        if (r["model"], r["config"], r["method"]) == (model, config, method) and "error" not in r:
            return r
    return None


def goals(rows: list[dict]) -> list[str]:
    def best(model: str, config: str) -> dict | None:
        cands = [r for r in rows if r["model"] == model and r["config"] == config
                 and "error" not in r and r["method"] != "none"]
        return max(cands, key=lambda r: r["top1"]) if cands else None

    def line(text: str, r: dict | None, limit: float, ratio: float | None = None) -> str:
        if r is None:
            return f"- {text}: **not run**"
        drop = FLOAT_TOP1[r["model"]] - r["top1"]
        ok = drop <= limit + 1e-9 and (ratio is None or r["ratio"] <= ratio)
        extra = f" in {r['ratio']:.2f}× a float evaluation" if ratio is not None else ""
        return (f"- {text}: **{'met' if ok else 'missed'}** ({r['method']}: {r['top1']:.2f} %, "
                f"drop {drop:+.2f} pt{extra})")
    out = []
    w20 = [r for r in rows if r["model"] == "resnet20" and r["config"] == "w4a8"
           and "error" not in r and r["method"] != "none"]
    fit = [r for r in w20 if r["ratio"] <= 3.0]
    pick = max(fit, key=lambda r: r["top1"]) if fit else best("resnet20", "w4a8")
    out.append(line("W4A8 per-channel ResNet-20: drop ≤ 0.05 pt in ≤ 3× a float evaluation",
                    pick, 0.05, 3.0))
    out.append(line("W4A8 per-channel ShuffleNetV2 ×0.5: drop ≤ 1.0 pt",
                    best("shufflenetv2_x0_5", "w4a8"), 1.0))
    out.append(line("DPU default + the best method, ResNet-56: drop ≤ 0.2 pt",
                    best("resnet56", "dpu"), 0.2))
    out.append(line("DPU default + the best method, ShuffleNetV2 ×0.5: drop ≤ 0.05 pt",
                    best("shufflenetv2_x0_5", "dpu"), 0.05))
    return out


def render(rows: list[dict], command: str, machine: str) -> str:
    lines = ["# Fast finetune methods (bench/bench_finetune.py)", "",
             f"Date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine}.",
             f"Command: `{command}`.", "",
             "Each row is one subprocess on one torch thread: calibration on the first "
             f"{rows[0]['n_calib'] if rows else '?'} images of `calib.npz` (batches of 100), "
             "top-1 on all 10,000 images of `test.npz`. *Time* is fast finetune + the calibration "
             "pass + `export_quant_config()` as a ratio to one float evaluation of the 10,000 "
             "test images in the same process (sampled every 4th batch, interleaved with the "
             "quantized evaluation). Drops are against the float top-1 of shared/data/README.md "
             "(ResNet-20 91.73, ResNet-56 93.39, ShuffleNetV2 ×0.5 90.65). The machine has 2 "
             "cores; when other jobs share it (see the load averages) the calibration and the "
             "float reference are slowed by different amounts, so read the time ratios loosely "
             "and the accuracies exactly (they do not depend on the load).", ""]
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        lines += [f"## {model} (float {FLOAT_TOP1[model]:.2f} %)", "",
                  "| configuration | method | top-1 (%) | drop (pt, float − quantized) | "
                  "time (× float eval) | calibration (s) | load average after |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for config in CONFIGS:
            for method in METHODS:
                r = next((x for x in mine if x["config"] == config and x["method"] == method),
                         None)
                if r is None:
                    continue
                if "error" in r:
                    lines.append(f"| {LABELS[config]} | {method} | error | | | | |")
                    continue
                drop = FLOAT_TOP1[model] - r["top1"]
                load = r.get("load_after")
                lines.append(f"| {LABELS[config]} | {method} | {r['top1']:.2f} | {drop:+.2f} | "
                             f"{r['ratio']:.2f}× | {r['calib_s']:.1f} | "
                             f"{'–' if load is None else f'{load:.1f}'} |")
        lines.append("")
    lines += ["## Goals of issue 24", ""] + goals(rows) + [""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", default=None,
                    help="config:method pairs, comma-separated (default: every pair)")
    ap.add_argument("--plan", default=None,
                    help="model:config:method triples, comma-separated, run in this order "
                         "(instead of --models x --runs)")
    ap.add_argument("--n-calib", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--ref-every", type=int, default=4)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--_worker")
    ap.add_argument("--_result")
    args = ap.parse_args()
    if args._worker:
        _worker(json.loads(args._worker), Path(args._result))
        return 0
    results = Path(args.results)
    command = "python bench/bench_finetune.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    machine = cm.machine_info(1)
    if not args.render:
        if not cm.have_data():
            print("shared/data is not available; nothing to run")
            return 0
        pairs = ([tuple(p.split(":")) for p in args.runs.split(",")] if args.runs else
                 [(c, m) for c in CONFIGS for m in METHODS])
        plan = ([tuple(p.split(":")) for p in args.plan.split(",")] if args.plan else
                [(model, c, m) for model in args.models.split(",") for c, m in pairs])
        for model, config, method in plan:
            spec = dict(model_name=model, config=config, method=method,
                        n_calib=args.n_calib, n_test=args.n_test, bs=100,
                        ref_every=args.ref_every)
            r = run_subprocess(spec)
            r["finished"] = f"{_dt.datetime.now(_dt.timezone.utc):%H:%M:%S}"
            print(json.dumps({k: v for k, v in r.items() if k != "error"}),
                  r.get("error", "")[-500:], flush=True)
            with results.open("a") as f:
                f.write(json.dumps(r) + "\n")
    DOC.write_text(render(_load(results), command, machine))
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
