"""``make_observer``: the calibration method of one quantization point, from its ``QuantSpec``.

| scale_type | method                     | observer                                          |
|------------|----------------------------|---------------------------------------------------|
| poweroftwo | diffs                      | ``Pof2Observer``, scope 5 (1 for the model input) |
| poweroftwo | maxmin                     | ``Pof2Observer``, scope 1                         |
| poweroftwo | percentile / mse / entropy | ``Pof2Observer``, range rule on the method's clip |
| float      | maxmin                     | ``MinMaxObserver`` (per-tensor or per-channel)    |
| float      | percentile / mse / entropy | ``HistogramObserver`` (per-tensor, symmetric)     |

Every target honours the configured ``method`` (the original's DPU path reads it and then runs
the diffs search whatever it says; with the default ``diffs`` the results are the same).
``target`` sets the tie rule: ``TargetDevice.DPU`` and ``None`` break modal ties toward the
smaller fp, ``CPU``/``GPU`` vote on scales (ties toward the larger fp, T27). ``vote_on_scale``
overrides the tie rule.
"""
from __future__ import annotations

from ..config.spec import CalibMethod, QuantSpec, TargetDevice
from ..errors import ConfigError
from .base import BatchMode, Observer, Role
from .histogram import HistogramObserver
from .minmax import MinMaxObserver
from .pof2 import DIFFS_SCOPE, Pof2Observer

__all__ = ["make_observer"]


def make_observer(spec: QuantSpec, *, role: Role, axis: int | None = None,
                  target: TargetDevice | None = None, vote_on_scale: bool | None = None,
                  batch_mode: BatchMode = BatchMode.PER_BATCH,
                  name: str | None = None) -> Observer:
    """A fresh observer for one tensor.

    ``axis`` is the tensor's channel axis, used when ``spec.per_channel`` (required then, ignored
    otherwise). ``batch_mode`` applies to the float-scale methods (``ACCUMULATE``: running
    min/max, or one accumulated histogram). ``name`` labels warnings. Raises ``ConfigError`` for
    combinations no quantizer can calibrate.
    """
    if spec.per_channel and axis is None:
        raise ConfigError("per_channel needs the tensor's channel axis", where=name,
                          hint="pass axis= (0 for conv/linear weights, 1 for transposed conv)")
    ax = axis if spec.per_channel else None
    if spec.is_pof2:
        if not spec.symmetry:
            raise ConfigError("power-of-two scale needs symmetry true", where=name)
        method = spec.method
        if batch_mode is not BatchMode.PER_BATCH:
            raise ConfigError("power-of-two calibration has no accumulated mode", where=name)
        scope = 1 if role is Role.MODEL_INPUT or method is CalibMethod.MAXMIN else DIFFS_SCOPE
        if vote_on_scale is None:
            vote_on_scale = target in (TargetDevice.CPU, TargetDevice.GPU)
        return Pof2Observer(spec, role=role, axis=ax, scope=scope, vote_on_scale=vote_on_scale,
                            name=name)
    if target is TargetDevice.DPU:
        raise ConfigError("the DPU target needs scale_type 'poweroftwo'", where=name)
    if spec.method is CalibMethod.DIFFS:
        raise ConfigError("method 'diffs' needs scale_type 'poweroftwo'", where=name,
                          hint="use maxmin, percentile, mse or entropy with float scale")
    if spec.method is CalibMethod.MAXMIN:
        return MinMaxObserver(spec, role=role, axis=ax, batch_mode=batch_mode, name=name)
    if ax is not None:
        raise ConfigError(f"method {spec.method.value!r} is per-tensor only", where=name,
                          hint="per-channel float scale works with maxmin")
    return HistogramObserver(spec, role=role, batch_mode=batch_mode, name=name)
