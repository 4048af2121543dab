"""Atomic writes: a temp file in the same folder, fsync, then ``os.replace``."""
from __future__ import annotations

import io
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "safe_torch_load",
           "torch_bytes", "ensure_dir", "remove_stale_temps"]


def _output_error(exc: OSError, path: Path, what: str):
    from ..errors import OutputError
    reason = exc.strerror or str(exc)
    err = OutputError(f"cannot {what}: {reason}", where=str(path),
                      hint="choose an output_dir that is a writable folder (or can be "
                           "created) on a disk with free space")
    err.errno = exc.errno    # the OSError's code (errno.ENOSPC, errno.EACCES, ...)
    return err


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents); an ``OutputError`` says why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise _output_error(exc, path, "create the output folder (a file of that name "
                                       "exists)") from None
    except OSError as exc:
        raise _output_error(exc, path, "create the output folder") from None
    return path


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:           # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temp files ``atomic_write_bytes`` left in ``folder`` when its process was
    killed mid-write (``.<name>.<pid>.<hex>.tmp`` of a process that no longer runs); returns
    their names. A live process's temp files (another rank writing) are left alone."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP.match(str(e.name))
        if m is None or not e.is_file(follow_symlinks=False) or _alive(int(m.group("pid"))):
            continue
        try:
            os.unlink(e.path)
            removed.append(str(e.name))
        except OSError:
            pass
    return sorted(removed)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a new temp file beside it, fsync, ``os.replace``.

    The temp file is created with mode 0666 so the OS applies the process umask, as a plain
    ``open()`` would (no umask is read or changed, so this is safe in threaded programs and
    works on Windows); a replaced file keeps its permissions. On any failure the temp file is
    removed and the old file is left as it was."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)
    except OSError as exc:
        raise _output_error(exc, path, "write the file") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mode = _existing_mode(path)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _output_error(exc, path, "write the file") from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, torch_bytes(obj))


def safe_torch_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(weights_only=True)``; a corrupted file raises QuantInfoError naming it."""
    from ..errors import QuantInfoError
    path = Path(path)
    if not path.is_file():
        raise QuantInfoError(f"{what} file does not exist", where=str(path),
                             hint="run calibration (quant_mode='calib') and "
                                  "export_quant_config() first", code="QUANTIZER_TORCH_NO_CALIB_RESULT")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise QuantInfoError(f"{what} file is corrupted or not a tensor file: {exc}",
                             where=str(path), hint="re-run calibration to rewrite it") from exc
