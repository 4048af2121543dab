"""The report's data: ``TensorQuant`` (how one tensor is quantized) and ``LayerRow`` (one
measured node), with their JSON forms, and ``short_name`` for node names."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..quant.fake_quantizer import FakeQuantizer

__all__ = ["TensorQuant", "LayerRow", "short_name"]


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


