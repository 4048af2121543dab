"""Quant modes as context managers: whatever happens inside, the model leaves as it came in.

``quant_mode(model, mode)`` switches every quantizer and quantized op for the duration and puts
back each one's own mode, observer and cached weights on exit, exception or not.
``model_transaction(model)`` also snapshots the parameters, buffers and per-layer bias
correction state, and restores them only when the block raises (``KeyboardInterrupt``
included): a failed or interrupted algorithm leaves the calibration as it was."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
import torch.nn as nn

from ..state.modes import QuantMode
from .build import set_mode
from .fake_quantizer import FakeQuantizer
from .modules import QuantOp

__all__ = ["quant_mode", "model_transaction"]

#: per-module attributes a mode switch or an algorithm may change
_QUANTIZER_FIELDS = ("mode", "observer", "params", "keep_params", "nonfinite_batches")
_OP_FIELDS = ("qmode", "bias_corrector", "bias_correction", "_wcache")
_MISSING = object()


def _snapshot_fields(model: nn.Module, params: bool) -> list[tuple[nn.Module, str, object]]:
    """(module, attribute, value) for every field a mode switch (``params=False``) or an
    algorithm (``params=True``: observers are deep-copied, they accumulate in place) changes."""
    saved: list[tuple[nn.Module, str, object]] = []
    for m in model.modules():
        names: tuple[str, ...]
        if isinstance(m, FakeQuantizer):
            names = _QUANTIZER_FIELDS if params else ("mode", "observer")
        elif isinstance(m, QuantOp):
            names = _OP_FIELDS if params else ("qmode", "_wcache")
        else:
            continue
        for name in names:
            value = m.__dict__.get(name, _MISSING)
            if params and name == "observer" and value is not None and value is not _MISSING:
                scratch = getattr(value, "scratch", None)   # the model's shared work buffer
                value = copy.deepcopy(value, {id(scratch): scratch})
            saved.append((m, name, value))
    return saved


def _restore_fields(saved: list[tuple[nn.Module, str, object]]) -> None:
    for m, name, value in saved:
        if value is _MISSING:
            m.__dict__.pop(name, None)
        else:
            m.__dict__[name] = value


@contextlib.contextmanager
def quant_mode(model: nn.Module, mode: QuantMode) -> Iterator[nn.Module]:
    """``model`` in ``mode`` inside the block; every module's previous mode (and observer,
    and cached quantized weight) is restored on exit, also when the block raises."""
    saved = _snapshot_fields(model, params=False)
    try:
        set_mode(model, mode)
        yield model
    finally:
        _restore_fields(saved)


@contextlib.contextmanager
def model_transaction(model: nn.Module) -> Iterator[nn.Module]:
    """Restore ``model``'s parameters, buffers, modes, quantizer parameters, observers and bias
    correctors when the block raises (any ``BaseException``); keep the changes when it ends."""
    fields = _snapshot_fields(model, params=True)
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        yield model
    except BaseException:
        with torch.no_grad():
            current = model.state_dict(keep_vars=True)
            for k, v in state.items():
                if k in current:
                    current[k].copy_(v)
        for n, p in model.named_parameters():
            if n in grads:
                p.requires_grad_(grads[n])
        _restore_fields(fields)      # bias correctors: the same objects, re-attached
        raise
