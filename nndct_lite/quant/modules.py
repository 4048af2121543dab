"""Runtime modules of the generated ``<Model>.py`` (exposed as ``nndct_lite.nn``).

Every module computes the float op, applies a DPU approximation when the builder set one and
quantization is on, then its output quantizer when the node carries one. Conv/linear layers also
fake-quantize their weight and bias and run bias correction during calibration.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..calib.bias_correction import BiasCorrector
from ..state.modes import QuantMode

if TYPE_CHECKING:
    from .fake_quantizer import FakeQuantizer

__all__ = ["NndctQuantModel", "QuantOp", "Input", "Const", "Module", "Method", "Opaque", "Conv1d",
           "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "wrap_module_class", "resolve_function"]


class NndctQuantModel(nn.Module):
    """Base class of generated models."""


class QuantOp:
    """Mixin: mode, optional DPU approximation (``replace``/``post``), optional ``out_q``."""

    qmode = QuantMode.FLOAT
    replace: Callable | None = None   # replaces the float op when quantization is on
    post: Callable | None = None      # applied to the op's result when quantization is on
    relu_fused = False                # a ReLU whose output quantizer clamps at 0 (test mode)
    # set by quant/build.py on the layers that carry them (submodules / instance attributes)
    node_name: str
    out_q: FakeQuantizer
    weight_q: FakeQuantizer
    bias_q: FakeQuantizer
    bias_corrector: BiasCorrector | None

    def _skip(self) -> bool:
        """Test mode: a fused ReLU hands its input straight to its quantizer."""
        return self.relu_fused and self.qmode is QuantMode.TEST

    def _out_q(self):
        return self._modules.get("out_q")

    def _finish(self, y):
        if self.qmode is not QuantMode.FLOAT and self.post is not None:
            y = self.post(y)
        q = self._modules.get("out_q")
        return q(y) if q is not None else y


_ALIASES = {"_operator": "operator", "torch._C._nn": "torch.nn.functional",
            "torch._C._VariableFunctions": "torch", "torch.functional": "torch"}


def resolve_function(path: str) -> Callable:
    """``'torch.nn.functional.pad'`` -> the function (only importable module paths)."""
    mod, _, name = path.rpartition(".")
    obj = importlib.import_module(_ALIASES.get(mod, mod))
    return getattr(obj, name)


class Input(QuantOp, nn.Module):
    def forward(self, input):
        return self._finish(input)


class Const(QuantOp, nn.Module):
    """A constant tensor (a ``get_attr`` of the traced model)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.zeros(0))

    def forward(self):
        return self._finish(self.value)


class Module(QuantOp, nn.Module):
    """A functional op called by name, e.g. ``Module('torch.nn.functional.pad')``."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op
        self.fn = resolve_function(op)

    def forward(self, *args, **kwargs):
        if self._skip():
            return self._finish(args[0])
        fn = self.replace if (self.replace is not None and self.qmode is not QuantMode.FLOAT) \
            else self.fn
        return self._finish(fn(*args, **kwargs))

    def extra_repr(self):
        return repr(self.op)


class Method(QuantOp, nn.Module):
    """A tensor method call, e.g. ``Method('view')(x, -1, 64)``."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, obj, *args, **kwargs):
        if self._skip():
            return self._finish(obj)
        return self._finish(getattr(obj, self.name)(*args, **kwargs))

    def extra_repr(self):
        return repr(self.name)


class Opaque(QuantOp, nn.Module):
    """A module class outside ``torch.nn`` (kept float); the builder sets ``inner``."""

    inner: nn.Module

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, *args, **kwargs):
        return self._finish(self.inner(*args, **kwargs))


class _ParamLayer(QuantOp):
    """Weight/bias fake quantization, cached per mode and parameter version."""

    bias_corrector: BiasCorrector | None = None
    bias_correction: torch.Tensor | None = None   # b_f - b_corrected, loaded in test mode

    def _qweight(self):
        wq = self._modules.get("weight_q")
        if wq is None or self.qmode is QuantMode.FLOAT:
            return self.weight
        if self.weight.requires_grad and torch.is_grad_enabled():
            return wq(self.weight)            # training (fast finetune): never cached
        key = (self.qmode, self.weight._version, id(self.weight), wq.params, wq.spec)
        cache = self.__dict__.get("_wcache")
        if cache is not None and cache[0] == key:
            return cache[1]
        with torch.no_grad():
            value = wq(self.weight)
        key = (self.qmode, self.weight._version, id(self.weight), wq.params, wq.spec)
        self.__dict__["_wcache"] = (key, value)
        return value

    def _qbias(self):
        bq = self._modules.get("bias_q")
        b = self.bias
        if b is None or bq is None or self.qmode is QuantMode.FLOAT:
            return b
        if self.qmode is QuantMode.CALIB and self.bias_corrector is not None:
            return self.bias_corrector.current_bias(b, bq)
        if self.bias_correction is not None:
            b = b - self.bias_correction.to(b)
        return bq(b)

    def _compute(self, x, w, b):
        raise NotImplementedError

    def _channel_dims(self, y: torch.Tensor) -> list[int]:
        return [d for d in range(y.dim()) if d != 1]

    def forward(self, x):
        if self.qmode is QuantMode.FLOAT:
            return self._compute(x, self.weight, self.bias)
        y = self._finish(self._compute(x, self._qweight(), self._qbias()))
        bc = self.bias_corrector
        if self.qmode is QuantMode.CALIB and bc is not None and not bc.stopped:
            with torch.no_grad():
                y_f = self._compute(x, bc.float_weight(self.weight), bc.float_bias)
                bc.step(y.detach(), y_f, self._channel_dims(y), reuse_out_f=True)
        return y


class Conv1d(_ParamLayer, nn.Conv1d):
    def _compute(self, x, w, b):
        return self._conv_forward(x, w, b)


class Conv2d(_ParamLayer, nn.Conv2d):
    def _compute(self, x, w, b):
        return self._conv_forward(x, w, b)


class Conv3d(_ParamLayer, nn.Conv3d):
    def _compute(self, x, w, b):
        return self._conv_forward(x, w, b)


# forward(x) takes no output_size: the generated model never passes one
class ConvTranspose2d(_ParamLayer, nn.ConvTranspose2d):  # type: ignore[misc]
    def _compute(self, x, w, b):
        return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


class Linear(_ParamLayer, nn.Linear):
    def _compute(self, x, w, b):
        return F.linear(x, w, b)

    def _channel_dims(self, y):
        return list(range(y.dim() - 1))


_WRAPPED: dict[type, type] = {}


def wrap_module_class(cls: type) -> type:
    """A QuantOp subclass of a parameter-free (or float-only) ``torch.nn`` module class."""
    if cls in _WRAPPED:
        return _WRAPPED[cls]

    def forward(self, *args, **kwargs):
        if self._skip():
            return self._finish(args[0])
        if self.replace is not None and self.qmode is not QuantMode.FLOAT:
            return self._finish(self.replace(*args, **kwargs))
        return self._finish(cls.forward(self, *args, **kwargs))

    wrapped = type(cls.__name__, (QuantOp, cls), {"forward": forward, "__module__": __name__})
    _WRAPPED[cls] = wrapped
    return wrapped
