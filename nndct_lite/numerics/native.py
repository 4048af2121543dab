"""Optional fused CPU kernels (``fused.c``): one pass over memory where the torch-op path makes
four to thirteen.

The C source ships inside the package (wheel and sdist) and is compiled on first use with the
system C compiler (``cc``, or ``$CC``) into a per-user cache (``$NNDCT_LITE_CACHE_DIR``, else
``$XDG_CACHE_HOME/nndct_lite``, else ``~/.cache/nndct_lite``), keyed by the source, the flags, the
compiler and the CPU, and written atomically with a sha256 beside it; later processes only load
it (ctypes, no Python C-API, no torch headers: it builds in well under a second). A cached
library is loaded only when it and its folder belong to this user, are not writable by others,
and its sha256 is the one recorded when it was built; otherwise it is rebuilt. Flags a compiler
rejects (``-march=native``, ``-fopenmp`` on Apple clang) are dropped variant by variant. Without
a compiler every caller falls back to the torch ops, logged once at WARNING; with
``NNDCT_LITE_NATIVE=0`` they do so on purpose, logged at INFO.

What changes with the kernels: nothing elementwise. Fake quantization gives the same bits as the
torch path (the same IEEE operations in the same order). The sums of the diffs search and of the
bias-correction statistics are accumulated per block in float32 and across blocks in double, so
they differ from torch's float32 reductions in the last bits; the choices made from them (fix
positions, the bias-correction schedule) differ only where two candidates are within about 1e-7
of each other. Every kernel works on dense float32 CPU tensors; anything else takes the torch path.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from .._log import get_logger

__all__ = ["available", "kernels", "NATIVE_ENV", "CACHE_ENV", "fake_quantize_", "diffs_errors",
           "bc_stats"]

log = get_logger("numerics")

NATIVE_ENV = "NNDCT_LITE_NATIVE"
CACHE_ENV = "NNDCT_LITE_CACHE_DIR"
_SOURCE = Path(__file__).with_name("fused.c")
_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
          "-std=c99", "-shared", "-fPIC"]
_TUNE = ["-march=native"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # full-width AVX-512 where the CPU has it (gcc and clang default to 256-bit vectors):
    # 20 % faster kernels on the project's machine; a no-op on CPUs without AVX-512
    _TUNE.append("-mprefer-vector-width=512")
#: threaded build first (OpenMP, linked to the libgomp torch loaded), then a serial one for
#: compilers without OpenMP (the pragmas then only vectorise), then plain C; each tuned for this
#: CPU first, then without the tuning flags a compiler may reject (Apple clang)
_VARIANTS = tuple([*omp, *tune] for omp in (["-fopenmp"], ["-fopenmp-simd"], [])
                  for tune in (_TUNE, []))

_lock = threading.Lock()
_state: dict = {}          # "lib": the loaded library or None once tried

_CPUINFO_KEYS = ("model name", "flags",                               # x86
                 "Features", "CPU implementer", "CPU architecture",      # arm64
                 "CPU variant", "CPU part", "isa", "uarch", "cpu model")  # risc-v, others


def _cpu_key() -> str:
    """What identifies this CPU's instruction set, never empty (the cache key of -march=native
    builds): /proc/cpuinfo's model and feature lines (x86, arm64 ...), plus the machine and
    processor names everywhere."""
    lines: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            lines = [ln for ln in fh if ln.startswith(_CPUINFO_KEYS)]
    except OSError:
        pass
    return "".join(sorted(set(lines))) + f"|{platform.machine()}|{platform.processor()}"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


def _cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nndct_lite"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trusted(target: Path) -> bool:
    """A cached library may be loaded: it and its folder are ours and not writable by others
    (POSIX), and its sha256 is the one written beside it when this code built it."""
    digest = target.with_name(target.name + ".sha256")
    try:
        if hasattr(os, "getuid"):
            for p in (target.parent, target, digest):
                st = os.stat(p)
                if st.st_uid != os.getuid() or st.st_mode & 0o022:
                    return False
        return digest.read_text(encoding="ascii").strip() == _sha256(target)
    except OSError:
        return False


def _compile(cc: str, flags: list[str]) -> Path:
    """The cached library for ``flags``, compiling it (atomically) when it is not there yet or
    is not trusted (see ``_trusted``)."""
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([src, " ".join(flags).encode(), cc.encode(),
                                     _cpu_key().encode(), sys.platform.encode()])).hexdigest()[:16]
    target = _cache_dir() / "native" / key / "libnndct_fused.so"
    if target.is_file():
        if _trusted(target):
            return target
        log.warning("ignoring the cached fused kernels %s (not built by this user, writable by "
                    "others, or changed since they were built): rebuilding", target)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        proc = subprocess.run([cc, *flags, str(_SOURCE), "-o", tmp, "-lm"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} {' '.join(flags)} failed: "
                               f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        os.chmod(tmp, 0o755)
        digest = _sha256(Path(tmp))
        dtmp = f"{tmp}.sha256"
        with open(dtmp, "w", encoding="ascii") as fh:
            fh.write(digest + "\n")
        os.replace(dtmp, target.with_name(target.name + ".sha256"))
        os.replace(tmp, target)   # atomic: a concurrent process sees all or nothing
    finally:
        for leftover in (tmp, f"{tmp}.sha256"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    log.debug("built the fused kernels: %s", target)
    return target


def _openmp_runtimes() -> set[str]:
    """Paths of the OpenMP runtimes mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = (ln.rsplit(maxsplit=1)[-1] for ln in fh if ln.strip())
            return {p for p in paths if re.search(r"/lib(g|i)?omp[^/]*\.so", p)}
    except OSError:
        return set()


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, or $CC) on PATH")
    errors = []
    for variant in _VARIANTS:
        try:
            target = _compile(cc, [*_FLAGS, *variant])
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        before = _openmp_runtimes()
        lib = ctypes.CDLL(str(target))
        # threads only when the library shares torch's pool: a second OpenMP runtime would
        # start its own threads, which spin against torch's on the same cores
        extra = _openmp_runtimes() - before
        _state["threaded"] = variant == _VARIANTS[0] and not extra
        if extra:
            log.debug("the fused kernels loaded a second OpenMP runtime (%s): single-threaded",
                      ", ".join(sorted(extra)))
        _declare(lib)
        return lib
    raise RuntimeError("; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    f32, i64, f64p = ctypes.c_float, ctypes.c_int64, ctypes.POINTER(ctypes.c_double)
    vp, cint = ctypes.c_void_p, ctypes.c_int
    for name in ("nl_fq_half_up", "nl_fq_half_even"):
        getattr(lib, name).argtypes = [vp, i64, f32, f32, f32, f32, cint]
        getattr(lib, name).restype = None
    lib.nl_diffs_errors.argtypes = [vp, i64, ctypes.POINTER(f32), ctypes.POINTER(f32),
                                    cint, cint, f32, f32, f64p, cint]
    lib.nl_diffs_errors.restype = cint
    lib.nl_bc_stats.argtypes = [vp, vp, i64, i64, i64, f64p, f64p, cint]
    lib.nl_bc_stats.restype = cint


def _threads() -> int:
    """Threads a kernel may use: torch's intra-op count when the pool is shared, else 1."""
    return max(torch.get_num_threads(), 1) if _state.get("threaded") else 1


def kernels() -> ctypes.CDLL | None:
    """The loaded kernel library, building it on the first call; None when disabled or when it
    cannot be built (the reason is logged once)."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib = None
        if os.environ.get(NATIVE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            log.info("fused CPU kernels disabled (%s=0): using torch ops", NATIVE_ENV)
        else:
            try:
                lib = _build()
            except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
                log.warning("fused CPU kernels unavailable (%s: %s): using torch ops, which is "
                            "slower but gives the same fake-quant results", type(exc).__name__,
                            exc)
        _state["lib"] = lib
        return lib


def available() -> bool:
    return kernels() is not None


def _reset_for_tests() -> None:
    _state.clear()


def _dense_f32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and \
        (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last))


_MODES = {"half_even": 0, "half_up": 1, "floor": 2, "ceil": 3}


def fake_quantize_(x: torch.Tensor, fp: int, qmin: int, qmax: int, half_up: bool) -> bool:
    """In-place power-of-two fake quantization of a dense float32 CPU tensor (half_up or
    half_even); False (nothing done) when the kernels or the tensor do not fit."""
    lib = kernels()
    if lib is None or not _dense_f32(x) or x.numel() == 0:
        return False
    s = 2.0 ** -fp
    fn, m = (lib.nl_fq_half_up, 2.0 ** (fp + 1)) if half_up else (lib.nl_fq_half_even, 2.0 ** fp)
    fn(x.data_ptr(), x.numel(), m, s, qmin, qmax, _threads())
    return True


def diffs_errors(x: torch.Tensor, fps: list[int], qmin: int, qmax: int,
                 mode: str) -> list[float] | None:
    """``[sum((x - clamp(round(x * 2^f)) * 2^-f)^2) for f in fps]`` in one pass (``mode``:
    half_even, floor or ceil), or None when the kernels or the tensor do not fit."""
    lib = kernels()
    if lib is None or not _dense_f32(x) or not fps or len(fps) > 16:
        return None
    k = len(fps)
    m = (ctypes.c_float * k)(*[2.0 ** f for f in fps])
    s = (ctypes.c_float * k)(*[2.0 ** -f for f in fps])
    out = (ctypes.c_double * k)()
    if lib.nl_diffs_errors(x.data_ptr(), x.numel(), m, s, k, _MODES[mode], qmin, qmax, out,
                           _threads()) != 0:
        return None
    return list(out)


def bc_stats(out_q: torch.Tensor, out_f: torch.Tensor,
             dims: list[int]) -> tuple[float, float, torch.Tensor] | None:
    """``(mean(out_f^2), mean((out_q - out_f)^2), per-channel mean of out_q - out_f)`` in one
    pass, the channel being the one dimension not in ``dims``; None when the kernels, the
    tensors or ``dims`` do not fit (then the caller takes the torch path)."""
    lib = kernels()
    if lib is None or out_q.shape != out_f.shape or out_q.dim() < 2 or \
            not (_dense_f32(out_q) and _dense_f32(out_f)) or out_q.stride() != out_f.stride():
        return None
    keep = [d for d in range(out_q.dim()) if d not in dims]
    if len(keep) != 1 or sorted(dims) != [d for d in range(out_q.dim()) if d != keep[0]]:
        return None
    ch = keep[0]
    shape = out_q.shape
    if out_q.is_contiguous():
        outer = 1
        for d in range(ch):
            outer *= shape[d]
        inner = out_q.numel() // max(outer * shape[ch], 1)
    elif out_q.dim() == 4 and ch == 1:      # channels-last: (N, H, W, C) in memory
        outer, inner = out_q.numel() // max(shape[1], 1), 1
    else:
        return None
    c = shape[ch]
    if out_q.numel() == 0 or c == 0:
        return None
    n = out_q.numel()
    sums = (ctypes.c_double * 2)()
    csum = torch.empty(c, dtype=torch.float64)
    if lib.nl_bc_stats(out_q.data_ptr(), out_f.data_ptr(), outer, c, inner, sums,
                       ctypes.cast(csum.data_ptr(), ctypes.POINTER(ctypes.c_double)),
                       _threads()) != 0:
        return None
    return sums[0] / n, sums[1] / n, (csum / (n // c)).to(torch.float32)
