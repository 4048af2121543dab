"""Files in ``quantize_result/`` are written atomically (temp file in the same folder + rename): an
interrupted run leaves either the previous complete file or the new complete one, never a partial
file under a result name, and a leftover temp file never looks like a result file.

The central test kills calibrations with SIGKILL in the middle of a (deliberately slowed) write,
in child processes, and checks what is left on disk. Set ``NNDCT_KILL_SEED`` to replay a run.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import NndctError, QuantInfoError, torch_quantizer

ROOT = Path(__file__).resolve().parents[2]
RESULT_SUFFIXES = (".json", ".pth", ".py", ".xmodel", ".onnx", ".pt")
TEMP = re.compile(r"^\.[^/]+\.tmp$")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        y = F.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _results(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def _all_results(d: Path) -> list[str]:
    """Result files in ``d`` and its subfolders (deploy_check data), as paths relative to d."""
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts)


def _temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def _calibrate(d: Path, x: torch.Tensor, model: nn.Module | None = None):
    torch.manual_seed(0)
    model = model or Net().eval()
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(d))
    q.quant_model(x)
    q.export_quant_config()
    return model, q


# ---------------------------------------------------------------------------- in process
def test_every_result_file_arrives_by_rename(tmp_path, monkeypatch):
    """Each file of a full calib -> test -> deploy flow is the target of an os.replace, and no
    temp file is left behind."""
    renamed = []
    real = os.replace

    def spy(src, dst, *a, **kw):
        renamed.append(Path(dst).resolve())
        assert TEMP.match(Path(src).name), f"renamed from a non-temp name {src}"
        assert Path(src).parent.resolve() == Path(dst).parent.resolve(), "temp in another folder"
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, "replace", spy)
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8)
    d = tmp_path / "quantize_result"
    model, _ = _calibrate(d, x)
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    qt.quant_model(x)
    qt.export_xmodel(output_dir=str(d), deploy_check=True)
    qt.export_torch_script(output_dir=str(d))
    qt.export_onnx_model(output_dir=str(d))
    files = _all_results(d)
    assert {"quant_info.json", "bias_corr.pth", "Net.py", "resolved_config.json",
            "Net_int.xmodel", "Net_int.pt", "Net_int.onnx"} <= set(files)
    assert any("/" in f for f in files), f"no deploy_check data written: {files}"
    unrenamed = [f for f in files if (d / f).resolve() not in set(renamed)]
    assert not unrenamed, f"written without a rename: {unrenamed}"
    assert not [p for p in d.rglob(".*") if p.is_file()], "temp files left behind"


def test_failed_write_keeps_the_previous_files(tmp_path, monkeypatch):
    """A write that fails (disk full at fsync) leaves the previous quant_info.json and
    bias_corr.pth byte for byte, and removes its temp file."""
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8)
    d = tmp_path / "quantize_result"
    model, _ = _calibrate(d, x)
    before = _files(d)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(d))
    q.quant_model(x * 3)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    from nndct_lite import OutputError
    with pytest.raises(OutputError, match="No space left on device") as err:
        q.export_quant_config()
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    after = _files(d)
    assert after["quant_info.json"] == before["quant_info.json"]
    assert after["bias_corr.pth"] == before["bias_corr.pth"]
    assert _temps(d) == []
    torch_quantizer("test", model, (x[:1],), output_dir=str(d)).quant_model(x)


def test_interrupted_export_never_pairs_files_of_two_calibrations(tmp_path, monkeypatch):
    import nndct_lite.session.core as pipeline
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8)
    d = tmp_path / "quantize_result"
    model, _ = _calibrate(d, x)
    first = _files(d)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(d))
    torch.manual_seed(2)
    q.quant_model(torch.randn(4, 3, 8, 8) * 3 + 1)

    class Killed(BaseException):
        pass

    def killed(*a, **kw):
        raise Killed()
    monkeypatch.setattr(pipeline, "write_quant_info", killed)
    with pytest.raises(Killed):
        q.export_quant_config()
    monkeypatch.undo()
    now = _files(d)
    assert now["quant_info.json"] == first["quant_info.json"]
    assert now["bias_corr.pth"] != first["bias_corr.pth"]     # the half-done export
    with pytest.raises(QuantInfoError) as err:
        torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    assert "bias_corr.pth" in str(err.value) and err.value.hint


def test_result_files_get_the_usual_permissions(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    d = tmp_path / "quantize_result"
    model, _ = _calibrate(d, x)
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    qt.quant_model(x)
    qt.export_xmodel(output_dir=str(d))
    old = os.umask(0)
    os.umask(old)
    want = 0o666 & ~old
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in d.iterdir() if p.is_file()}
    assert all(v == oct(want) for v in modes.values()), modes


# ---------------------------------------------------------------------------- SIGKILL midway
# One child imports torch once and forks one calibrating grandchild per scenario (importing
# torch three times would dominate the suite's time). Every line a grandchild prints starts with
# its scenario number.
CHILD = textwrap.dedent('''
    import hashlib, os, sys, time, traceback
    import torch, torch.nn as nn, torch.nn.functional as F
    torch.set_num_threads(1)
    import nndct_lite.state.files as files
    from nndct_lite import torch_quantizer

    CHUNK, PAUSE = 64, 0.02
    real_fdopen, real_write = os.fdopen, files.atomic_write_bytes

    class Slow:
        """Writes in 64-byte chunks, flushed, 20 ms apart: a kill lands mid-write."""
        def __init__(self, f):
            self.f = f
        def write(self, data):
            for i in range(0, len(data), CHUNK):
                self.f.write(data[i:i + CHUNK])
                self.f.flush()
                time.sleep(PAUSE)
            return len(data)
        def __enter__(self):
            self.f.__enter__()
            return self
        def __exit__(self, *exc):
            return self.f.__exit__(*exc)
        def __getattr__(self, name):
            return getattr(self.f, name)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)
        def forward(self, x):
            x = F.relu(self.bn(self.conv1(x)))
            y = F.relu(self.conv2(x)) + x
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    def say(i, *words):
        """One os.write per line: atomic on a pipe shared by the forked processes."""
        os.write(1, (" ".join(map(str, (i, *words))) + "\\n").encode())

    def scenario(i, out, slow, rounds=2):
        def tell(*words):
            say(i, *words)

        def announced(path, data):
            name, sha = os.path.basename(path), hashlib.sha256(data).hexdigest()
            tell("WRITING", name, sha, len(data))
            if name == slow:
                os.fdopen = lambda *a, **kw: Slow(real_fdopen(*a, **kw))
            try:
                return real_write(path, data)
            finally:
                os.fdopen = real_fdopen
                tell("DONE", name, sha)
        for mod in list(sys.modules.values()):      # also names bound by "from ... import"
            if getattr(mod, "__name__", "").startswith("nndct_lite") and \
                    getattr(mod, "atomic_write_bytes", None) is real_write:
                mod.atomic_write_bytes = announced
        torch.manual_seed(0)
        model = Net().eval()
        for r in range(rounds):
            torch.manual_seed(100 + r)
            x = torch.randn(8, 3, 8, 8) * (1 + 3 * r) + r     # other statistics every round
            q = torch_quantizer("calib", model, (x[:1],), output_dir=out)
            q.quant_model(x)
            q.export_quant_config()
            tell("ROUND", r)
        tell("FINISHED")

    pids = {}
    for i, (out, slow) in enumerate(zip(sys.argv[1::2], sys.argv[2::2])):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                scenario(i, out, slow)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            os._exit(code)
        pids[pid] = i
        say(i, "PID", pid)
    for _ in range(len(pids)):
        pid, status = os.wait()
        say(pids[pid], "EXIT", os.waitstatus_to_exitcode(status))
''')


class Scenario:
    """Kill the grandchild during the ``nth`` write of ``target``."""

    def __init__(self, out: Path, target: str, nth: int, rng: random.Random):
        self.out, self.target, self.nth, self.rng = out, target, nth, rng
        self.lines: list[str] = []
        self.pid = None
        self.exit = None
        self.delay = None
        self.killed = False
        self.seen = 0

    def feed(self, words: list[str]) -> None:
        self.lines.append(" ".join(words))
        if words[0] == "PID":
            self.pid = int(words[1])
        elif words[0] == "EXIT":
            self.exit = int(words[1])
        elif words[:2] == ["WRITING", self.target] and not self.killed:
            self.seen += 1
            if self.seen == self.nth:
                duration = int(words[3]) / 64 * 0.02
                self.delay = self.rng.uniform(0.0, 0.5 * duration)
                time.sleep(self.delay)
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True

    def events(self, kind: str, name: str) -> list[list[str]]:
        return [line.split()[2:] for line in self.lines if line.split()[:2] == [kind, name]]


SCENARIOS = [  # (file killed mid-write, which write of it)
    ("quant_info.json", 1),       # the first calibration: must stay absent
    ("quant_info.json", 2),       # the second: the first one's complete file must stay
    ("bias_corr.pth", 2),
]


def _run_children(tmp_path: Path, scenarios: list[Scenario]) -> str:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [a for s in scenarios for a in (str(s.out), s.target)]
    with open(tmp_path / "child.stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, str(script), *argv], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env, cwd=str(tmp_path))

        def watch():
            for line in proc.stdout:
                words = line.split()
                if words and words[0].isdigit() and int(words[0]) < len(scenarios):
                    scenarios[int(words[0])].feed(words[1:])
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            for s in scenarios:
                if s.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(s.pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        t.join(timeout=10)
        err.seek(0)
        return err.read()[-3000:]


def test_sigkill_during_export_leaves_previous_or_new_file(tmp_path):
    seed = int(os.environ.get("NNDCT_KILL_SEED", time.time_ns() % 2 ** 31))
    rng = random.Random(seed)
    scenarios = []
    for i, (target, nth) in enumerate(SCENARIOS):
        out = tmp_path / f"run{i}" / "quantize_result"
        out.parent.mkdir()
        scenarios.append(Scenario(out, target, nth, random.Random(rng.random())))
    stderr = _run_children(tmp_path, scenarios)
    torch.manual_seed(0)
    model = Net().eval()
    x1 = torch.randn(1, 3, 8, 8)
    for c in scenarios:
        ctx = f"[NNDCT_KILL_SEED={seed}] kill during write {c.nth} of {c.target} after " \
              f"{c.delay} s"
        assert c.killed, f"{ctx}: the write was never announced; child output {c.lines}\n{stderr}"
        assert c.exit == -signal.SIGKILL, f"{ctx}: exit {c.exit}\n{stderr}"
        writing, done = c.events("WRITING", c.target), c.events("DONE", c.target)
        assert len(writing) == c.nth and len(done) == c.nth - 1, \
            f"{ctx}: the kill came after the write completed; events: {c.lines}"
        d = c.out
        # 1. every result file is a complete version the child wrote, never a partial one
        for name in _results(d):
            sha = hashlib.sha256((d / name).read_bytes()).hexdigest()
            assert sha in [e[0] for e in c.events("DONE", name)], \
                f"{ctx}: {name} is not a complete written version"
            if name.endswith(".json"):
                json.loads((d / name).read_text())
        # 2. the killed file is exactly the previous version (absent after a first write)
        target = d / c.target
        if c.nth == 1:
            assert not target.exists(), f"{ctx}: {c.target} exists after a killed first write"
        else:
            assert hashlib.sha256(target.read_bytes()).hexdigest() == done[-1][0], ctx
        # 3. the leftover temp file is hidden, partial, and named like no result file
        temps = _temps(d)
        assert temps, f"{ctx}: no temp file: was the write really in progress?"
        for t in temps:
            assert TEMP.match(t) and t.startswith(f".{c.target}.") and \
                not t.endswith(RESULT_SUFFIXES), t
            assert (d / t).stat().st_size < int(writing[-1][1]), f"{ctx}: {t} is complete"
        # 4. a later test-mode run works, or raises a clean QuantInfoError (no result yet, or
        #    files of two calibrations side by side), never anything else
        try:
            torch_quantizer("test", model, (x1,), output_dir=str(d)).quant_model(x1)
        except NndctError as exc:
            assert isinstance(exc, QuantInfoError), f"{ctx}: {exc}"
            if c.nth == 1:
                assert exc.code == "QUANTIZER_TORCH_NO_CALIB_RESULT", f"{ctx}: {exc}"
        else:
            assert c.nth > 1, f"{ctx}: test mode ran without any quant_info.json"
        # 5. a new calibration in the same folder completes and leaves no temp of its own
        before = set(_temps(d))
        _calibrate(d, torch.randn(4, 3, 8, 8))
        assert set(_temps(d)) == before


def test_atomic_write_keeps_permissions_and_honours_umask(tmp_path):
    """New files get 0666 & ~umask like open(); replaced files keep their mode; no temp left."""
    import os
    import stat
    from nndct_lite.state.files import atomic_write_bytes
    old = os.umask(0o027)
    try:
        p = atomic_write_bytes(tmp_path / "a.bin", b"1")
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
        os.chmod(p, 0o600)
        atomic_write_bytes(p, b"22")
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600 and p.read_bytes() == b"22"
    finally:
        os.umask(old)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]


def test_state_files_never_change_the_umask():
    import ast
    import inspect
    import nndct_lite.state.files as files
    calls = {n.func.attr for n in ast.walk(ast.parse(inspect.getsource(files)))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "umask" not in calls and "fchmod" not in calls


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(tmp_path):
    """Temp files of a process that no longer runs go; a live process's stay (another rank)."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    d = tmp_path / "quantize_result"
    d.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = d / f".quant_info.json.{dead_pid}.0123abcd.tmp"
    live = d / f".quant_info.json.{os.getppid()}.89abcdef.tmp"
    other = d / ".keep.tmp"                                   # not one of ours: untouched
    for p in (stale, live, other):
        p.write_text("half")
    _calibrate(d, x)
    assert not stale.exists() and live.exists() and other.exists()


def test_param_pth_of_a_stopped_finetune_is_not_loaded(tmp_path):
    """quant_info.json records the sha256 of the param.pth it was exported with: a later fast
    finetune that wrote param.pth and stopped before export_quant_config() is detected."""
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8)
    d = tmp_path / "quantize_result"
    model = Net().eval()
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(d))
    q.fast_finetune(lambda m, xs: m(xs), (q.quant_model, x))
    q.quant_model(x)
    q.export_quant_config()
    info = json.loads((d / "quant_info.json").read_text())
    assert info["param_sha256"] == hashlib.sha256((d / "param.pth").read_bytes()).hexdigest()
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    qt.load_ft_param()                                        # the pair is consistent
    sd = torch.load(d / "param.pth", weights_only=True)       # a second run's param.pth
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key] + 1.0
    torch.save(sd, d / "param.pth")
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    with pytest.raises(QuantInfoError, match="not the one quant_info.json was exported with"):
        qt.load_ft_param()
