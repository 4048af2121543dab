"""Atomic writes: a temp file in the same folder, fsync, then ``os.replace``."""
from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "safe_torch_load",
           "torch_bytes"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else what a plain open() would give (0666 & ~umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_UMASK


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, torch_bytes(obj))


def safe_torch_load(path: str | os.PathLike, what: str):
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
