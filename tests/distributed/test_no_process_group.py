"""Without a process group nothing changes: torch.distributed is neither initialised nor called
(beyond the ``is_initialized`` look-up), and the distributed machinery is never imported."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nndct_lite import distributed
from nndct_lite.distributed import DistributedError, backend_for, emulate, init_from_env

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist

    touched = []
    allowed = {"is_available", "is_initialized"}
    for name in dir(dist):
        fn = getattr(dist, name)
        if callable(fn) and not isinstance(fn, type) and not name.startswith("_") \\
                and name not in allowed:
            def trip(*a, _name=name, **k):
                touched.append(_name)
                raise AssertionError(f"torch.distributed.{_name} was called")
            setattr(dist, name, trip)

    import nndct_lite
    from nndct_lite import torch_quantizer

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    q = torch_quantizer("calib", m, (x,), output_dir=sys.argv[1])
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    qt = torch_quantizer("test", m, (x,), output_dir=sys.argv[1])
    with torch.no_grad():
        qt.quant_model(x)
    qt.export_torch_script(output_dir=sys.argv[1])
    assert qt._session.dist is None and q._session.dist is None
    assert not dist.is_initialized()
    assert touched == [], touched
    heavy = [m for m in ("nndct_lite.distributed.group", "nndct_lite.distributed.session",
                         "nndct_lite.distributed.calibration", "nndct_lite.distributed.steps")
             if m in sys.modules]
    assert heavy == [], heavy
    print("OK")
""")


def test_single_process_never_touches_torch_distributed(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr


def test_world_is_none_without_a_group():
    assert distributed.world() is None
    assert distributed.is_writer(None)


def test_init_from_env_without_torchrun_is_a_no_op(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert init_from_env("cpu") == torch.device("cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env("cpu") == torch.device("cpu")
    assert distributed.world() is None


def test_backend_choice():
    assert backend_for("cpu") == "gloo"
    assert backend_for(torch.device("cuda:1")) == "nccl"


def test_emulate_guards():
    with emulate(2) as w:
        assert w.size == 2 and w.is_writer and distributed.world() is w
        with pytest.raises(DistributedError):
            with emulate(2):
                pass
    assert distributed.world() is None
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            with emulate(bad):
                pass


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="NCCL over 2 processes needs 2 CUDA devices")
def test_nccl_two_gpus(tmp_path):  # pragma: no cover - no GPU on the CI machine
    """Same code path on CUDA: 2 ranks, NCCL default group (objects over an extra gloo group)."""
    code = textwrap.dedent("""
        import datetime, os, sys, torch, torch.distributed as dist
        from nndct_lite import torch_quantizer, distributed
        rank = int(sys.argv[1])
        dist.init_process_group("nccl", init_method="file://" + sys.argv[2], rank=rank,
                                world_size=2, timeout=datetime.timedelta(seconds=30))
        torch.cuda.set_device(rank)
        w = distributed.world()
        assert w.backend == "nccl" and w.object_group is not None
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
        q = torch_quantizer("calib", m, (torch.randn(1, 3, 8, 8),), device=f"cuda:{rank}",
                            output_dir=sys.argv[3])
        g = torch.Generator().manual_seed(rank)
        with torch.no_grad():
            for _ in range(3):
                q.quant_model(torch.randn(2, 3, 8, 8, generator=g).cuda())
        q.export_quant_config()
        dist.destroy_process_group()
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(tmp_path / "store"),
                               str(tmp_path / "out")], cwd=ROOT, env=env) for r in (0, 1)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert (tmp_path / "out" / "quant_info.json").is_file()
