"""``nndct-lite inspect``: which nodes the DPU runs, which fall back to the CPU, and why."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence


if TYPE_CHECKING:   # the command line imports torch and the pipeline lazily
    from ..graph.ir import Node
    from ..result import QuantResult
    from ..session import QuantSession

from ..state.layout import RESOLVED_CONFIG_FILE
from .models import quant_session
from .._text import text_table

# =============================================================================== inspect
@dataclass(frozen=True)
class InspectRow:
    index: int
    name: str
    normalized: str
    type: str
    kind: str
    shape: tuple[int, ...] | None
    device: str            # DPU | CPU | GPU | - (no deployed op)
    reason: str            # why CPU / why no op; notes for DPU nodes
    quantized: str         # w8 b8 o8 / o@7 / float / -

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "normalized": self.normalized,
                "type": self.type, "kind": self.kind,
                "shape": list(self.shape) if self.shape is not None else None,
                "device": self.device, "reason": self.reason, "quantized": self.quantized}


def _kinds():
    """Kinds the reasons mention (which node is a DPU op is the XModel builder's decision)."""
    from ..graph.ops import OpKind as K
    binary = frozenset({K.ADD, K.MUL, K.SUB})          # only with two tensor operands
    alias = frozenset({K.DROPOUT, K.IDENTITY, K.CONTIGUOUS})
    return K, binary, alias


def _quant_text(result: QuantResult, node: Node, index_of: dict[str, int]) -> str:
    """``w8 b8 o8`` (``in8`` for the model input), ``o@7`` when node 7's quantizer carries this
    output, ``float`` or ``-``: from the resolved plan (a session never forwarded has no
    numbers yet, but its plan says what will be quantized)."""
    from ..config.spec import TensorKind as T
    plan = result.plan
    specs = plan.specs(node.name) if node.name in plan else {}
    parts = []
    for kind, tag in ((T.WEIGHTS, "w"), (T.BIAS, "b"), (T.ACTIVATION, "o")):
        if kind in specs and specs[kind].spec.is_int:
            tag = "in" if tag == "o" and node.kind.value == "input" else tag
            parts.append(f"{tag}{specs[kind].spec.bit_width}")
    group = plan.node(node.name).group if node.name in plan else None
    if T.ACTIVATION not in specs and node.is_tensor and group not in (None, node.name) \
            and result.nodes.get(group) is not None and result.nodes[group].quantized_output:
        parts.append(f"o@{index_of[group]}")
    return " ".join(parts) or ("float" if node.is_tensor else "-")


def _device_of(result: QuantResult, node: Node, cpu_ops: dict[str, str]) -> tuple[str, str]:
    """(device, reason) of one node. On the DPU target the device is the XModel builder's own
    decision (``cpu_ops``, from :func:`~nndct_lite.export.xmodel.deploy_plan.cpu_ops_of`); the
    reason explains it."""
    from ..config.spec import TargetDevice
    K, binary, alias = _kinds()
    plan = result.plan
    k = node.kind
    if k is K.CONST:
        return "-", "constant tensor, read by the ops that use it"
    if k is K.SIZE:
        return "-", "tensor shape: a Python value folded into its consumers"
    if not node.is_tensor:
        return "-", "returns a Python value (a tuple, a number): no op of its own"
    if k is K.PYOP:
        return "-", "takes a tensor out of a tuple: no op of its own"
    target = result.config.target_device
    reason = plan.float_reason(node.name) if node.name in plan else None
    if target is not TargetDevice.DPU:
        return target.value, reason or ""
    if node.name not in cpu_ops:
        return "DPU", ("no-op on deploy" if k in alias else _notes(result, node))
    op = cpu_ops[node.name]
    if k is K.OTHER:
        what = type(node.module).__name__ if node.module is not None else \
            getattr(node.target, "__name__", str(node.target))
        return "CPU", f"{what} is not supported by the DPU: runs in float ({op})"
    if reason is not None:
        return "CPU", f"{reason} ({op})"
    carrier = node.name in plan and plan.node(node.name).group == node.name
    if carrier and not result.of(node).quantized_output:
        ins = node.inputs[0].shape if node.inputs else None
        return "CPU", (f"no DPU form for {k.value} from {_shape_text(ins)} to "
                       f"{_shape_text(node.shape)} (no integer kernel): output stays float "
                       f"({op})")
    if k in binary and len([i for i in node.inputs if i.is_tensor]) != 2:
        return "CPU", f"{k.value} with a scalar or constant operand has no DPU op ({op})"
    if k is K.BATCHNORM:
        return "CPU", f"BatchNorm not directly after a single-consumer conv: not folded ({op})"
    return "CPU", f"the XModel has no DPU op for {k.value}: written as the CPU op {op}"


def _notes(result: QuantResult, node: Node) -> str:
    notes = []
    if node.meta.get("folded_bn"):
        notes.append(f"BatchNorm {node.meta['folded_bn']} folded in")
    factor = result.of(node).output_factor
    if factor != 1.0:
        notes.append(f"DPU approximation: output x {factor:.6g}")
    elif node.kind.value in ("leaky_relu", "hardsigmoid", "hardswish"):
        notes.append(f"DPU form of {node.kind.value}")
    return "; ".join(notes)


def inspect_rows(session: QuantSession) -> list[InspectRow]:
    """One row per graph node of a (calib or test) session: device and reason."""
    from ..graph.layer_type import layer_type_of
    from ..config.spec import TargetDevice
    from ..export.xmodel.deploy_plan import cpu_ops_of
    result = session.freeze()        # the frozen result is all the command reads
    cpu_ops = cpu_ops_of(result) if result.config.target_device is TargetDevice.DPU else {}
    rows = []
    index_of = {n.name: n.index for n in result.graph.nodes}
    for node in result.graph.nodes:
        device, reason = _device_of(result, node, cpu_ops)
        rows.append(InspectRow(node.index, node.name, node.normalized, layer_type_of(node),
                               node.kind.value, node.shape, device, reason,
                               _quant_text(result, node, index_of)))
    return rows


def _shape_text(shape: Sequence[int] | None) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def format_inspect(rows: Sequence[InspectRow], *, model: str, target: str,
                   shapes: Sequence[tuple[int, ...]], rewrites: dict | None = None) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.device] = counts.get(r.device, 0) + 1
    summary = ", ".join(f"{counts[d]} {d}" for d in ("DPU", "CPU", "GPU") if d in counts)
    if counts.get("-"):
        summary += f", {counts['-']} without a deployed op"
    lines = [f"model:   {model}", f"input:   {', '.join(_shape_text(s) for s in shapes)}",
             f"target:  {target}", f"nodes:   {len(rows)} ({summary})"]
    if rewrites:
        folded = rewrites.get("batchnorm_folded") or []
        relu6 = rewrites.get("relu6_to_relu") or []
        cle = rewrites.get("cross_layer_equalization_pairs") or []
        bits = [f"{len(folded)} BatchNorm folded"] if folded else []
        bits += [f"{len(relu6)} ReLU6 -> ReLU"] if relu6 else []
        bits += [f"{len(cle)} CLE pair(s)"] if cle else []
        if bits:
            lines.append(f"rewrites: {', '.join(bits)}")
    lines.append("")
    lines += text_table(("#", "node", "type", "output shape", "device", "quant", "notes"),
                    [(str(r.index), r.name, r.type, _shape_text(r.shape), r.device,
                      r.quantized, r.reason) for r in rows])
    cpu = [r for r in rows if r.device == "CPU"]
    lines.append("")
    if target == "DPU":
        if cpu:
            lines.append(f"{len(cpu)} node(s) fall back to the CPU:")
            lines += [f"- {r.name} ({r.type}): {r.reason}" for r in cpu]
        else:
            lines.append("every tensor op runs on the DPU.")
    else:
        lines.append(f"target_device is {target}: nothing is placed on a DPU "
                     "(float-scale quantization for the CPU/GPU).")
    return "\n".join(lines) + "\n"


def _cmd_inspect(args: argparse.Namespace) -> int:
    with quant_session(args.model, args.input_shape, args.config, args.bitwidth) as s:
        rows = inspect_rows(s)
        target = s.config.target_device.value
        rewrites = _rewrites(s)
    if args.json:
        print(json.dumps({"model": args.model, "target_device": target,
                          "input_shapes": [list(x) for x in args.input_shape],
                          "nodes": [r.as_dict() for r in rows]}, indent=2))
    else:
        sys.stdout.write(format_inspect(rows, model=f"{rows[0].name.split('::')[0]} "
                                        f"({args.model})" if rows else args.model,
                                        target=target, shapes=args.input_shape,
                                        rewrites=rewrites))
    return 0


def _rewrites(session: QuantSession) -> dict:
    path = Path(session.output_dir) / RESOLVED_CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("graph_rewrites", {})
    except (OSError, ValueError):
        return {}
