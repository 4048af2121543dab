"""One process of the distributed tests (run as a script, never collected by pytest).

``python dist_worker.py rank JOBS OUT RANK WORLD STORE TIMEOUT_S`` joins a gloo group of WORLD
processes through the FileStore STORE and runs JOBS (comma separated) on this rank's share of
the data (batches ``rank, rank + WORLD, ...``), writing under ``OUT/ranks/`` (rank 0 only).

``python dist_worker.py counterparts JOBS OUT WORLD``: no process group; runs JOBS on all the
data three times: plain, inside ``emulate(1)`` and inside ``emulate(WORLD)`` (the documented
single-process counterpart), under ``OUT/plain``, ``OUT/emulate1``, ``OUT/emulate<WORLD>``.

Every process writes ``OUT/<tag>.json`` (tag: rank0, rank1, plain, emulate1, emulate2): digests
of what it computed, for the parent test to compare; a failing rank writes ``OUT/<tag>.error``
and exits with status 17 without shutting its process group down.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn as nn

from nndct_lite import torch_quantizer
from nndct_lite import distributed
from nndct_lite.quant.build import layer_of

BATCHES, BATCH = 6, 4

FLOAT_W = {"weights": {"scale_type": "float", "method": "maxmin", "per_channel": True},
           "bias": {"scale_type": "float", "method": "maxmin"}}


def float_cfg(method: str, stat: str) -> dict:
    return {"target_device": "CPU",
            "overall_quantize_config": {"scale_type": "float", "method": method,
                                        "calib_statistic_method": stat,
                                        "round_mode": "half_even"},
            "tensor_quantize_config": FLOAT_W}


#: case -> quant_config (None: the defaults, DPU diffs with modal)
CASES = {
    "diffs-dpu": None,
    "diffs-cpu": {"target_device": "CPU"},
    "pof2-maxmin": {"target_device": "CPU", "overall_quantize_config": {"method": "maxmin"}},
    "maxmin-max": float_cfg("maxmin", "max"),
    "maxmin-mean": float_cfg("maxmin", "mean"),
    "maxmin-median": float_cfg("maxmin", "median"),
    "percentile-max": float_cfg("percentile", "max"),
    "entropy-mean": float_cfg("entropy", "mean"),
    "mse-median": float_cfg("mse", "median"),
}


class Tiny(nn.Module):
    """conv-bn-relu, a residual add, pooling and a linear head: every kind of quantizer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def model() -> nn.Module:
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():
        m.bn1.running_mean.uniform_(-0.2, 0.2)
        m.bn1.running_var.uniform_(0.5, 1.5)
    return m.eval()


def data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 3, 8, 8, generator=g) * (1 + i % 3) for i in range(BATCHES)]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def params_digest(q) -> str:
    params, outputs = q._session.collect()
    return sha(repr(sorted({**params, **outputs}.items())).encode())


def state_digest(m: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in m.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def forward_all(model_, batches) -> None:
    with torch.no_grad():
        for b in batches:
            model_(b)


# --------------------------------------------------------------------------- jobs
def job_calib(mine, out: Path, report: dict) -> None:
    """Every case: calibrate, export; then rebuild in test mode and run one batch."""
    probe = data()[0]
    for case, cfg in CASES.items():
        d = out / case
        cfg_file = None
        if cfg is not None:
            cfg_file = str(out / f"{case}.json")
            if distributed.is_writer(distributed.world()):
                Path(cfg_file).write_text(json.dumps(cfg), encoding="utf-8")
            _barrier()
        q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(d),
                            quant_config_file=cfg_file)
        forward_all(q.quant_model, mine)
        q.export_quant_config()
        report[case] = {"params": params_digest(q)}
        qt = torch_quantizer("test", model(), (probe[:1],), output_dir=str(d),
                             quant_config_file=cfg_file)
        with torch.no_grad():
            y = qt.quant_model(probe)
        report[case]["test_out"] = sha(y.numpy().tobytes())


def job_bias(mine, out: Path, report: dict) -> None:
    probe = data()[0]
    cfg = {"include_bias_corr": True, "include_cle": True}
    for case, extra in (("bias-dpu", {}), ("bias-float", float_cfg("maxmin", "mean"))):
        d = out / case
        cfg_file = str(out / f"{case}.json")
        if distributed.is_writer(distributed.world()):
            Path(cfg_file).write_text(json.dumps({**extra, **cfg}), encoding="utf-8")
        _barrier()
        q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(d),
                            quant_config_file=cfg_file)
        forward_all(q.quant_model, mine)
        q.export_quant_config()
        corr = q._session.bias_corrections()
        report[case] = {"params": params_digest(q), "bias": sha(repr(corr).encode())}


def job_finetune(mine, out: Path, report: dict) -> None:
    probe = data()[0]
    d = out / "finetune"
    q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(d))
    q.fast_finetune(forward_all, (q.quant_model, mine))
    forward_all(q.quant_model, mine)
    q.export_quant_config()
    report["finetune"] = {"params": params_digest(q), "weights": state_digest(q.quant_model)}
    qt = torch_quantizer("test", model(), (probe[:1],), output_dir=str(d))
    qt.load_ft_param()
    with torch.no_grad():
        y = qt.quant_model(probe)
    report["finetune"]["test_out"] = sha(y.numpy().tobytes())


def _job_rounding(method: str, mine, out: Path, report: dict) -> None:
    """gptq / adaround through the config key: every rank's statistics or gradients merged."""
    probe = data()[0]
    d = out / f"finetune-{method}"
    cfg_file = str(out / f"finetune-{method}.json")
    if distributed.is_writer(distributed.world()):
        out.mkdir(parents=True, exist_ok=True)
        Path(cfg_file).write_text(json.dumps({"fast_finetune_method": method}), encoding="utf-8")
    _barrier()
    q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(d),
                        quant_config_file=cfg_file)
    q.fast_finetune(forward_all, (q.quant_model, mine))
    forward_all(q.quant_model, mine)
    q.export_quant_config()
    report[f"finetune-{method}"] = {"params": params_digest(q),
                                    "weights": state_digest(q.quant_model)}


def job_gptq(mine, out: Path, report: dict) -> None:
    _job_rounding("gptq", mine, out, report)


def job_adaround(mine, out: Path, report: dict) -> None:
    _job_rounding("adaround", mine, out, report)


def job_crash(mine, out: Path, report: dict) -> None:
    """Rank ``$CRASH_RANK`` (default 1) raises after two calibration batches."""
    probe = data()[0]
    q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(out / "crash"))
    w = distributed.world()
    bad = int(os.environ.get("CRASH_RANK", "1"))
    for i, b in enumerate(mine):
        if w is not None and w.rank == bad and i == 2:
            raise RuntimeError(f"rank {bad} was told to fail")
        with torch.no_grad():
            q.quant_model(b)
    q.export_quant_config()


def job_hang(mine, out: Path, report: dict) -> None:
    """Rank 1 stops answering (sleeps) before its second batch; rank 0 must time out."""
    probe = data()[0]
    q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(out / "hang"))
    w = distributed.world()
    for i, b in enumerate(mine):
        if w is not None and w.rank == 1 and i == 1:
            time.sleep(120)
        with torch.no_grad():
            q.quant_model(b)
    q.export_quant_config()


def job_uneven(mine, out: Path, report: dict) -> None:
    """Rank 1 has one batch less (5 batches over 2 ranks)."""
    probe = data()[0]
    q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(out / "uneven"))
    forward_all(q.quant_model, mine)
    q.export_quant_config()
    report["uneven"] = {"params": params_digest(q)}


def job_writers(mine, out: Path, report: dict) -> None:
    """Each rank names its own output_dir: only rank 0's may receive files."""
    probe = data()[0]
    w = distributed.world()
    rank = 0 if w is None else w.rank
    q = torch_quantizer("calib", model(), (probe[:1],), output_dir=str(out / f"writer{rank}"))
    forward_all(q.quant_model, mine)
    q.export_quant_config()


def job_mismatch(mine, out: Path, report: dict) -> None:
    """Rank 1 loads slightly different weights: construction must fail on every rank."""
    probe = data()[0]
    m = model()
    w = distributed.world()
    if w is not None and w.rank == 1:
        with torch.no_grad():
            m.conv2.weight[0, 0, 0, 0] += 1e-3
    torch_quantizer("calib", m, (probe[:1],), output_dir=str(out / "mismatch"))


JOBS = {"calib": job_calib, "bias": job_bias, "finetune": job_finetune, "gptq": job_gptq,
        "adaround": job_adaround, "crash": job_crash,
        "hang": job_hang, "uneven": job_uneven, "writers": job_writers,
        "mismatch": job_mismatch}


def _barrier() -> None:
    w = distributed.world()
    if w is not None and not w.emulated:
        w.exchange(None, "test barrier", channel="test")


def run_jobs(jobs: list[str], out: Path, share) -> dict:
    report: dict = {}
    for job in jobs:
        batches = data()[:5] if job == "uneven" else data()
        JOBS[job](share(batches), out, report)
    return report


def main() -> int:
    torch.set_num_threads(1)   # as the ranks: bits depend on the intra-op thread count
    mode, jobs, out = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    if mode == "rank":
        import torch.distributed as dist
        rank, world, store, timeout = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], \
            float(sys.argv[7])
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        tag, report = f"rank{rank}", {}
        try:
            report = run_jobs(jobs, out / "ranks", lambda b: b[rank::world])
        except Exception as exc:  # noqa: BLE001 - recorded for the parent test
            (out / f"{tag}.error").write_text(f"{type(exc).__name__}: {exc}\n"
                                              + traceback.format_exc(), encoding="utf-8")
            os._exit(17)   # no clean shutdown: like a crashed process
        (out / f"{tag}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        dist.destroy_process_group()
        return 0
    # counterparts: plain (no world), emulate(1), emulate(WORLD), each in its own folder
    world = int(sys.argv[4])
    for tag, n in (("plain", None), ("emulate1", 1), (f"emulate{world}", world)):
        if n is None:
            report = run_jobs(jobs, out / tag, lambda b: b)
        else:
            with distributed.emulate(n):
                report = run_jobs(jobs, out / tag, lambda b: b)
        (out / f"{tag}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
