"""Scaling out: calibration, bias correction and fast finetune over ``torch.distributed``.

Launch the usual quantization script with ``torchrun --nproc_per_node N``; each process
forwards its own share of the calibration data, and every rank ends with the same
``quantize_result/``, written once by rank 0. ``docs/scaling.md`` states exactly what the
result equals (the *step-synchronous* run, reproducible in one process with ``emulate``).

Hooks the core calls (each is a no-op path when ``world()`` is None):

* ``world()``: None without a default process group (one ``sys.modules`` look-up; nothing here
  imports or initialises ``torch.distributed``), the ``emulate`` world inside that context, or
  the process-group world.
* ``import_generated(world, graph, output_dir)``: rank 0 writes ``<Model>.py``, the others wait
  and import it.
* ``attach(session, world)``: checks that every rank built the same graph, weights (after BN
  folding and CLE) and quantizers, then synchronises calibration step by step. The returned
  object (``session.dist``) also serves ``export_quant_config``, fast finetune and the exports:
  ``finalize()``, ``write_once()``, ``steps()``, ``all_batches()``, ``average_gradients()``,
  ``sum_tensors()``.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import DistributedError

if TYPE_CHECKING:   # types only: importing .group imports torch.distributed
    import torch

    from ..graph.ir import Graph
    from .calibration import CalibrationSync, SyncedSession
    from .emulated import EmulatedWorld
    from .group import ProcessGroupWorld

__all__ = ["world", "emulate", "attach", "import_generated", "is_writer", "backend_for",
           "init_from_env", "DistributedError"]

_EMULATION: contextvars.ContextVar[EmulatedWorld | None] = contextvars.ContextVar(
    "nndct_lite_emulation", default=None)


def world() -> EmulatedWorld | ProcessGroupWorld | None:
    """The world this process calibrates in, or None (no process group: single process)."""
    emulated = _EMULATION.get()
    if emulated is not None:
        return emulated
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    from .group import process_group_world
    return process_group_world()


def is_writer(w: EmulatedWorld | ProcessGroupWorld | None = None) -> bool:
    """Whether this process writes ``quantize_result/`` (no world, or rank 0)."""
    return w is None or w.is_writer


@contextlib.contextmanager
def emulate(world_size: int) -> Iterator[EmulatedWorld | None]:
    """Run, in this one process, exactly what ``world_size`` ranks would compute.

    Inside the context, a ``torch_quantizer`` groups its calibration forwards into steps of
    ``world_size`` consecutive batches (batch ``i`` plays rank ``i % world_size``'s batch
    ``i // world_size``) and fast finetune groups its cached batches the same way. This is the
    single-process counterpart that a ``torchrun`` run is byte-identical to (docs/scaling.md);
    ``emulate(1)`` is the ordinary single-process run.
    """
    from .emulated import EmulatedWorld
    if _EMULATION.get() is not None:
        raise DistributedError("emulate() contexts do not nest")
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        raise DistributedError("emulate() runs without a process group; this process has one",
                               hint="call emulate() in a plain single-process run")
    token = _EMULATION.set(EmulatedWorld(world_size))
    try:
        yield _EMULATION.get()
    finally:
        _EMULATION.reset(token)


def import_generated(w: EmulatedWorld | ProcessGroupWorld, graph: Graph,
                     output_dir: Path) -> tuple[type, Path]:
    """``(class, path)`` of the generated ``<Model>.py``; only the writer writes it."""
    from .session import import_generated as _impl
    return _impl(w, graph, output_dir)


def attach(session: SyncedSession, w: EmulatedWorld | ProcessGroupWorld) -> CalibrationSync:
    """Synchronise ``session`` across ``w``'s ranks; returns the object stored in
    ``session.dist``."""
    from .session import attach as _impl
    return _impl(session, w)


def backend_for(device: torch.device | str) -> str:
    """The process-group backend for ``device``: ``"nccl"`` for CUDA, ``"gloo"`` otherwise."""
    import torch
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: torch.device | str = "cpu",
                  timeout: datetime.timedelta | None = None) -> torch.device:
    """For scripts launched with ``torchrun``: join the default process group, and return the
    device this process should use.

    Without torchrun's ``WORLD_SIZE``/``RANK`` variables, or with ``WORLD_SIZE=1``, nothing
    happens (``torch.distributed`` is not touched) and ``device`` comes back unchanged. With
    them, a CUDA ``device`` becomes ``cuda:<LOCAL_RANK>`` (one GPU per process, backend NCCL);
    anything else uses gloo. An already initialised group is kept. ``timeout`` (default 30
    minutes, or ``NNDCT_LITE_DIST_TIMEOUT_S`` seconds) bounds every collective: a rank that
    dies or stops answering makes the others fail with ``DistributedError`` after at most it.
    """
    import torch
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if "RANK" not in os.environ or size <= 1:
        return torch.device(device)
    import torch.distributed as dist
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    elif dev.type == "cuda":
        dev = torch.device("cpu")
    if not dist.is_initialized():
        if timeout is None:
            timeout = datetime.timedelta(
                seconds=float(os.environ.get("NNDCT_LITE_DIST_TIMEOUT_S", 1800)))
        dist.init_process_group(backend_for(dev), timeout=timeout)
    return dev
