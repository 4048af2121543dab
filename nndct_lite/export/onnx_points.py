"""How one quantization point is written in ONNX: a QuantizeLinear/DequantizeLinear pair (and
an optional clip) with the scale, zero point and integer type of a calibrated quantizer.

Encoding of one point (vai_q_pytorch.md 3.3, docs/exports.md):

- scale: float32, ``2^-fix_pos`` for power-of-two tensors, ``1 / (1 / scale)`` rounded to float32
  (the dequantization factor the test-mode model multiplies by) for float-scale tensors; a 1-D
  scale and zero point with ``axis`` for per-channel tensors;
- zero point: the tensor's zero point in the smallest integer type holding its range: int8
  for signed ranges within [-128, 127], uint8 for unsigned ranges within [0, 255], and, for
  9..16-bit tensors, int16 / uint16, which need opset 21 (chosen automatically when no opset was
  asked for; an explicit opset below 21 is an ExportError);
- a 32-bit bias (float scale, CPU/GPU) is written as its test-mode values, a float constant:
  ONNX has no int32 QuantizeLinear, and its int32-bias form (DequantizeLinear of int32 codes)
  means scale = input scale x weight scale to onnxruntime's fused kernels, which a calibrated
  bias scale is not (onnxruntime then computes wrong outputs);
- at opset 21 and later, signed 8-bit points are written as uint8 with the zero point + 128 (the
  same values; onnxruntime's default optimizations reject int8 Q/DQ there);
- a range narrower than its type's (2..7 bits, narrow range, e.g. [-8, 7] or [-127, 127]) adds a
  ``Clip`` (per-channel: ``Min``/``Max``) after the DequantizeLinear, so the values are exactly
  the test-mode ones;
- weights and biases: the QuantizeLinear reads the test-mode quantized values (a constant on the
  quantization grid) instead of the float parameter, so the DequantizeLinear output equals the
  test-mode weight bit for bit whatever the rounding mode (ONNX rounds half to even, the DPU's
  weights round half away from zero).

Activations are quantized by onnxruntime with ONNX's half-to-even rounding; under the DPU rule
(half toward +inf) a tie can land one step apart from the test-mode value, and the difference
propagates through the following layers. Besides float summation order (float-scale targets)
that is the only difference: docs/exports.md gives the measured agreement.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .._log import get_logger
from ..calib import Role
from ..config.spec import QuantSpec
from ..errors import ExportError
from ..numerics.fake_quant import _inv_scale
from ..numerics.params import QuantParams
from ..numerics.rounding import RoundMode
from ..quant.fake_quantizer import FakeQuantizer, apply_params

__all__ = ["MIN_OPSET", "INT16_OPSET", "Point", "QDQModule", "plan_point", "uint16_zero_points"]

log = get_logger("export")

#: per-channel QuantizeLinear (``axis``) needs opset 13
MIN_OPSET = 13
#: int16 / uint16 QuantizeLinear needs opset 21
INT16_OPSET = 21

# (onnx elem type, torch dtype, numpy dtype, lo, hi, first opset)
_CONTAINERS = (
    ("uint8", torch.uint8, np.uint8, 0, 255, MIN_OPSET),
    ("int8", torch.int8, np.int8, -128, 127, MIN_OPSET),
    ("uint16", torch.uint16, np.uint16, 0, 65535, INT16_OPSET),
    ("int16", torch.int16, np.int16, -32768, 32767, INT16_OPSET),
)


def _tensor(a) -> torch.Tensor:
    """A numpy value (0-d or n-d, any dtype) as an owning torch tensor."""
    return torch.from_numpy(np.array(a, copy=True))


def _zero_point(g, zp: np.ndarray):
    """The zero point constant; its type is the Q/DQ type. torch's exporter cannot write uint16
    tensors: a uint16 zero point is written as int32 (no Q/DQ type) and ``uint16_zero_points``
    retypes it in the exported model."""
    return g.op("Constant", value_t=_tensor(zp.astype(np.int32) if zp.dtype == np.uint16 else zp))


def uint16_zero_points(proto) -> None:
    """Retype the int32 zero-point constants of the Q/DQ nodes (see ``_zero_point``) to uint16."""
    from onnx import TensorProto, numpy_helper
    # a uint16 point's zero point feeds its QuantizeLinear (and the paired DequantizeLinear)
    feeds = {n.input[2] for n in proto.graph.node
             if n.op_type == "QuantizeLinear" and len(n.input) > 2}
    for node in proto.graph.node:
        if node.op_type != "Constant" or node.output[0] not in feeds:
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.INT32:
                value = numpy_helper.to_array(attr.t).astype(np.uint16)
                attr.t.CopyFrom(numpy_helper.from_array(value, attr.t.name))


@dataclass
class Point:
    """How one calibrated quantizer is written: scale, zero point, type, optional clip."""

    key: str
    params: QuantParams
    spec: QuantSpec
    is_param: bool
    scale: np.ndarray           # float32, 0-d or 1-d
    zero_point: np.ndarray      # container dtype, same shape as scale
    axis: int | None
    container: tuple
    clip: tuple[np.ndarray, np.ndarray] | None  # real-valued [lo, hi] when the range is narrower
    const: torch.Tensor | None = None           # test-mode quantized parameter (set in forward)
    ndim: int | None = None

    def emit(self, g, x):
        if self.container[0] == "int32":   # a 32-bit bias: its test-mode values (see _INT32)
            return g.op("Constant", value_t=self.const)
        src = g.op("Constant", value_t=self.const) if self.const is not None else x
        if self.const is None:
            src = self._pre_round(g, src)
        s = g.op("Constant", value_t=_tensor(self.scale))
        attrs = {} if self.axis is None else {"axis_i": int(self.axis)}
        z = _zero_point(g, self.zero_point)
        y = g.op("DequantizeLinear", g.op("QuantizeLinear", src, s, z, **attrs), s, z, **attrs)
        return self._clip(g, y)

    def _pre_round(self, g, x):
        """QuantizeLinear rounds half to even. For any other rounding mode, round exactly first
        (``r = Round(y)`` plus the tie correction ``y - r == +-0.5``) and hand QuantizeLinear a
        value already on the grid, so onnxruntime reproduces the test-mode rounding exactly."""
        mode = self.spec.round_mode
        if mode is RoundMode.HALF_EVEN:
            return x
        if mode not in _TIE_FIX:
            log.warning("%s rounds %s; the ONNX graph rounds it half to even", self.key,
                        mode.value)
            return x
        inv = np.reciprocal(self.scale.astype(np.float32))
        shape = None
        if self.axis is not None:
            shape = [1] * self.ndim
            shape[self.axis % self.ndim] = -1
        m = g.op("Constant", value_t=_tensor(inv if shape is None else inv.reshape(shape)))
        back = g.op("Constant", value_t=_tensor(self.scale if shape is None
                                                else self.scale.reshape(shape)))
        y = g.op("Mul", x, m)
        r = g.op("Round", y)
        d = g.op("Sub", y, r)
        half = g.op("Constant", value_t=torch.tensor(0.5, dtype=torch.float32))
        neg_half = g.op("Constant", value_t=torch.tensor(-0.5, dtype=torch.float32))
        zero = g.op("Constant", value_t=torch.tensor(0.0, dtype=torch.float32))
        up_tie, down_tie = g.op("Equal", d, half), g.op("Equal", d, neg_half)
        pos, neg = g.op("Greater", y, zero), g.op("Less", y, zero)
        up = {RoundMode.HALF_UP: up_tie, RoundMode.STD_ROUND: g.op("And", up_tie, pos),
              RoundMode.HALF_DOWN: g.op("And", up_tie, neg)}[mode]
        down = {RoundMode.HALF_UP: None, RoundMode.STD_ROUND: g.op("And", down_tie, neg),
                RoundMode.HALF_DOWN: g.op("And", down_tie, pos)}[mode]
        r = g.op("Add", r, g.op("Cast", up, to_i=1))
        if down is not None:
            r = g.op("Sub", r, g.op("Cast", down, to_i=1))
        return g.op("Mul", r, back)

    def _clip(self, g, y):
        if self.clip is None or self.const is not None:
            return y
        lo, hi = self.clip
        if self.axis is None:
            return g.op("Clip", y, g.op("Constant", value_t=_tensor(lo)),
                        g.op("Constant", value_t=_tensor(hi)))
        shape = [1] * self.ndim
        shape[self.axis % self.ndim] = -1
        lo_t = g.op("Constant", value_t=_tensor(lo.reshape(shape)))
        hi_t = g.op("Constant", value_t=_tensor(hi.reshape(shape)))
        return g.op("Max", g.op("Min", y, hi_t), lo_t)


_TIE_FIX = (RoundMode.HALF_UP, RoundMode.STD_ROUND, RoundMode.HALF_DOWN)


class _QDQ(torch.autograd.Function):
    """Test-mode fake quantization in eager/trace; a Q/DQ pair in the ONNX graph."""

    @staticmethod
    def forward(ctx, x, p):  # noqa: D401 - autograd signature
        # p: the Point, passed through as a non-tensor argument (torch.onnx hands it to
        # symbolic() as it is), so no module-level registry is needed
        if x.dtype != torch.float32:
            raise ExportError(f"{p.key} quantizes a {x.dtype} tensor; the Q/DQ export writes "
                              "float32 scales and needs float32 tensors",
                              where=f"quantizer {p.key}",
                              hint="export the float32 model (model.float()) and float32 "
                                   "example inputs")
        y = apply_params(x, p.params, p.spec)
        p.ndim = x.dim()
        if p.is_param:
            p.const = y.detach().cpu().clone()
        return y

    @staticmethod
    def symbolic(g, x, p):
        return p.emit(g, x)


class QDQModule(nn.Module):
    """Stands in for one calibrated FakeQuantizer in the exporter's copy of the model."""

    def __init__(self, point: Point):
        super().__init__()
        self.point = point
        # what a conv/linear layer keys its quantized-weight cache on (QuantOp._qweight)
        self.params, self.spec = point.params, point.spec

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            return x
        return _QDQ.apply(x, self.point)


def _as_vector(value, n: int | None) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if n is not None and a.ndim == 0:
        a = np.full(n, float(a))
    return a


def plan_point(q: FakeQuantizer, p: QuantParams | None, opset: int) -> Point:
    """The ONNX encoding of quantizer ``q`` with the result's parameters ``p``; ExportError if it
    has none."""
    spec = q.spec
    if p is None or not p.is_set:   # _calibrated() passes only calibrated quantizers
        raise ExportError(f"{q.key} was never calibrated: it has no scale to export",
                          where=f"quantizer {q.key}", hint="calibrate before exporting")
    r = spec.int_range
    per_channel = p.axis is not None and (
        isinstance(p.fix_pos, tuple) or isinstance(p.scale, tuple)
        or isinstance(p.zero_point, tuple))
    axis = p.axis if per_channel else None
    if per_channel is False and any(isinstance(v, tuple) for v in (p.fix_pos, p.scale)):
        raise ExportError(f"{q.key} has per-channel parameters but no channel axis",
                          where=f"quantizer {q.key}",
                          hint="re-run calibration with this version of nndct_lite")
    if p.fix_pos is not None:
        fps = np.asarray(p.fix_pos, dtype=np.int64)
        if np.any(fps > 149) or np.any(fps < -127):
            raise ExportError(f"fix position {p.fix_pos} of {q.key} has no float32 scale",
                              where=f"quantizer {q.key}",
                              hint="re-run calibration; fix positions are normally in -16..15")
        scale = np.asarray(np.ldexp(np.float32(1.0), -fps), dtype=np.float32)
        zp = np.zeros(scale.shape, dtype=np.int64)
    else:
        ps = p.scale
        if ps is None:   # is_set without a fix position: a float scale
            raise ExportError(f"{q.key} has neither a fix position nor a scale",
                              where=f"quantizer {q.key}",
                              hint="re-run calibration with this version of nndct_lite")
        n = len(ps) if isinstance(ps, tuple) else (
            len(p.zero_point) if isinstance(p.zero_point, tuple) else None)
        # the same float32 factors the test-mode model uses: x * inv, then q * back
        if n is None:
            _, back = _inv_scale(ps, torch.empty(0), None)
            scale = np.asarray(back, dtype=np.float32)
        else:
            s = ps if isinstance(ps, tuple) else (ps,) * n
            _, back_t = _inv_scale(s, torch.empty(0), 0)
            scale = back_t.cpu().numpy().astype(np.float32).reshape(-1)
        zp = np.rint(_as_vector(p.zero_point, n)).astype(np.int64)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ExportError(f"scale of {q.key} is not a positive finite float32 ({p.scale})",
                          where=f"quantizer {q.key}",
                          hint="re-run calibration; a constant-zero tensor gets a tiny scale")
    if spec.bit_width > 16:
        return _int32_point(q, p, spec, scale, zp, axis)
    zmin, zmax = int(zp.min()), int(zp.max())
    wanted = ("uint8", "uint16") if r.qmin >= 0 else ("int8", "int16")
    fits = [c for c in _CONTAINERS if c[0] in wanted and c[3] <= min(r.qmin, zmin)
            and max(r.qmax, zmax) <= c[4]]
    if not fits and r.qmin <= zmin and zmax <= r.qmax:
        raise ExportError(f"{q.key} uses integer range [{r.qmin}, {r.qmax}] (bit width "
                          f"{spec.bit_width}), wider than ONNX Q/DQ types (int16/uint16)",
                          where=f"quantizer {q.key}", hint="use a bit width of 16 or less")
    if not fits:
        raise ExportError(f"{q.key} has zero point(s) in [{zmin}, {zmax}], outside its integer "
                          f"range [{r.qmin}, {r.qmax}]: no Q/DQ type holds both",
                          where=f"quantizer {q.key}",
                          hint="re-run calibration (it keeps zero points inside the range)")
    container = fits[0]
    if container[5] > opset:
        raise ExportError(
            f"{q.key} is a {spec.bit_width}-bit tensor (range [{r.qmin}, {r.qmax}]): its "
            f"Q/DQ pair needs {container[0]}, which QuantizeLinear accepts from opset "
            f"{container[5]}; the export asked for opset {opset}",
            where=f"quantizer {q.key}",
            hint=f"pass opset_version={container[5]} (or leave it unset), or quantize this "
                 "tensor with 8 bits or fewer")
    clip = None
    if (r.qmin, r.qmax) != (container[3], container[4]):
        lo = ((np.float32(r.qmin) - zp.astype(np.float32)) * scale).astype(np.float32)
        hi = ((np.float32(r.qmax) - zp.astype(np.float32)) * scale).astype(np.float32)
        clip = (lo, hi)
    if container[0] == "int8" and opset >= INT16_OPSET:
        # onnxruntime (seen up to 1.32) cannot load int8 Q/DQ at opset 21 with its default
        # optimizations (its int8->uint8 rewrite meets the opset-21 output_dtype attribute,
        # microsoft/onnxruntime#25526): write the same codes shifted by 128 as uint8, which
        # dequantize to the same values ((q + 128) - (z + 128)) * s
        container, zp = _CONTAINERS[0], zp + 128
    return Point(key=q.key, params=p, spec=spec, is_param=q.role is Role.PARAM, scale=scale,
                  zero_point=zp.astype(container[2]), axis=axis, container=container,
                  clip=clip)


_INT32 = ("int32", torch.int32, np.int32, -(2 ** 31), 2 ** 31 - 1, MIN_OPSET)


def _int32_point(q: FakeQuantizer, p: QuantParams, spec: QuantSpec, scale: np.ndarray,
                 zp: np.ndarray, axis: int | None) -> Point:
    """A 32-bit bias: written as the constant of its test-mode values (see the module
    docstring); only symmetric float-scale parameters are 32-bit."""
    if q.role is not Role.PARAM or p.fix_pos is not None or not spec.symmetry or np.any(zp != 0):
        raise ExportError(f"{q.key} is a {spec.bit_width}-bit tensor: ONNX writes 32-bit values "
                          "only as a symmetric float-scale parameter (an int32 bias)",
                          where=f"quantizer {q.key}",
                          hint="quantize it with 16 bits or fewer, or make it a symmetric bias")
    return Point(key=q.key, params=p, spec=spec, is_param=True, scale=scale,
                 zero_point=zp.astype(np.int32), axis=axis, container=_INT32, clip=None)
