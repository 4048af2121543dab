"""The frozen quantization result (:class:`~nndct_lite.result.QuantResult`) -> XGraph, laid out
like the original quantizer's export.

Parameters first (``const`` holding the quantized float32 values + ``fix``), then the input
``data`` + ``fix``, then the ops of each node in graph order, a ``fix`` after every quantized
output. DPU feature maps are NHWC, conv weights OHWI. Ops with no XIR equivalent are written as
CPU ops named like the original's (``aten::mean``, ``aten::silu_``): they work in torch's NCHW
order, and layout conversions named ``<producer>_sink_transpose_<k>`` (to NCHW) and
``<producer>_swim_transpose_<k>`` (back to NHWC) sit at the borders, as in the original's files.

This module orchestrates; the ops of each family are written by ``emit_*.py`` (see
:data:`HANDLERS`). Any failure while writing a node becomes an :class:`ExportError` naming the node
and its op."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..._log import get_logger
from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...result import QuantResult
from ...xmodel.model import Attr, XGraph, XOp, XTensor, const_op, fix_op, parse_data_type
from ...xmodel.writer import write_xmodel
from .layout import (TO_CL, TO_TORCH, Val, is_trivial_perm, reset_example_batch,
                     set_example_batch, stored_shape)

__all__ = ["build_xgraph", "export_xmodel", "xir_name"]

log = get_logger("export")


def xir_name(name: str) -> str:
    """Node or parameter name -> XIR op name (every non-alphanumeric character -> ``_``)."""
    return re.sub(r"[^0-9A-Za-z]", "_", name)


def op_label(node: Node) -> str:
    """The torch op a node came from, for messages: ``Conv2d``, ``torch.cat``, ``.view``."""
    if node.op == "call_module" and node.module is not None:
        return type(node.module).__name__
    if node.op == "call_method":
        return f".{node.target}"
    t = node.target
    return getattr(t, "__name__", str(t))


class _Builder:
    """Shared state and helpers of one export; the ``emit_*`` modules call into it."""

    def __init__(self, result: QuantResult):
        self.r = result
        self.g = XGraph(result.model_name)
        self.ref: dict[Node, Val] = {}
        self.prefix = result.model_name + "__"
        self.param_ops: set[str] = set()
        self.cpu_ops: list[str] = []                 # node names, in graph order
        self.cpu_types: list[str] = []               # their op types
        self._conv: dict[tuple[str, bool], str] = {}
        self._consts: dict[tuple[int, bool], str] = {}
        self._count = {"sink": 0, "swim": 0}

    # -- graph primitives ------------------------------------------------------------------
    def add(self, op: XOp, shape) -> XOp:
        op.output = XTensor(op.name, tuple(int(d) for d in shape))
        self.g.add(op)
        return op

    def const(self, name: str, arr, *, param: bool = False) -> str:
        """A float32 ``const`` op (``param``: placed with the parameters at the top)."""
        if name in self.g:
            return name
        a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32)) + np.float32(0.0)
        self.g.add(const_op(name, a))
        if param:
            self.param_ops.add(name)
        return name

    def fix(self, name: str, params, key: str | None, shape) -> str:
        """Append ``<name>_fix`` when ``params`` holds a fix position; returns the output name."""
        if params is None or params.fix_pos is None:
            return name
        if isinstance(params.fix_pos, tuple):
            raise ExportError("per-channel fix positions cannot be exported to an XModel",
                              where=key, hint="use the DPU default (per-tensor)")
        self.g.add(fix_op(name + "_fix", name, list(shape), int(params.fix_pos),
                          int(params.bit_width)))
        return name + "_fix"

    def fixed(self, name: str, shape, fix_point: int, bit_width: int = 8) -> str:
        """A ``fix`` with a given position (the DPU's fixed intermediate grids)."""
        self.g.add(fix_op(name + "_fix", name, list(shape), int(fix_point), int(bit_width)))
        return name + "_fix"

    def param(self, node: Node, key: str, arr: np.ndarray, qkey: str | None, qp) -> str:
        """A parameter const (named after its state-dict name) and its fix."""
        pname = node.param_names.get(key, f"{node.module_path or xir_name(node.name)}.{key}")
        name = self.prefix + xir_name(pname)
        self.const(name, arr, param=True)
        out = self.fix(name, qp, qkey, list(np.shape(arr)))
        self.param_ops.add(out)
        return out

    def shape_input(self, name: str, dims) -> str:
        """The original's shape operand of ``reshape``: one float const per dim, stacked."""
        names = []
        for i, d in enumerate(dims):
            names.append(self.const(f"{name}_shape_attr_{i}_", np.array([float(d)])))
        stack = XOp(f"{name}_shape_i0", "stack", attrs={"axis": Attr.int32(0)},
                    inputs={"input": names},
                    output=XTensor(f"{name}_shape_i0", (len(dims), 1),
                                   attrs={"shape_info": Attr.int32_vec(list(dims))}))
        self.g.add(stack)
        return stack.name

    def reshape(self, name: str, src: str, dims) -> XOp:
        dims = [int(d) for d in dims]
        return XOp(name, "reshape", attrs={"shape": Attr.int32_vec([0])},
                   inputs={"input": [src], "shape": [self.shape_input(name, dims)]})

    # -- node values -----------------------------------------------------------------------
    def name(self, node: Node) -> str:
        return xir_name(node.name)

    def result_of(self, node: Node):
        return self.r.of(node)

    def finish(self, node: Node, op: XOp, cl: bool = True) -> Val:
        """Add ``op`` as the node's op (stored layout ``cl``), its output fix, and record it."""
        shape = stored_shape(node.shape or (), cl)
        self.add(op, shape)
        nr = self.r.of(node)
        out = self.fix(op.name, nr.output, nr.output_key, shape)
        val = Val(out, op.name, cl and len(shape) == 4, len(shape))
        self.ref[node] = val
        return val

    def alias(self, node: Node, val: Val) -> None:
        self.ref[node] = val

    def val(self, node: Node) -> Val:
        if node.kind is OpKind.CONST:
            return Val(self.const_node(node, False), xir_name(node.name), False,
                       len(node.shape or ()))
        try:
            return self.ref[node]
        except KeyError:
            raise ExportError(f"input {node.name!r} ({node.kind.value}, {op_label(node)}) has "
                              "no value in the XGraph", where=node.name,
                              hint="it is a Python value or an op the exporter skipped") from None

    def const_node(self, node: Node, cl: bool) -> str:
        key = (id(node), cl)
        if key not in self._consts:
            value = node.params.get("value")
            if not isinstance(value, torch.Tensor):
                raise ExportError(f"constant {node.name!r} is not a tensor", where=node.name)
            arr = value.detach().cpu().float().numpy()
            if cl and arr.ndim == 4:
                arr = arr.transpose(TO_CL)
            name = self.prefix + xir_name(node.param_names.get("value", node.name))
            self._consts[key] = self.const(name + ("_nhwc" if cl and arr.ndim == 4 else ""), arr,
                                           param=True)
        return self._consts[key]

    def get(self, node: Node, cl: bool = True, *, for_reshape: bool = False) -> str:
        """The op name holding ``node``'s value in layout ``cl`` (a conversion is added and
        cached when the stored layout differs; ``for_reshape``: a memory-order-preserving
        conversion is skipped, the consumer reshapes anyway)."""
        if node.kind is OpKind.CONST:
            return self.const_node(node, cl)
        v = self.val(node)
        if v.rank != 4 or v.cl == cl:
            return v.name
        return self.convert(v, node.shape, cl, for_reshape=for_reshape)

    def convert(self, v: Val, torch_shape, cl: bool, *, for_reshape: bool = False) -> str:
        src_dims = stored_shape(torch_shape, v.cl)
        order = list(TO_CL if cl else TO_TORCH)
        if for_reshape and is_trivial_perm(src_dims, order):
            return v.name
        key = (v.name, cl)
        if key in self._conv:
            return self._conv[key]
        kind = "swim" if cl else "sink"
        name = f"{v.base}_{kind}_transpose_{self._count[kind]}"
        self._count[kind] += 1
        out = stored_shape(torch_shape, cl)
        if is_trivial_perm(src_dims, order):
            op = self.reshape(name, v.name, out)
        else:
            op = XOp(name, "transpose", attrs={"order": Attr.int32_vec(order)},
                     inputs={"input": [v.name]})
        self.add(op, out)
        self._conv[key] = name
        return name

    def cpu(self, node: Node, op_type: str) -> None:
        self.cpu_ops.append(node.name)
        self.cpu_types.append(op_type)

    # -- the walk --------------------------------------------------------------------------
    def emit(self, node: Node) -> None:
        from .handlers import handler_for
        fn = handler_for(node)
        if fn is not None:
            fn(self, node)

    def build(self) -> XGraph:
        ex = next((a for a in self.r.example if isinstance(a, torch.Tensor) and a.dim()), None)
        token = set_example_batch(ex.shape[0] if ex is not None else 1)
        try:
            return self._build()
        finally:
            reset_example_batch(token)

    def _build(self) -> XGraph:
        graph = self.r.graph
        live = _live_nodes(graph)
        for node in graph.nodes:
            if node not in live and node.kind is not OpKind.INPUT:
                continue            # dead code (``sp = spx[0]`` never read): no dangling op
            try:
                self.emit(node)
            except ExportError as e:
                raise ExportError(f"node {node.name!r} ({node.kind.value}, {op_label(node)}): "
                                  f"{e.message}", where=node.name, hint=e.hint) from e
            except Exception as e:  # noqa: BLE001 - every failure names the node
                raise ExportError(
                    f"cannot write node {node.name!r} ({node.kind.value}, {op_label(node)}) to "
                    f"the XModel: {type(e).__name__}: {e}", where=node.name,
                    hint="report it with the model; the ONNX and TorchScript exports may still "
                         "work") from e
        ordered = XGraph(graph.model_name)
        params = [op for op in self.g.ops if op.name in self.param_ops]
        for op in params + [op for op in self.g.ops if op.name not in self.param_ops]:
            ordered.add(op, check_inputs=False)
        ordered.check_topological()
        self._check_cpu_ops(ordered)
        self._report()
        return ordered

    def _check_cpu_ops(self, graph: XGraph) -> None:
        for op in graph.ops:
            if op.type.startswith("aten::"):
                try:
                    parse_data_type(op.attr("data_type", ""))
                except ValueError as e:
                    raise ExportError(f"CPU op {op.name!r} ({op.type}): {e}",
                                      where=op.name) from e
                if tuple(op.attr("shape", ())) != tuple(op.shape):
                    raise ExportError(f"CPU op {op.name!r} ({op.type}): shape attribute "
                                      f"{op.attr('shape')} differs from its output "
                                      f"{list(op.shape)}", where=op.name)

    def _report(self) -> None:
        if not self.cpu_ops:
            return
        counts = Counter(self.cpu_types)
        summary = ", ".join(f"{t} \u00d7{n}" for t, n in sorted(counts.items(),
                                                                key=lambda kv: (-kv[1], kv[0])))
        log.warning("[QUANTIZER_TORCH_CONVERT_XMODEL] %d op(s) run on the CPU: %s",
                    len(self.cpu_ops), summary)
        for name, t in zip(self.cpu_ops, self.cpu_types):
            log.debug("CPU op %s: %s", t, name)


def _live_nodes(graph) -> set[Node]:
    """The nodes the graph outputs depend on."""
    live: set[Node] = set()
    todo = list(graph.output_nodes())
    while todo:
        n = todo.pop()
        if n not in live:
            live.add(n)
            todo.extend(n.inputs)
    return live


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
    cpu = any(op.type.startswith("aten::") for op in graph.ops)
    write_xmodel(graph, path, allow_unregistered=cpu)
    log.info("=>Successfully convert '%s' to xmodel.(%s)", result.model_name, path)
    if deploy_check:
        from .deploy_check import dump_deploy_check
        dump_deploy_check(result, Path(output_dir))
    return path
