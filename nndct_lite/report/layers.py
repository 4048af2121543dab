"""Per-layer quantization report: how far every quantized node's output is from the float model.

``layer_report(session, batches)`` runs the generated model twice per batch — once in FLOAT mode
and once with the final quantization parameters (TEST numerics) — with a forward hook on every
node that owns an output quantizer, and returns one ``LayerRow`` per such node, in graph order.
``render_markdown`` formats them, ``log_report`` logs the table; ``report.files`` writes
``report.md``, ``report.json`` and, on request, ``report_chart.png``. See docs/reports.md.
"""
from __future__ import annotations

import logging
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import torch
import torch.nn as nn

from .._log import get_logger
from .._text import text_table
from ..calib.base import dense_flat
from ..errors import InputError
from ..graph.ir import Graph, Node
from ..quant.build import layer_of, quantizers, set_mode
from ..quant.fake_quantizer import FakeQuantizer, apply_params, quantizer_of
from ..quant.placement import Placement
from ..numerics.params import QuantParams
from ..state.modes import QuantMode

__all__ = ["LayerRow", "TensorQuant", "ReportSession", "layer_report", "log_report", "format_table",
           "render_markdown", "worst_rows", "short_name", "sqnr_db", "WORST_N"]

log = get_logger("report")

WORST_N = 5


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


# ------------------------------------------------------------------------------- data types
@dataclass(frozen=True)
class TensorQuant:
    """How one tensor is quantized: bit width plus fix position or scale (None: float)."""

    key: str
    bit_width: int
    fix_pos: int | tuple[int, ...] | None = None
    scale: float | tuple[float, ...] | None = None
    zero_point: int | tuple[int, ...] = 0

    @classmethod
    def of(cls, q: FakeQuantizer) -> "TensorQuant":
        p = q.params
        if p is None or not p.is_set:
            return cls(q.key, q.spec.bit_width)
        return cls(q.key, p.bit_width, p.fix_pos, p.scale, p.zero_point)

    @property
    def is_float(self) -> bool:
        return self.fix_pos is None and self.scale is None

    def text(self) -> str:
        """``int8 fp=5``, ``int8 fp=3..7/ch``, ``int8 s=0.0123 z=4``, ``float``."""
        if self.is_float:
            return "float"
        if self.fix_pos is not None:
            return f"int{self.bit_width} fp={_span(self.fix_pos, '{}')}"
        zp = self.zero_point
        z = "" if zp == 0 or isinstance(zp, tuple) and not any(zp) else \
            f" z={_span(zp, '{}')}"
        return f"int{self.bit_width} s={_span(self.scale, '{:.4g}')}{z}"

    def as_dict(self) -> dict:
        plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {"key": self.key, "bit_width": self.bit_width, "fix_pos": plain(self.fix_pos),
                "scale": plain(self.scale), "zero_point": plain(self.zero_point)}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorQuant":
        """The inverse of ``as_dict``."""
        tup = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
        return cls(str(d["key"]), int(d["bit_width"]), tup(d.get("fix_pos")),
                   tup(d.get("scale")), tup(d.get("zero_point", 0)))


def _span(value, fmt: str) -> str:
    if isinstance(value, tuple):
        lo, hi = min(value), max(value)
        return (fmt.format(lo) if lo == hi else f"{fmt.format(lo)}..{fmt.format(hi)}") + "/ch"
    return fmt.format(value)


@dataclass(frozen=True)
class LayerRow:
    """One quantized node (a carrier of an output quantizer).

    ``sqnr_db``: 10·log10(Σf² / Σ(q−f)²) of the node's output in the quantized model (q) against
    the float model (f), over every value of every batch — the error accumulated up to this node.
    ``input_sqnr_db``: the same for the tensor(s) it reads (the lowest, if several), so
    ``drop_db`` is what this node adds. ``quantizer_sqnr_db``: its output quantizer alone
    (rounding + clipping of the value it receives). ``weight_sqnr_db``: Q(W) against W.
    ``inf`` means no error at all; ``nan`` means nothing was compared.
    """

    index: int
    name: str
    normalized: str
    type: str
    kind: str
    inputs: tuple[TensorQuant | None, ...]
    weights: TensorQuant | None
    bias: TensorQuant | None
    output: TensorQuant
    sqnr_db: float
    input_sqnr_db: float | None = None
    quantizer_sqnr_db: float = math.nan
    weight_sqnr_db: float | None = None
    values: int = 0
    batches: int = 0
    layer: str = ""           # the group head (the conv of a conv+relu), for short labels
    layer_index: int = -1

    @property
    def drop_db(self) -> float | None:
        """How many dB this node loses against its input (None when undefined)."""
        if self.input_sqnr_db is None or not math.isfinite(self.sqnr_db) \
                or math.isnan(self.input_sqnr_db):
            return None
        if math.isinf(self.input_sqnr_db):
            return math.inf
        return self.input_sqnr_db - self.sqnr_db

    @property
    def short(self) -> str:
        """A short label for charts: ``layer1.0.conv1 #5`` (the layer's module path)."""
        if self.layer:
            return short_name(self.layer, self.layer_index, self.type.split("+")[0])
        return short_name(self.name, self.index, self.type)

    def bit_widths(self) -> dict[str, int | None]:
        ins = [t.bit_width for t in self.inputs if t is not None]
        return {"input": ins[0] if ins else None,
                "weights": self.weights.bit_width if self.weights else None,
                "bias": self.bias.bit_width if self.bias else None,
                "output": self.output.bit_width}

    def as_dict(self) -> dict:
        num = lambda v: None if v is None else (  # noqa: E731
            str(v) if isinstance(v, float) and not math.isfinite(v) else round(v, 4))
        return {"index": self.index, "name": self.name, "normalized": self.normalized,
                "type": self.type, "kind": self.kind,
                "inputs": [t.as_dict() if t else None for t in self.inputs],
                "weights": self.weights.as_dict() if self.weights else None,
                "bias": self.bias.as_dict() if self.bias else None,
                "output": self.output.as_dict(), "sqnr_db": num(self.sqnr_db),
                "input_sqnr_db": num(self.input_sqnr_db), "drop_db": num(self.drop_db),
                "quantizer_sqnr_db": num(self.quantizer_sqnr_db),
                "weight_sqnr_db": num(self.weight_sqnr_db), "values": self.values,
                "batches": self.batches, "layer": self.layer, "layer_index": self.layer_index}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerRow":
        """The inverse of ``as_dict`` (SQNRs rounded to 1e-4 dB there; ``drop_db`` derived)."""
        def num(v, none_ok=True):
            if v is None:
                return None if none_ok else math.nan
            return float(v)          # float("inf"), float("nan") read the strings back
        tq = lambda v: TensorQuant.from_dict(v) if v else None  # noqa: E731
        return cls(index=int(d["index"]), name=str(d["name"]), normalized=str(d["normalized"]),
                   type=str(d["type"]), kind=str(d["kind"]),
                   inputs=tuple(tq(t) for t in d.get("inputs", [])), weights=tq(d.get("weights")),
                   bias=tq(d.get("bias")), output=TensorQuant.from_dict(d["output"]),
                   sqnr_db=num(d.get("sqnr_db"), False), input_sqnr_db=num(d.get("input_sqnr_db")),
                   quantizer_sqnr_db=num(d.get("quantizer_sqnr_db"), False),
                   weight_sqnr_db=num(d.get("weight_sqnr_db")), values=int(d.get("values", 0)),
                   batches=int(d.get("batches", 0)), layer=str(d.get("layer", "")),
                   layer_index=int(d.get("layer_index", -1)))


_SCOPE_PART = re.compile(r"\[([^\]]+)\]")


def short_name(name: str, index: int | None = None, type: str | None = None) -> str:
    """``ResNet::ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/ret.5`` ->
    ``layer1.0.conv1 #5``; a functional op gets its type: ``layer1.0 add #12``."""
    body = name.split("::", 1)[-1]
    scope, _, last = body.rpartition("/")
    if not scope:                       # input_0
        return last
    path = ".".join(_SCOPE_PART.findall(scope))
    if index is None:
        m = re.fullmatch(r"ret\.(\d+)", last)
        index = int(m.group(1)) if m else None
    functional = type if type and type[:1].islower() else None
    label = " ".join(p for p in (path, functional) if p) or last
    return f"{label} #{index}" if index is not None else label


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


@contextmanager
def _final_numerics(session: ReportSession) -> Iterator[None]:
    """Install the final parameters (TEST numerics) for the duration, then restore everything.

    A test-mode session already holds them. In calib mode they are the ones
    ``export_quant_config()`` wrote (fix positions after the DPU adjustment) plus the bias
    corrections; before any export the running calibration parameters are used."""
    model: nn.Module = session.model
    qs = quantizers(model)
    saved_params = {k: q.params for k, q in qs.items()}
    saved_bc: list[tuple[nn.Module, torch.Tensor | None, bool]] = []
    if session.mode is QuantMode.CALIB:
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
            had = "bias_correction" in mod.__dict__
            saved_bc.append((mod, mod.__dict__.get("bias_correction"), had))
            mod.bias_correction = corr.to(mod.bias)
    try:
        yield
    finally:
        for key, q in qs.items():
            q.params = saved_params[key]
        for mod, old, had in saved_bc:
            if had:
                mod.__dict__["bias_correction"] = old
            else:
                del mod.__dict__["bias_correction"]


def _exported_params(session: ReportSession,
                     qs: dict[str, FakeQuantizer]) -> dict[str, QuantParams | None]:
    """The parameters of ``quant_info.json`` in ``session.output_dir`` when it belongs to this
    graph and covers every quantizer; else {} (use the running parameters)."""
    from ..state.quant_info import graph_md5, read_quant_info
    path = Path(session.output_dir) / "quant_info.json"
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


@contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _out_q(model: nn.Module, node: Node) -> FakeQuantizer:
    q = quantizer_of(layer_of(model, node), "out_q")
    if q is None:
        raise ValueError(f"{node.name} carries no output quantizer")
    return q


def layer_report(session: ReportSession, batches: Iterable[Any]) -> list[LayerRow]:
    """Compare the quantized and the float model node by node on ``batches``.

    ``session``: a calib- or test-mode ``QuantSession`` (``torch_quantizer(...)._session``);
    ``batches``: tensors, or tuples of the model's forward inputs (extra items such as labels are
    ignored). The session's modes, parameters, counters and training flags are restored after.
    """
    batches = list(batches)
    if not batches:
        raise InputError("layer_report needs at least one batch", where="batches=",
                         hint="pass one or two calibration batches")
    graph, model = session.graph, session.model
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

    handles = []
    forwards = session.forwards
    kept = getattr(session, "report_batches", None)
    kept_list: list[Any] | None = kept if isinstance(kept, list) else None
    kept_len = len(kept_list) if kept_list is not None else 0
    try:
        for node in carriers:
            mod = layer_of(model, node)
            handles.append(mod.register_forward_hook(out_hook(node)))
            out_q = _out_q(model, node)
            handles.append(out_q.register_forward_pre_hook(quantizer_pre_hook(node)))
            handles.append(out_q.register_forward_hook(quantizer_hook(node)))
        with _eval_no_grad(model), _final_numerics(session):
            for batch in batches:
                args = _as_args(batch, n_inputs, session.device)
                float_out.clear()
                phase["quant"] = False
                set_mode(model, QuantMode.FLOAT)
                model(*args)
                phase["quant"] = True
                set_mode(model, QuantMode.TEST)
                model(*args)
            weight_db = _weight_sqnr(session)
            rows = _rows(session, carriers, out_acc, q_acc, weight_db, len(batches))
    finally:
        for h in handles:
            h.remove()
        float_out.clear()
        q_in.clear()
        set_mode(model, session.mode)
        session.forwards = forwards
        if kept_list is not None:
            del kept_list[kept_len:]
    return rows


def _weight_sqnr(session: ReportSession) -> dict[Node, float]:
    out: dict[Node, float] = {}
    for node in session.graph.nodes:
        mod = layer_of(session.model, node)
        wq = quantizer_of(mod, "weight_q")
        weight = getattr(mod, "weight", None)
        if wq is None or not isinstance(weight, torch.Tensor):
            continue
        acc = _Acc()
        acc.add(weight, apply_params(weight, wq.params, wq.spec))
        out[node] = acc.db
    return out


def _rows(session: ReportSession, carriers: list[Node], out_acc: dict[Node, _Acc],
          q_acc: dict[Node, _Acc], weight_db: dict[Node, float],
          n_batches: int) -> list[LayerRow]:
    from ..graph.ops import MEMORY_ONLY, OpKind
    from ..graph.layer_type import layer_type_of
    model, placement = session.model, session.placement
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


# ------------------------------------------------------------------------------- rendering
def worst_rows(rows: Sequence[LayerRow], n: int = WORST_N) -> list[LayerRow]:
    """The ``n`` rows with the lowest finite (or -inf) SQNR, worst first."""
    scored = [r for r in rows if not math.isnan(r.sqnr_db) and r.sqnr_db != math.inf]
    return sorted(scored, key=lambda r: (r.sqnr_db, r.index))[:n]


def fmt_db(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.1f}"


_HEADERS = ("#", "node", "type", "input", "weights", "bias", "output", "SQNR dB", "drop dB",
            "quantizer dB", "weights dB")


def _cells(r: LayerRow) -> list[str]:
    ins = ", ".join(t.text() if t is not None else "float" for t in r.inputs) or "-"
    return [str(r.index), r.name, r.type, ins, r.weights.text() if r.weights else "",
            r.bias.text() if r.bias else "", r.output.text(), fmt_db(r.sqnr_db),
            fmt_db(r.drop_db), fmt_db(r.quantizer_sqnr_db), fmt_db(r.weight_sqnr_db)]


def format_table(rows: Sequence[LayerRow]) -> str:
    """A plain-text table (the one ``log_report`` logs)."""
    return "\n".join(text_table(_HEADERS, [_cells(r) for r in rows]))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def model_name(rows: Sequence[LayerRow]) -> str:
    return rows[0].name.split("::", 1)[0] if rows and "::" in rows[0].name else "model"


def render_markdown(rows: Sequence[LayerRow], *, worst: int = WORST_N) -> str:
    """The text of ``report.md``."""
    model = model_name(rows)
    bad = worst_rows(rows, worst)
    rank = {r.index: i + 1 for i, r in enumerate(bad)}
    batches = max((r.batches for r in rows), default=0)
    lines = [f"# Quantization report: {model}", ""]
    if not rows:
        lines += ["No node of this model carries an output quantizer: nothing was measured.", ""]
        return "\n".join(lines)
    lines += [
        f"{len(rows)} quantized node(s), measured on {batches} batch(es): the model ran once "
        "in float and once with the final quantization parameters.",
        "",
        "- **SQNR dB**: signal-to-quantization-noise ratio of the node's output, quantized "
        "model against float model, `10·log10(Σf² / Σ(q−f)²)`; it includes the error of every "
        "layer before it. Higher is better: about 6 dB per bit, so 8-bit layers typically "
        "show 20–40 dB; `inf` means no error.",
        "- **drop dB**: SQNR of the node's input minus SQNR of its output, the share this "
        "node adds.",
        "- **quantizer dB**: the node's output quantizer alone (rounding and clipping of the "
        "value it receives); a low value with a large drop points at its fix position or "
        "scale.",
        "- **weights dB**: quantized weights against float weights.",
        f"- the {len(bad)} worst nodes by SQNR are in **bold** and listed again at the end.",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "|".join("---:" if h in ("#",) or h.endswith("dB") else "---"
                       for h in _HEADERS) + "|",
    ]
    for r in rows:
        cells = [_md_escape(c) for c in _cells(r)]
        cells[1] = f"`{cells[1]}`"
        if r.index in rank:
            cells[1] = f"**{cells[1]}**"
            cells[7] = f"**{cells[7]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"## Worst {len(bad)}", ""]
    if not bad:
        lines.append("Every measured node is exact (SQNR inf).")
    for i, r in enumerate(bad, 1):
        drop = "" if r.drop_db is None else f", drop {fmt_db(r.drop_db)} dB"
        lines.append(f"{i}. `{_md_escape(r.name)}` ({r.type}): "
                     f"SQNR {fmt_db(r.sqnr_db)} dB{drop}, "
                     f"quantizer {fmt_db(r.quantizer_sqnr_db)} dB, output {r.output.text()}")
    lines += ["", "To keep a layer at higher precision, give it a `layer_name` rule in the "
              "quantization config (see docs/config.md), e.g. `\"overall_quantize_config\": "
              "{\"bit_width\": 16}`.", ""]
    return "\n".join(lines)


def log_report(rows: Sequence[LayerRow], *, worst: int = WORST_N) -> None:
    """Log the per-layer table (and the worst nodes) at INFO on ``nndct_lite.report``."""
    if not log.isEnabledFor(logging.INFO):
        return
    bad = worst_rows(rows, worst)
    summary = ", ".join(f"{r.short} {fmt_db(r.sqnr_db)} dB" for r in bad) or "none"
    log.info("per-layer quantization report, %d node(s); worst: %s\n%s", len(rows), summary,
             format_table(rows))
