"""Per-layer quantization report: how far every quantized node's output is from the float model.

``layer_report(session, batches)`` runs a copy of the generated model twice per batch — once in
FLOAT mode and once with the final quantization parameters (TEST numerics) — with a forward hook
on every node that owns an output quantizer, and returns one ``LayerRow`` per such node, in graph
order. The session's own modules are never changed.
``render_markdown`` formats them, ``log_report`` logs the table; ``report.files`` writes
``report.md``, ``report.json`` and, on request, ``report_chart.png``. See docs/reports.md.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn as nn

from .._log import get_logger
from ..calib.base import dense_flat
from ..errors import InputError
from ..graph.ir import Graph, Node
from ..quant.build import layer_of, quantizers, set_mode
from ..quant.fake_quantizer import FakeQuantizer, apply_params, quantizer_of
from ..quant.placement import Placement
from ..numerics.params import QuantParams
from ..state.layout import QUANT_INFO_FILE
from ..state.modes import QuantMode
from .rows import LayerRow, TensorQuant

__all__ = ["ReportSession", "layer_report", "sqnr_db"]

log = get_logger("report")


class ReportSession(Protocol):
    """What the report reads of a ``QuantSession`` (the session sits above the report). It
    restores ``forwards``, which its own forwards count up; an optional ``report_batches`` list
    (the batches kept for the report) is cut back to its length before the report."""

    @property
    def graph(self) -> Graph: ...

    @property
    def model(self) -> nn.Module: ...

    @property
    def placement(self) -> Placement: ...

    @property
    def mode(self) -> QuantMode: ...

    @property
    def output_dir(self) -> Path: ...

    @property
    def device(self) -> torch.device: ...

    forwards: int


# ------------------------------------------------------------------------------- the measure
@dataclass
class _Acc:
    signal: float = 0.0
    noise: float = 0.0
    values: int = 0

    def add(self, ref: torch.Tensor, got: torch.Tensor) -> None:
        ref, got = ref.detach(), got.detach()
        if ref.shape != got.shape:
            return
        if ref.dtype == got.dtype == torch.float32 and ref.stride() == got.stride():
            # fast path: float32 dot products (relative error ~1e-6, far below 0.01 dB) over
            # the elements in memory order, the same order for both tensors
            r, g = dense_flat(ref), dense_flat(got)
            signal = float(torch.dot(r, r))
            d = g - r
            noise = float(torch.dot(d, d))
            if math.isfinite(signal) and math.isfinite(noise):
                self.signal += signal
                self.noise += noise
                self.values += int(r.numel())
                return
        ref, got = ref.double(), got.double()
        ok = torch.isfinite(ref) & torch.isfinite(got)
        if not bool(ok.all()):
            ref, got = ref[ok], got[ok]
        self.signal += float(ref.pow(2).sum())
        self.noise += float((got - ref).pow(2).sum())
        self.values += int(ref.numel())

    @property
    def db(self) -> float:
        return sqnr_db(self.signal, self.noise, self.values)


def sqnr_db(signal: float, noise: float, values: int = 1) -> float:
    """10·log10(signal / noise): inf without noise, -inf for noise on a zero signal."""
    if values == 0:
        return math.nan
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _as_args(batch: object, n_inputs: int, device: torch.device) -> tuple:
    if isinstance(batch, torch.Tensor):
        args = (batch,)
    elif isinstance(batch, (tuple, list)):
        args = tuple(batch)[:max(n_inputs, 1)]
    else:
        raise InputError(f"a report batch must be a tensor or a tuple of tensors, got "
                         f"{type(batch).__name__}", where="layer_report(batches=...)",
                         hint="pass e.g. [x1, x2] or [(x1,), (x2,)]")
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _measured_copy(session: ReportSession) -> nn.Module:
    """A deep copy of the session's model in eval mode with the final parameters (TEST
    numerics): the report switches modes, hooks and parameters on it, never on the session's
    own modules. The copy keeps the session's hooks (its forward counter; a distributed sync
    hook copies itself inert).

    A test-mode session already holds the final parameters. In calib mode they are the ones
    ``export_quant_config()`` wrote (fix positions after the DPU adjustment) plus the bias
    corrections; before any export the running calibration parameters are used."""
    model = copy.deepcopy(session.model)
    if session.mode is QuantMode.CALIB:
        qs = quantizers(model)
        final = _exported_params(session, qs)
        for key, q in qs.items():
            if key in final:
                q.params = final[key]
        for node in session.graph.nodes:
            mod = layer_of(model, node)
            bc = getattr(mod, "bias_corrector", None)
            corr = bc.correction() if bc is not None else None
            if corr is None or mod._modules.get("bias_q") is None:
                continue
            mod.bias_correction = corr.to(mod.bias)
    return model.eval()


def _exported_params(session: ReportSession,
                     qs: dict[str, FakeQuantizer]) -> dict[str, QuantParams | None]:
    """The parameters of ``quant_info.json`` in ``session.output_dir`` when it belongs to this
    graph and covers every quantizer; else {} (use the running parameters)."""
    from ..state.quant_info import graph_md5, read_quant_info
    path = Path(session.output_dir) / QUANT_INFO_FILE
    if not path.is_file():
        log.debug("no %s yet: the report uses the running calibration parameters", path)
        return {}
    try:
        info = read_quant_info(session.output_dir, session.graph)
    except Exception as exc:  # a broken file is reported by the test-mode reader
        log.debug("cannot read %s (%s): using the running calibration parameters", path, exc)
        return {}
    if info.graph_md5 and info.graph_md5 != graph_md5(session.graph):
        return {}
    out: dict[str, QuantParams | None] = {}
    for key, q in qs.items():
        entry = info.param.get(key) or info.output.get(key)
        if entry is None or entry.bit_width != q.spec.bit_width:
            return {}
        if not entry.is_set:
            out[key] = None
        elif isinstance(entry.fix_pos, tuple) or isinstance(entry.scale, tuple):
            out[key] = QuantParams(entry.bit_width, fix_pos=entry.fix_pos, scale=entry.scale,
                                   zero_point=entry.zero_point, float_max=entry.float_max,
                                   axis=q.axis)
        else:
            out[key] = entry
    return out


def _out_q(model: nn.Module, node: Node) -> FakeQuantizer:
    q = quantizer_of(layer_of(model, node), "out_q")
    if q is None:
        raise ValueError(f"{node.name} carries no output quantizer")
    return q


def layer_report(session: ReportSession, batches: Iterable[Any]) -> list[LayerRow]:
    """Compare the quantized and the float model node by node on ``batches``.

    ``session``: a calib- or test-mode ``QuantSession`` (``torch_quantizer(...)._session``);
    ``batches``: tensors, or tuples of the model's forward inputs (extra items such as labels are
    ignored). The measure runs on a copy of the session's model; the session's forward counter
    and kept report batches are restored after.
    """
    batches = list(batches)
    if not batches:
        raise InputError("layer_report needs at least one batch", where="batches=",
                         hint="pass one or two calibration batches")
    graph, model = session.graph, _measured_copy(session)
    carriers = [n for n in graph.nodes if layer_of(model, n)._modules.get("out_q") is not None]
    n_inputs = len(graph.inputs)
    out_acc = {n: _Acc() for n in carriers}
    q_acc = {n: _Acc() for n in carriers}
    float_out: dict[Node, torch.Tensor] = {}
    phase = {"quant": False}

    def out_hook(node: Node) -> Callable[[nn.Module, tuple, object], None]:
        def hook(_mod: nn.Module, _inp: tuple, out: object) -> None:
            if not isinstance(out, torch.Tensor):
                return
            if phase["quant"]:
                ref = float_out.pop(node, None)
                if ref is not None:
                    out_acc[node].add(ref, out)
            else:
                float_out[node] = out.detach().clone()
        return hook

    # the output quantizer may round its input in place: keep a copy of what it is given
    q_in: dict[Node, torch.Tensor] = {}

    def quantizer_pre_hook(node: Node) -> Callable[[nn.Module, tuple], None]:
        # a fused ReLU hands its input to its quantizer, which clamps at 0 (QuantOp._skip): the
        # quantizer's own error is measured against the ReLU's result
        fused = bool(getattr(layer_of(model, node), "relu_fused", False))

        def hook(_mod: nn.Module, inp: tuple) -> None:
            if phase["quant"] and inp and isinstance(inp[0], torch.Tensor):
                x = inp[0].detach()
                q_in[node] = x.clamp_min(0) if fused else x.clone()
        return hook

    def quantizer_hook(node: Node) -> Callable[[nn.Module, tuple, object], None]:
        def hook(_mod: nn.Module, _inp: tuple, out: object) -> None:
            ref = q_in.pop(node, None)
            if phase["quant"] and ref is not None and isinstance(out, torch.Tensor):
                q_acc[node].add(ref, out)
        return hook

    forwards = session.forwards
    kept = getattr(session, "report_batches", None)
    kept_list: list[Any] | None = kept if isinstance(kept, list) else None
    kept_len = len(kept_list) if kept_list is not None else 0
    try:
        for node in carriers:
            layer_of(model, node).register_forward_hook(out_hook(node))
            out_q = _out_q(model, node)
            out_q.register_forward_pre_hook(quantizer_pre_hook(node))
            out_q.register_forward_hook(quantizer_hook(node))
        with torch.no_grad():
            for batch in batches:
                args = _as_args(batch, n_inputs, session.device)
                float_out.clear()
                phase["quant"] = False
                set_mode(model, QuantMode.FLOAT)
                model(*args)
                phase["quant"] = True
                set_mode(model, QuantMode.TEST)
                model(*args)
            weight_db = _weight_sqnr(graph, model)
            rows = _rows(session, model, carriers, out_acc, q_acc, weight_db, len(batches))
    finally:
        float_out.clear()
        q_in.clear()
        session.forwards = forwards
        if kept_list is not None:
            del kept_list[kept_len:]
    return rows


def _weight_sqnr(graph: Graph, model: nn.Module) -> dict[Node, float]:
    out: dict[Node, float] = {}
    for node in graph.nodes:
        mod = layer_of(model, node)
        wq = quantizer_of(mod, "weight_q")
        weight = getattr(mod, "weight", None)
        if wq is None or not isinstance(weight, torch.Tensor):
            continue
        acc = _Acc()
        acc.add(weight, apply_params(weight, wq.params, wq.spec))
        out[node] = acc.db
    return out


def _rows(session: ReportSession, model: nn.Module, carriers: list[Node],
          out_acc: dict[Node, _Acc], q_acc: dict[Node, _Acc], weight_db: dict[Node, float],
          n_batches: int) -> list[LayerRow]:
    from ..graph.ops import MEMORY_ONLY, OpKind
    from ..graph.layer_type import layer_type_of
    placement = session.placement
    db = {n: out_acc[n].db for n in carriers}
    rows = []
    for node in carriers:
        # the layer a carrier ends: its group from the head (conv, add ...) to the carrier
        head = placement.group_of.get(node, node)
        members = placement.members.get(head, [node])
        layer = members[:members.index(node) + 1] if node in members else [node]
        ins: list[TensorQuant | None] = []
        in_db: list[float] = []
        if head.kind is not OpKind.INPUT:
            for p in head.inputs:
                if not p.is_tensor:
                    continue
                src = placement.source_quantizer(p)
                q = quantizer_of(layer_of(model, src), "out_q") if src is not None else None
                ins.append(TensorQuant.of(q) if q is not None else None)
                if src is not None and src in db and not math.isnan(db[src]):
                    in_db.append(db[src])
        hmod = layer_of(model, head)
        wq, bq = quantizer_of(hmod, "weight_q"), quantizer_of(hmod, "bias_q")
        types = [layer_type_of(m) for m in layer if m.kind not in MEMORY_ONLY or m is node]
        rows.append(LayerRow(
            index=node.index, name=node.name, normalized=node.normalized,
            type="+".join(types) or layer_type_of(node), kind=head.kind.value,
            inputs=tuple(ins), weights=TensorQuant.of(wq) if wq is not None else None,
            bias=TensorQuant.of(bq) if bq is not None else None,
            output=TensorQuant.of(_out_q(model, node)), sqnr_db=db[node],
            input_sqnr_db=min(in_db) if in_db else None, quantizer_sqnr_db=q_acc[node].db,
            weight_sqnr_db=weight_db.get(head), values=out_acc[node].values,
            batches=n_batches, layer=head.name, layer_index=head.index))
    return rows


