"""The frozen quantization result (:class:`~nndct_lite.result.QuantResult`) -> XGraph, laid out like the original quantizer's export.

Parameters first (``const`` holding the quantized float32 values + ``fix``), then the input
``data`` + ``fix``, then one op per node in graph order, a ``fix`` after every quantized node.
Feature maps are NHWC, conv weights OHWI. Ops the DPU cannot run become custom ops placed in a
CPU subgraph, and are named in a warning."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..._log import get_logger
from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...result import NodeResult, QuantResult
from ...xmodel.model import INT32_MAX, Attr, XGraph, XOp, XSubGraph, XTensor, const_op, data_op, fix_op
from ...xmodel.writer import write_xmodel

__all__ = ["build_xgraph", "export_xmodel", "xir_name"]

log = get_logger("export")
_ALIAS = {OpKind.DROPOUT, OpKind.IDENTITY, OpKind.CONTIGUOUS}


def xir_name(name: str) -> str:
    """Node or parameter name -> XIR op name (every non-alphanumeric character -> ``_``)."""
    return re.sub(r"[^0-9A-Za-z]", "_", name)


def _nhwc(shape) -> list[int]:
    shape = [1] + list(shape[1:])
    if len(shape) == 4:
        return [shape[0], shape[2], shape[3], shape[1]]
    return shape


def _axis(node_shape, axis: int) -> int:
    nd = len(node_shape)
    axis %= nd
    return {0: 0, 1: 3, 2: 1, 3: 2}[axis] if nd == 4 else axis


class _Builder:
    def __init__(self, result: QuantResult):
        self.r = result
        self.g = XGraph(result.model_name)
        self.ref: dict[Node, str] = {}
        self.cpu_ops: list[str] = []
        self.prefix = result.model_name + "__"
        self.param_ops: set[str] = set()

    def fix(self, name: str, params, key: str | None, shape) -> str:
        if params is None or params.fix_pos is None:
            return name
        if isinstance(params.fix_pos, tuple):
            raise ExportError("per-channel fix positions cannot be exported to an XModel",
                              where=key, hint="use the DPU default (per-tensor)")
        self.g.add(fix_op(name + "_fix", name, shape, int(params.fix_pos), params.bit_width))
        return name + "_fix"

    def param(self, node: Node, key: str) -> str | None:
        nr = self.r.of(node)
        t = nr.weight if key == "weight" else nr.bias
        qp = nr.weight_params if key == "weight" else nr.bias_params
        qkey = nr.weight_key if key == "weight" else nr.bias_key
        if t is None:
            return None
        arr = t.detach().cpu().float().numpy() + np.float32(0.0)   # -0.0 -> +0.0, like XIR
        if key == "weight" and arr.ndim == 4:
            if node.kind is OpKind.CONV_TRANSPOSE2D:
                arr = arr.transpose(1, 2, 3, 0)
            elif node.kind is OpKind.DEPTHWISE_CONV2D:
                c, m = arr.shape[0] // max(1, node.module.out_channels // node.module.in_channels), 1
                arr = arr.reshape(c, -1, *arr.shape[2:]).transpose(1, 2, 3, 0) if m else arr
            else:
                arr = arr.transpose(0, 2, 3, 1)
        name = self.prefix + xir_name(node.param_names[key])
        self.g.add(const_op(name, np.ascontiguousarray(arr, dtype=np.float32)))
        out = self.fix(name, qp, qkey, list(arr.shape))
        self.param_ops.update({name, out})
        return out

    def inp(self, node: Node) -> str:
        return self.ref[node]

    def emit(self, node: Node) -> None:
        k, name, shape = node.kind, xir_name(node.name), _nhwc(node.shape or ())
        nr = self.r.of(node)
        ins = [self.inp(i) for i in node.inputs if i.is_tensor]
        op: XOp | None = None
        if k is OpKind.INPUT:
            op = data_op(name, shape, "FLOAT32")
        elif k in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.CONV_TRANSPOSE2D):
            m = node.module
            xtype = {OpKind.CONV2D: "conv2d", OpKind.DEPTHWISE_CONV2D: "depthwise-conv2d",
                     OpKind.CONV_TRANSPOSE2D: "transposed-conv2d"}[k]
            ph, pw = (m.padding if isinstance(m.padding, tuple) else (0, 0))
            attrs = {"kernel": Attr.int32_vec([m.kernel_size[1], m.kernel_size[0]]),
                     "stride": Attr.int32_vec([m.stride[1], m.stride[0]]),
                     "dilation": Attr.int32_vec([m.dilation[1], m.dilation[0]]),
                     "pad": Attr.int32_vec([pw, pw, ph, ph]), "pad_mode": Attr.string("FLOOR"),
                     "bias_term": Attr.bool("bias" in node.params),
                     "in_dim": Attr.int32(m.in_channels), "out_dim": Attr.int32(m.out_channels)}
            if k is OpKind.CONV2D:
                attrs["group"] = Attr.int32(m.groups)
            w = self.param(node, "weight")
            b = self.param(node, "bias")
            inputs = {"input": ins[:1], "weights": [w]}
            if b:
                inputs["bias"] = [b]
            op = XOp(name, xtype, attrs=attrs, inputs=inputs)
        elif k is OpKind.LINEAR:
            w = self.param(node, "weight")
            b = self.param(node, "bias")
            inputs = {"input": ins[:1] + [w]}
            if b:
                inputs["bias"] = [b]
            op = XOp(name, "matmul", attrs={"transpose_a": Attr.bool(False),
                                            "transpose_b": Attr.bool(True)}, inputs=inputs)
        elif k in (OpKind.RELU, OpKind.RELU6, OpKind.SIGMOID, OpKind.TANH, OpKind.HARDSIGMOID,
                   OpKind.HARDSWISH, OpKind.GELU):
            xtype = {OpKind.RELU: "relu", OpKind.RELU6: "relu6", OpKind.SIGMOID: "sigmoid",
                     OpKind.TANH: "tanh", OpKind.HARDSIGMOID: "hard-sigmoid",
                     OpKind.HARDSWISH: "hard-swish", OpKind.GELU: "gelu"}[k]
            op = XOp(name, xtype, inputs={"input": ins[:1]})
        elif k is OpKind.LEAKY_RELU:
            op = XOp(name, "leaky-relu", attrs={"alpha": Attr.float(26.0 / 256.0)},
                     inputs={"input": ins[:1]})
        elif k in (OpKind.ADD, OpKind.MUL, OpKind.SUB) and len(ins) == 2:
            op = XOp(name, {OpKind.ADD: "add", OpKind.MUL: "mul", OpKind.SUB: "sub"}[k],
                     inputs={"input": ins})
        elif k is OpKind.CAT:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            op = XOp(name, "concat", attrs={"axis": Attr.int32(_axis(node.shape, dim))},
                     inputs={"input": ins})
        elif k in (OpKind.ADAPTIVE_AVGPOOL2D, OpKind.AVGPOOL2D, OpKind.MAXPOOL2D):
            op = self.pool(node, name, shape, ins, nr)
        elif k is OpKind.STRIDED_SLICE:
            op = self.slice(node, name, ins)
        elif k is OpKind.PAD:
            pads = list(node.args[1] if len(node.args) > 1 else node.kwargs["pad"])
            pads += [0] * (8 - len(pads))
            # torch: (W_l, W_r, H_t, H_b, C_f, C_b, N_f, N_b) -> NHWC before/after pairs
            paddings = [pads[6], pads[7], pads[2], pads[3], pads[0], pads[1], pads[4], pads[5]]
            op = XOp(name, "pad", attrs={"paddings": Attr.int32_vec(paddings),
                                         "mode": Attr.string("CONSTANT"),
                                         "constant_values": Attr.float_vec([0.0] * 8)},
                     inputs={"input": ins[:1]})
        elif k in (OpKind.FLATTEN, OpKind.RESHAPE):
            op = self.reshape(node, name, ins)
        elif k in _ALIAS:
            self.ref[node] = ins[0]
            return
        elif not node.is_tensor or k in (OpKind.SIZE, OpKind.PYOP, OpKind.CONST):
            return
        if op is None:
            target = getattr(node.target, "__name__", str(node.target))
            op = XOp(name, f"custom_{xir_name(str(target))}", inputs={"input": ins},
                     attrs={"shape": Attr.int32_vec(shape), "data_type": Attr.string("float32")})
            self.cpu_ops.append(node.name)
        op.output = XTensor(name, tuple(shape))
        self.g.add(op)
        self.ref[node] = self.fix(op.name, nr.output, nr.output_key, shape)

    def pool(self, node, name, shape, ins, nr: NodeResult):
        in_shape = node.inputs[0].shape
        if node.kind is OpKind.ADAPTIVE_AVGPOOL2D:
            kh, kw = in_shape[2] // node.shape[2], in_shape[3] // node.shape[3]
            stride, pad, glob = (kh, kw), (0, 0), node.shape[2] == node.shape[3] == 1
        else:
            m = node.module
            ks = m.kernel_size if m is not None else node.args[1]
            kh, kw = (ks, ks) if isinstance(ks, int) else ks
            st = m.stride if m is not None else node.args[2] if len(node.args) > 2 else ks
            stride = (st, st) if isinstance(st, int) else tuple(st)
            pd = m.padding if m is not None else 0
            pad = (pd, pd) if isinstance(pd, int) else tuple(pd)
            glob = False
        xtype = "maxpool2d" if node.kind is OpKind.MAXPOOL2D else "avgpool2d"
        attrs = {"kernel": Attr.int32_vec([kw, kh]), "stride": Attr.int32_vec([stride[1], stride[0]]),
                 "pad": Attr.int32_vec([pad[1], pad[1], pad[0], pad[0]]),
                 "pad_mode": Attr.string("CEIL" if getattr(node.module, "ceil_mode", False) else "FLOOR"),
                 "global": Attr.bool(glob)}
        if xtype == "avgpool2d":
            attrs["count_include_pad"] = Attr.bool(True)
            attrs["count_include_invalid"] = Attr.bool(True)
            i0 = XOp(name + "_i0", xtype, attrs=attrs, inputs={"input": ins[:1]},
                     output=XTensor(name + "_i0", tuple(shape)))
            self.g.add(i0)
            self.g.add(const_op(name + "_i1", np.array([nr.output_factor], dtype=np.float32)))
            return XOp(name, "mul", inputs={"input": [name + "_i0", name + "_i1"]})
        return XOp(name, xtype, attrs=attrs, inputs={"input": ins[:1]})

    def slice(self, node, name, ins):
        idx = node.args[1]
        idx = idx if isinstance(idx, tuple) else (idx,)
        nd = len(node.inputs[0].shape)
        begin, end, strides = [0] * nd, [INT32_MAX] * nd, [1] * nd
        bmask = emask = 0
        for d, s in enumerate(idx):
            if not isinstance(s, slice):
                raise ExportError(f"indexing {s!r} is not exportable as strided_slice",
                                  where=node.name)
            begin[d] = s.start or 0
            end[d] = s.stop if s.stop is not None else INT32_MAX
            strides[d] = s.step or 1
            bmask |= (s.start is None) << d
            emask |= (s.stop is None) << d
        for d in range(len(idx), nd):
            bmask |= 1 << d
            emask |= 1 << d
        if nd == 4:
            perm = [0, 2, 3, 1]
            begin, end, strides = ([v[p] for p in perm] for v in (begin, end, strides))
            bmask = sum(((bmask >> p) & 1) << i for i, p in enumerate(perm))
            emask = sum(((emask >> p) & 1) << i for i, p in enumerate(perm))
        return XOp(name, "strided_slice", attrs={
            "begin": Attr.int32_vec(begin), "end": Attr.int32_vec(end),
            "strides": Attr.int32_vec(strides), "begin_mask": Attr.int32(bmask),
            "end_mask": Attr.int32(emask), "ellipsis_mask": Attr.int32(0),
            "new_axis_mask": Attr.int32(0), "shrink_axis_mask": Attr.int32(0)},
            inputs={"input": ins[:1]})

    def reshape(self, node, name, ins):
        out = [1] + list(node.shape[1:])
        names = []
        for i, d in enumerate(out):
            n = f"{name}_shape_attr_{i}_"
            self.g.add(const_op(n, np.array([float(d)], dtype=np.float32)))
            names.append(n)
        stack = XOp(f"{name}_shape_i0", "stack", attrs={"axis": Attr.int32(0)},
                    inputs={"input": names},
                    output=XTensor(f"{name}_shape_i0", (len(out), 1),
                                   attrs={"shape_info": Attr.int32_vec(out)}))
        self.g.add(stack)
        return XOp(name, "reshape", attrs={"shape": Attr.int32_vec([0])},
                   inputs={"input": ins[:1], "shape": [stack.name]})

    def build(self) -> XGraph:
        graph = self.r.graph
        body = XGraph(graph.model_name)
        self.g = body
        for node in graph.nodes:
            self.emit(node)
        ordered = XGraph(graph.model_name)
        params = [op for op in body.ops if op.name in self.param_ops]
        for op in params + [op for op in body.ops if op.name not in self.param_ops]:
            ordered.add(op)
        if self.cpu_ops:
            log.warning("[QUANTIZER_TORCH_CONVERT_XMODEL] %d op(s) cannot run on the DPU and "
                        "are placed in a CPU subgraph: %s", len(self.cpu_ops),
                        ", ".join(self.cpu_ops))
            cpu = {xir_name(n) for n in self.cpu_ops}
            runs: list[tuple[str, list[str]]] = []
            for op in ordered.ops:  # maximal runs in topological order: no cycles between children
                dev = "CPU" if op.name in cpu else "DPU"
                if runs and runs[-1][0] == dev:
                    runs[-1][1].append(op.name)
                else:
                    runs.append((dev, [op.name]))
            ordered.root = XSubGraph("root", children=[
                XSubGraph(f"subgraph_{i}_{dev.lower()}", ops=names,
                          attrs={"device": Attr.string(dev)}) for i, (dev, names) in enumerate(runs)])
        return ordered


def build_xgraph(result: QuantResult) -> XGraph:
    """The XGraph of a frozen quantization result (no file written)."""
    with torch.no_grad():
        return _Builder(result).build()


def export_xmodel(result: QuantResult, output_dir="quantize_result", *,
                  deploy_check: bool = False) -> Path:
    """Write ``<output_dir>/<Model>_int.xmodel`` (atomically); optionally dump golden data."""
    from ...config.spec import TargetDevice
    if result.config.target_device is not TargetDevice.DPU:
        raise ExportError("an XModel is only produced for target_device DPU",
                          where=f"target_device={result.config.target_device.value}",
                          hint="use export_onnx_model() or export_torch_script() for CPU/GPU")
    graph = build_xgraph(result)
    path = Path(output_dir) / f"{result.model_name}_int.xmodel"
    write_xmodel(graph, path, allow_unregistered=graph.root is not None)
    log.info("=>Successfully convert '%s' to xmodel.(%s)", result.model_name, path)
    if deploy_check:
        from .deploy_check import dump_deploy_check
        dump_deploy_check(result, Path(output_dir))
    return path
