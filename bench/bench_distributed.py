"""Calibration and fast finetune across processes (torch.distributed, gloo) vs one process.

ResNet-20 (pretrained from ../shared/data when present, else random weights with non-trivial BN
statistics), calibrated on the CIFAR-10 calibration images (synthetic images without
../shared/data) with the default DPU config (CLE and bias correction on), then a second
quantizer fast-finetuned on the first ``--ft`` of them and calibrated on those. Three runs, one
after the other, each in fresh processes:

  A  1 process x 2 threads, the ordinary single-process run (no process group);
  B  2 processes x 1 thread, ``torch.distributed`` gloo; each rank takes every 2nd image
     (``DistributedSampler(shuffle=False)`` order) and batches its share;
  C  1 process x 1 thread inside ``nndct_lite.distributed.emulate(2)``, fed the two ranks'
     batches interleaved: the documented single-process counterpart of B (docs/scaling.md).

Reported: wall time of each phase (rank 0's, from a barrier at the start; B's ranks finish
together because the last call is collective), the speed-up A/B, the sha256 of every file
written (B must equal C byte for byte; A is a different computation, see docs/scaling.md), and
rank 0's traffic (collectives and bytes it contributed).

    python bench/bench_distributed.py            # 5000 calib images, finetune on 1000;
                                                 # writes docs/bench_distributed.md
    python bench/bench_distributed.py --quick    # 400 / 100 images, prints only
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

FILES = {"calib": ("quant_info.json", "bias_corr.pth"),
         "finetune": ("param.pth", "quant_info.json", "bias_corr.pth")}


# --------------------------------------------------------------------------- worker
def _batches(x, bs: int) -> list:
    return [x[i:i + bs] for i in range(0, len(x), bs)]


def _interleave(lists: list[list]) -> list:
    out = []
    for k in range(max(len(v) for v in lists)):
        out.extend(v[k] for v in lists if k < len(v))
    return out


def _forward(model, batches) -> None:
    import torch
    with torch.no_grad():
        for b in batches:
            model(b)


def worker(a) -> int:
    import torch
    torch.set_num_threads(a.threads)
    from cifar_models import cifar_or_synthetic, load_model
    from nndct_lite import distributed, torch_quantizer

    world = 1
    if a.mode == "rank":
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"file://{a.store}", rank=a.rank,
                                world_size=a.world, timeout=datetime.timedelta(seconds=600))
        world = a.world
    elif a.mode == "emulate":
        world = a.world
    x, _, real = cifar_or_synthetic("calib", a.calib)
    xf = x[:a.ft]
    if a.mode == "plain":
        calib, ft = _batches(x, a.batch), _batches(xf, a.batch)
    else:
        shard = (lambda t: [t[r::world] for r in range(world)])
        if a.mode == "rank":
            calib = _batches(shard(x)[a.rank], a.batch)
            ft = _batches(shard(xf)[a.rank], a.batch)
        else:
            calib = _interleave([_batches(s, a.batch) for s in shard(x)])
            ft = _interleave([_batches(s, a.batch) for s in shard(xf)])
    out = Path(a.out)
    res = {"real_data": real, "times": {}, "traffic": {}}

    def traffic():
        w = distributed.world()
        return dict(w.stats) if w is not None and not w.emulated else {}

    def barrier():
        w = distributed.world()
        if w is not None and not w.emulated:
            w.exchange(None, "bench barrier", channel="bench")

    def run():
        barrier()
        before = traffic()
        t0 = time.perf_counter()
        q = torch_quantizer("calib", load_model("resnet20")[0], (x[:1],),
                            output_dir=str(out / "calib"))
        _forward(q.quant_model, calib)
        q.export_quant_config()
        t1 = time.perf_counter()
        mid = traffic()
        q = torch_quantizer("calib", load_model("resnet20")[0], (x[:1],),
                            output_dir=str(out / "finetune"))
        q.fast_finetune(_forward, (q.quant_model, ft))
        _forward(q.quant_model, ft)
        q.export_quant_config()
        t2 = time.perf_counter()
        end = traffic()
        res["times"] = {"calib": t1 - t0, "finetune": t2 - t1}
        res["traffic"] = {"calib": {k: mid[k] - before[k] for k in mid},
                          "finetune": {k: end[k] - mid[k] for k in end}}
        res["batches"] = {"calib": len(calib), "finetune": len(ft)}

    if a.mode == "emulate":
        with distributed.emulate(world):
            run()
    else:
        run()
    tag = f"rank{a.rank}" if a.mode == "rank" else a.mode
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    if a.mode == "rank":
        torch.distributed.destroy_process_group()
    return 0


# --------------------------------------------------------------------------- driver
def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _launch(args, mode: str, out: Path, threads: int, world: int = 2) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, str(Path(__file__).resolve()), "--worker", mode,
            "--threads", str(threads), "--out", str(out), "--calib", str(args.calib),
            "--ft", str(args.ft), "--batch", str(args.batch), "--world", str(world)]
    t = time.perf_counter()
    if mode == "rank":
        procs = [subprocess.Popen(base + ["--rank", str(r), "--store", str(out / "store")],
                                  env=_env(threads), cwd=ROOT) for r in range(world)]
    else:
        procs = [subprocess.Popen(base, env=_env(threads), cwd=ROOT)]
    codes = [p.wait(timeout=3600) for p in procs]
    wall = time.perf_counter() - t
    if any(codes):
        raise SystemExit(f"{mode} run failed: exit codes {codes}")
    res = json.loads((out / ("rank0.json" if mode == "rank" else f"{mode}.json")).read_text())
    res["process_wall"] = wall
    res["sha256"] = {f"{ph}/{f}": hashlib.sha256((out / ph / f).read_bytes()).hexdigest()
                     for ph, names in FILES.items() for f in names if (out / ph / f).is_file()}
    return res


def _table(a: dict, b: dict, c: dict, args) -> str:
    lines = ["| phase | A: 1 proc x 2 threads (s) | B: 2 procs x 1 thread (s) | speed-up A/B | "
             "C: emulate(2), 1 thread (s) |", "|---|---:|---:|---:|---:|"]
    for ph in ("calib", "finetune"):
        ta, tb, tc = a["times"][ph], b["times"][ph], c["times"][ph]
        lines.append(f"| {ph} | {ta:.1f} | {tb:.1f} | {ta / tb:.2f}x | {tc:.1f} |")
    ta, tb, tc = (sum(r["times"].values()) for r in (a, b, c))
    lines.append(f"| total | {ta:.1f} | {tb:.1f} | {ta / tb:.2f}x | {tc:.1f} |")
    lines += ["", "| file | B == C (byte-identical) | A == B |", "|---|---|---|"]
    for k in sorted(b["sha256"]):
        lines.append(f"| {k} | {'yes' if b['sha256'][k] == c['sha256'].get(k) else 'NO'} | "
                     f"{'yes' if b['sha256'][k] == a['sha256'].get(k) else 'no'} |")
    lines += ["", "| rank 0 traffic | object exchanges | bytes contributed | tensor all_gathers "
              "| tensor bytes contributed |", "|---|---:|---:|---:|---:|"]
    for ph in ("calib", "finetune"):
        t = b["traffic"][ph]
        lines.append(f"| {ph} | {t['object_exchanges']} | {t['object_bytes']:,} | "
                     f"{t['tensor_gathers']} | {t['tensor_bytes']:,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--calib", type=int, default=None)
    p.add_argument("--ft", type=int, default=None)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--doc", default=None, help="markdown page to write (default: "
                   "docs/bench_distributed.md for a full run, none with --quick)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.calib is None:
        args.calib = 400 if args.quick else 5000
    if args.ft is None:
        args.ft = 100 if args.quick else 1000
    if args.worker:
        args.mode = args.worker
        return worker(args)
    doc = args.doc or (None if args.quick else str(ROOT / "docs" / "bench_distributed.md"))
    from cifar_models import machine_info
    machine = machine_info(2)   # the load average at the start
    with tempfile.TemporaryDirectory(prefix="bench_dist_") as tmp:
        tmp = Path(tmp)
        print(f"A: 1 process x 2 threads ({args.calib} calib images, finetune on {args.ft})",
              flush=True)
        a = _launch(args, "plain", tmp / "A", threads=2)
        print("B: 2 processes x 1 thread (gloo)", flush=True)
        b = _launch(args, "rank", tmp / "B", threads=1)
        print("C: emulate(2), 1 process x 1 thread (the counterpart of B)", flush=True)
        c = _launch(args, "emulate", tmp / "C", threads=1)
    table = _table(a, b, c, args)
    print(table)
    same = all(b["sha256"][k] == c["sha256"].get(k) for k in b["sha256"])
    print(f"B == C for every file: {same}")
    if doc:
        data = "CIFAR-10 calibration images" if a["real_data"] else \
            "synthetic images (../shared/data absent)"
        text = (f"# Distributed calibration and fast finetune\n\n"
                f"`python bench/bench_distributed.py` on {datetime.date.today()}: ResNet-20, "
                f"{args.calib} {data}, batch {args.batch}, default DPU config (CLE, bias "
                f"correction); fast finetune on the first {args.ft}. Machine: "
                f"{machine}. The machine is shared with other jobs: seconds are noisy.\n\n"
                f"{table}\n\n"
                f"B == C for every file: **{'yes' if same else 'NO'}**. A differs from B by "
                "design: a 2-rank run equals the step-synchronous `emulate(2)` run, not the "
                "plain one (docs/scaling.md, \"What you get\").\n\n"
                "What the traffic means and what to expect on N GPUs: docs/scaling.md, "
                "\"Cost\".\n")
        Path(doc).write_text(text, encoding="utf-8")
        print(f"wrote {doc}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
