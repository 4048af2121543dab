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
  ``finalize()``, ``write_once()``, ``steps()``, ``all_batches()``, ``average_gradients()``.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys

from .errors import DistributedError

__all__ = ["world", "emulate", "attach", "import_generated", "is_writer", "DistributedError"]

_EMULATION: contextvars.ContextVar = contextvars.ContextVar("nndct_lite_emulation", default=None)


def world():
    """The world this process calibrates in, or None (no process group: single process)."""
    emulated = _EMULATION.get()
    if emulated is not None:
        return emulated
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    from .group import process_group_world
    return process_group_world()


def is_writer(w=None) -> bool:
    """Whether this process writes ``quantize_result/`` (no world, or rank 0)."""
    return w is None or w.is_writer


@contextlib.contextmanager
def emulate(world_size: int):
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


def import_generated(w, graph, output_dir):
    """``(class, path)`` of the generated ``<Model>.py``; only the writer writes it."""
    from .session import import_generated as _impl
    return _impl(w, graph, output_dir)


def attach(session, w):
    """Synchronise ``session`` across ``w``'s ranks; returns the object stored in
    ``session.dist``."""
    from .session import attach as _impl
    return _impl(session, w)
