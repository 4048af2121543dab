"""DPU constraints on fix positions, applied before quant_info.json is written (numerics.md 6).

Forward over the nodes: pad / nearest-resize outputs take their input's fp; conv-like layers keep
``shift_cut = fw + fi - fo`` in [0, 16] and ``shift_bias = fw + fi - fb`` in
[min(0, shift_cut - 16), 16]; hard-sigmoid / hard-swish limits. Each move is logged once."""
from __future__ import annotations

from dataclasses import replace

from .._log import get_logger
from ..graph.ir import Graph
from ..graph.ops import CONV_LIKE, OpKind
from .params import QuantParams
from .placement import Placement

__all__ = ["adjust_fix_positions"]

log = get_logger("quant")


def _fp(params: dict[str, QuantParams], key: str | None) -> int | None:
    p = params.get(key) if key else None
    if p is None or p.fix_pos is None or isinstance(p.fix_pos, tuple):
        return None
    return p.fix_pos


def _set(params, key, fp, why, moves):
    old = params[key].fix_pos
    if old != fp:
        params[key] = replace(params[key], fix_pos=int(fp))
        moves.append(f"{key}: {old} -> {fp} ({why})")


def adjust_fix_positions(graph: Graph, placement: Placement, params: dict[str, QuantParams],
                         ) -> list[str]:
    """Adjust ``params`` (keyed like quant_info: node names and ``Model::param`` names) in place.
    Returns the list of moves made."""
    moves: list[str] = []
    prefix = graph.model_name + "::"
    for node in graph.nodes:
        k = node.kind
        if placement.is_carrier(node) and node.inputs and (
                k is OpKind.PAD or k is OpKind.STRIDED_SLICE
                or k is OpKind.INTERPOLATE and _nearest(node)):
            src = placement.source_quantizer(node.inputs[0])
            fi = _fp(params, src.name if src else None)
            if fi is not None and _fp(params, node.name) is not None:
                _set(params, node.name, fi, "output follows input", moves)
        if k in CONV_LIKE and "weight" in node.param_names:
            wkey = prefix + node.param_names["weight"]
            bkey = prefix + node.param_names["bias"] if "bias" in node.param_names else None
            src = placement.source_quantizer(node.inputs[0]) if node.inputs else None
            out = placement.output_quantizer_of(node)
            fi, fw = _fp(params, src.name if src else None), _fp(params, wkey)
            fo = _fp(params, out.name if out else None)
            if fi is None or fw is None or fo is None or out is None:
                continue
            cut = fw + fi - fo
            if cut < 0:
                fo = fo + cut
                _set(params, out.name, fo, f"shift_cut {cut} < 0", moves)
            elif cut > 16:
                fw = fw - (cut - 16)
                _set(params, wkey, fw, f"shift_cut {cut} > 16", moves)
            fb = _fp(params, bkey)
            if fb is not None:
                sb = fw + fi - fb
                lo = min(0, cut - 16)
                if sb < lo:
                    _set(params, bkey, fb + (sb - lo), f"shift_bias {sb} < {lo}", moves)
                elif sb > 16:
                    _set(params, wkey, fw - (sb - 16), f"shift_bias {sb} > 16", moves)
        if k in (OpKind.HARDSIGMOID, OpKind.HARDSWISH) and node.inputs:
            src = placement.source_quantizer(node.inputs[0])
            fi = _fp(params, src.name if src else None)
            if src is not None and fi is not None and fi < 0:
                _set(params, src.name, 0, f"{k.value} input >= 0", moves)
                fi = 0
            out = placement.output_quantizer_of(node)
            fo = _fp(params, out.name if out else None)
            if out is not None and fo is not None:
                if k is OpKind.HARDSIGMOID and fo < 7:
                    _set(params, out.name, 7, "hard-sigmoid output >= 7", moves)
                if k is OpKind.HARDSWISH and fi is not None and fo > fi + 7:
                    _set(params, out.name, fi + 7, "hard-swish output <= input + 7", moves)
    for m in moves:
        log.warning("[QUANTIZER_TORCH_SHIFT_CHECK] adjusted fix position %s", m)
    return moves


def _nearest(node) -> bool:
    mode = node.kwargs.get("mode")
    if mode is None and node.module is not None:
        mode = getattr(node.module, "mode", "nearest")
    return (mode or "nearest") == "nearest"
