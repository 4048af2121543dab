"""Calibration, bias correction and file writing across 2 gloo processes (issue #13).

Each test spawns ``dist_worker.py`` twice (ranks 0 and 1, one thread each, a FileStore in
tmp_path, a short process-group timeout) and, where a counterpart is needed, once more without a
process group (plain, ``emulate(1)``, ``emulate(2)``). What must hold is in docs/scaling.md:
every rank ends with the same parameters, byte-identical to the ``emulate(2)`` run on the union
of the data, and ``emulate(1)`` is the plain run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"
ROOT = HERE.parents[1]

import dist_worker
import nndct_lite

# the workers import the nndct_lite this process imports (the installed wheel in CI)
PACKAGE_DIR = str(Path(nndct_lite.__file__).resolve().parents[1])
CASES = list(dist_worker.CASES)
JOB_TIMEOUT = 120   # seconds for a whole spawn: a broken test fails, never hangs


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_DIR, env.get("PYTHONPATH")) if p)
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.update(extra or {})
    return env


def _wait_all(procs: list, deadline: float) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            for q in procs:
                q.wait()
            pytest.fail(f"distributed worker did not finish in {JOB_TIMEOUT} s")
    return codes


def spawn(jobs: str, out: Path, *, world: int = 2, timeout: float = 20.0,
          counterparts: bool = False, env: dict | None = None, kill_after_rank0: bool = False):
    """Run ``jobs`` on ``world`` gloo ranks (and the counterparts); returns the exit codes."""
    out.mkdir(parents=True, exist_ok=True)
    store = out / "store"
    logs = []
    procs = []
    for r in range(world):
        log = open(out / f"rank{r}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), "rank", jobs, str(out), str(r), str(world), str(store),
             str(timeout)], cwd=ROOT, env=_env(env), stdout=log, stderr=subprocess.STDOUT))
    if counterparts:
        log = open(out / "counterparts.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), "counterparts", jobs, str(out), str(world)],
            cwd=ROOT, env=_env(env), stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + JOB_TIMEOUT
    try:
        if kill_after_rank0:
            codes = _wait_all(procs[:1], deadline)
            t_rank0 = time.monotonic()
            for p in procs[1:]:
                p.kill()
                p.wait()
            return codes, t_rank0
        return _wait_all(procs, deadline)
    finally:
        for log in logs:
            log.close()


def _log(out: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(out.glob("*.log")))


def _report(out: Path, tag: str) -> dict:
    return json.loads((out / f"{tag}.json").read_text())


# --------------------------------------------------------------------------- one spawn, many checks
@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_merged")
    codes = spawn("calib,bias,uneven,writers,finetune", out, counterparts=True)
    assert codes == [0, 0, 0], _log(out)
    return out


@pytest.mark.parametrize("case", CASES)
def test_quant_info_byte_identical_to_emulated_run(merged, case):
    r0, r1 = _report(merged, "rank0"), _report(merged, "rank1")
    emu = _report(merged, "emulate2")
    assert r0[case]["params"] == r1[case]["params"], "ranks disagree"
    assert r0[case] == emu[case]
    got = (merged / "ranks" / case / "quant_info.json").read_bytes()
    assert got == (merged / "emulate2" / case / "quant_info.json").read_bytes()
    # test mode rebuilt from rank 0's files gives the same outputs on every rank
    assert r0[case]["test_out"] == r1[case]["test_out"]


def test_emulate_one_is_the_plain_run(merged):
    assert _report(merged, "emulate1") == _report(merged, "plain")
    for case in CASES + ["bias-dpu", "bias-float", "uneven", "finetune"]:
        a = (merged / "plain" / case / "quant_info.json").read_bytes()
        assert a == (merged / "emulate1" / case / "quant_info.json").read_bytes(), case
    for case in ("bias-dpu", "bias-float"):
        a = (merged / "plain" / case / "bias_corr.pth").read_bytes()
        assert a == (merged / "emulate1" / case / "bias_corr.pth").read_bytes(), case


@pytest.mark.parametrize("case", ["bias-dpu", "bias-float"])
def test_bias_correction_equal_across_ranks_and_emulated(merged, case):
    r0, r1, emu = (_report(merged, t) for t in ("rank0", "rank1", "emulate2"))
    assert r0[case] == r1[case] == emu[case]
    for name in ("bias_corr.pth", "quant_info.json"):
        assert (merged / "ranks" / case / name).read_bytes() == \
            (merged / "emulate2" / case / name).read_bytes()


def test_uneven_shards(merged):
    """5 batches over 2 ranks: rank 1 answers the last step with nothing."""
    r0, r1, emu = (_report(merged, t) for t in ("rank0", "rank1", "emulate2"))
    assert r0["uneven"] == r1["uneven"] == emu["uneven"]
    assert (merged / "ranks" / "uneven" / "quant_info.json").read_bytes() == \
        (merged / "emulate2" / "uneven" / "quant_info.json").read_bytes()


def test_fast_finetune_data_parallel(merged):
    """Each rank tunes on its own cached batches, gradients averaged: identical parameters on
    every rank, equal to emulate(2) (steps of 2 batches, mean gradient); emulate(1) is plain."""
    r0, r1, emu = (_report(merged, t) for t in ("rank0", "rank1", "emulate2"))
    assert r0["finetune"] == r1["finetune"] == emu["finetune"]
    for name in ("param.pth", "quant_info.json"):
        assert (merged / "ranks" / "finetune" / name).read_bytes() == \
            (merged / "emulate2" / "finetune" / name).read_bytes(), name
    assert (merged / "plain" / "finetune" / "param.pth").read_bytes() == \
        (merged / "emulate1" / "finetune" / "param.pth").read_bytes()


@pytest.fixture(scope="module")
def rounding(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_rounding")
    codes = spawn("gptq,adaround", out, counterparts=True, timeout=60.0)
    assert codes == [0, 0, 0], _log(out)
    return out


@pytest.mark.parametrize("method", ["gptq", "adaround"])
def test_rounding_methods_merge_across_ranks(rounding, method):
    """gptq sums every rank's layer statistics (in rank order) before the solve; adaround
    averages the gradient of its rounding variables at every step: every rank ends with the
    same weights and fix positions, rank 0 writes them once. Without the merge the ranks
    (each with its own half of the data) would disagree."""
    import torch
    case = f"finetune-{method}"
    r0, r1 = _report(rounding, "rank0"), _report(rounding, "rank1")
    assert r0[case] == r1[case], "ranks disagree"
    ranks = torch.load(rounding / "ranks" / case / "param.pth", weights_only=True)
    plain = torch.load(rounding / "plain" / case / "param.pth", weights_only=True)
    assert ranks.keys() == plain.keys()
    # emulate(N) holds every rank's data in one process: it is the plain run
    assert (rounding / "plain" / case / "param.pth").read_bytes() == \
        (rounding / "emulate1" / case / "param.pth").read_bytes()
    assert _report(rounding, "emulate2")[case] == _report(rounding, "plain")[case]
    weights = [k for k in ranks if k.endswith("weight") and ranks[k].dim() > 1]
    assert weights
    if method == "gptq":
        # the statistics of the union of the data, summed in another order: the same rounding
        # up to float64 summation order (a tie can flip one weight by one grid step)
        changed = sum(int((ranks[k] != plain[k]).sum()) for k in weights)
        total = sum(ranks[k].numel() for k in weights)
        assert changed <= 0.01 * total, (changed, total)


def test_only_rank0_writes(merged):
    mine = {p.name for p in (merged / "ranks" / "writer0").iterdir()}
    assert {"Tiny.py", "quant_info.json", "resolved_config.json"} <= mine
    assert list((merged / "ranks" / "writer1").iterdir()) == []


# --------------------------------------------------------------------------- failures
def _no_partial_files(folder: Path) -> None:
    if folder.exists():
        names = [p.name for p in folder.iterdir()]
        assert "quant_info.json" not in names
        assert not [n for n in names if n.endswith(".tmp")], names


@pytest.mark.parametrize("bad", [1, 0])
def test_a_crashed_rank_is_named_and_nothing_is_written(tmp_path, bad):
    codes = spawn("crash", tmp_path, env={"CRASH_RANK": str(bad)})
    good = 1 - bad
    assert codes == [17, 17], _log(tmp_path)
    own = (tmp_path / f"rank{bad}.error").read_text()
    assert f"rank {bad} was told to fail" in own
    other = (tmp_path / f"rank{good}.error").read_text().splitlines()[0]
    assert other.startswith("DistributedError"), other
    assert f"rank {bad}" in other, other
    _no_partial_files(tmp_path / "ranks" / "crash")


def test_a_silent_rank_times_out(tmp_path):
    t0 = time.monotonic()
    (code,), t_end = spawn("hang", tmp_path, timeout=3.0, kill_after_rank0=True)
    assert code == 17, _log(tmp_path)
    assert t_end - t0 < 60
    msg = (tmp_path / "rank0.error").read_text().splitlines()[0]
    assert "rank 1 failed or stopped answering" in msg, msg
    assert "timeout (3 s)" in msg, msg
    _no_partial_files(tmp_path / "ranks" / "hang")


def test_ranks_with_different_weights_refuse_to_start(tmp_path):
    codes = spawn("mismatch", tmp_path)
    assert codes == [17, 17], _log(tmp_path)
    for r in (0, 1):
        msg = (tmp_path / f"rank{r}.error").read_text().splitlines()[0]
        assert "weights after BN folding and CLE of rank(s) [1]" in msg, msg
