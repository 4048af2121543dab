"""Cross-layer equalization (numerics.md 9; Nagel et al. 2019, data-free quantization).

Pairs of conv-like layers joined by ReLU / pooling are rescaled channel by channel so that both
layers' per-channel ranges meet in the middle. The float function is unchanged (ReLU and pooling
commute with positive per-channel scales)."""
from __future__ import annotations

import numpy as np
import torch

from .._log import get_logger
from ..graph.ir import Graph, Node
from ..graph.ops import OpKind

__all__ = ["find_cle_pairs", "equalize_pair", "cross_layer_equalize", "bias_shrink_factor"]

log = get_logger("algorithms")

_CHAIN = {OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.CONV_TRANSPOSE2D, OpKind.CONV3D}
_PASS = {OpKind.RELU, OpKind.MAXPOOL2D, OpKind.AVGPOOL2D, OpKind.ADAPTIVE_AVGPOOL2D}


def find_cle_pairs(graph: Graph) -> list[tuple[Node, Node]]:
    """(conv_a, conv_b) pairs in graph order: conv_a's single path through ReLU/pool reaches conv_b."""
    pairs = []
    for a in graph.nodes:
        if a.kind not in _CHAIN or a.module is None or len(a.users) != 1:
            continue
        cur = a.users[0]
        while cur.kind in _PASS and len(cur.users) == 1 and len(cur.inputs) == 1:
            cur = cur.users[0]
        if cur.kind in _CHAIN and cur.module is not None and len(cur.inputs) == 1:
            pairs.append((a, cur))
    return pairs


def bias_shrink_factor(w: torch.Tensor, b: torch.Tensor) -> float:
    """The factor ``k`` that divides conv_a's bias column before taking channel ranges.

    ``f = |b_i| / |w_ij|`` over the layer's weight matrix (zeros replaced by the row's smallest
    non-zero magnitude, magnitudes floored at 1e-7, an all-zero row's bias taken as 0, so its
    entries count as f = 0); its median (numpy
    rule: mean of the two middle values) and mean pick k (numerics.md 9.2)."""
    w2 = w.reshape(w.shape[0], -1).abs()
    live = (w2 > 0).any(dim=1)
    ab = torch.where(live, b.abs(), torch.zeros_like(b))  # an all-zero row counts as f = 0
    row_min = torch.where(w2 > 0, w2, torch.full_like(w2, float("inf"))).amin(dim=1, keepdim=True)
    f_w = torch.where(w2 == 0, row_min, w2)
    f_w = torch.where(torch.isinf(f_w), torch.ones_like(f_w), f_w).clamp(min=1e-7)
    f = (ab.reshape(-1, 1) / f_w).double().cpu().numpy()
    med = float(np.median(f)) if f.size else 0.0
    mean = float(f.mean()) if f.size else 0.0
    bmax, wmax = float(b.abs().max()), float(w2.max())
    if bmax < 10 and (wmax == 0 or bmax / wmax < 20):
        return 5.0 if (med > 100 or mean > 1000) else 2.0
    if med > 30 or mean > 500:
        return 20.0
    if med > 15 or mean > 100:
        return 10.0
    return 5.0


def _out_axis(node: Node) -> int:
    return 1 if node.kind is OpKind.CONV_TRANSPOSE2D else 0


def _rows(w: torch.Tensor, axis: int) -> torch.Tensor:
    return w.transpose(0, axis).reshape(w.shape[axis], -1) if axis else w.reshape(w.shape[0], -1)


def _groups(b: Node) -> int:
    """The ``groups`` of conv ``b``'s module."""
    groups = getattr(b.module, "groups", None)
    if not isinstance(groups, int):
        raise ValueError(f"{b.name}: a convolution module without an integer 'groups'")
    return groups


def _input_ranges(b: Node, channels: int) -> torch.Tensor:
    """max |W_b| over every weight of conv_b that reads input channel i."""
    w = b.params["weight"].abs()
    if b.kind is OpKind.CONV_TRANSPOSE2D:
        return w.reshape(w.shape[0], -1).amax(dim=1)
    groups = _groups(b)
    per_group_in = w.shape[1]
    out_per_group = w.shape[0] // groups
    # [groups, out_per_group, per_group_in, k...] -> max over outputs and kernel per input channel
    grouped = w.reshape(groups, out_per_group, per_group_in, -1)
    return grouped.amax(dim=(1, 3)).reshape(channels)


def _scale_input_channels(b: Node, s: torch.Tensor) -> None:
    w = b.params["weight"]
    if b.kind is OpKind.CONV_TRANSPOSE2D:
        b.params["weight"] = w * s.reshape([-1] + [1] * (w.dim() - 1))
        return
    groups = _groups(b)
    per_group_in = w.shape[1]
    out_per_group = w.shape[0] // groups
    scale = s.reshape(groups, 1, per_group_in, *([1] * (w.dim() - 2)))
    b.params["weight"] = (w.reshape(groups, out_per_group, per_group_in, *w.shape[2:])
                          * scale).reshape(w.shape)


def _transposed_groups(a: Node) -> int:
    return int(getattr(a.module, "groups", 1) or 1) if a.kind is OpKind.CONV_TRANSPOSE2D else 1


def _output_rows(a: Node, wa: torch.Tensor) -> torch.Tensor:
    """conv_a's weights as one row per output channel. A grouped transposed conv stores
    ``[in, out/groups, k...]``: output channel ``g*out/groups + j`` reads rows ``g`` of dim 0."""
    g = _transposed_groups(a)
    if g == 1:
        return _rows(wa, _out_axis(a))
    ipg, opg = wa.shape[0] // g, wa.shape[1]
    return wa.reshape(g, ipg, opg, -1).permute(0, 2, 1, 3).reshape(g * opg, -1)


def _divide_outputs(a: Node, wa: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    g = _transposed_groups(a)
    if g == 1:
        shape = [1] * wa.dim()
        shape[_out_axis(a)] = -1
        return wa / s.reshape(shape)
    ipg, opg = wa.shape[0] // g, wa.shape[1]
    view = wa.reshape(g, ipg, opg, *wa.shape[2:])
    return (view / s.reshape(g, 1, opg, *([1] * (wa.dim() - 2)))).reshape(wa.shape)


def equalize_pair(a: Node, b: Node) -> torch.Tensor:
    """Equalize one pair in place (on ``node.params``); returns the scales ``s``."""
    wa = a.params["weight"]
    rows = _output_rows(a, wa)
    ra = rows.abs().amax(dim=1)
    bias = a.params.get("bias")
    if bias is not None:
        k = bias_shrink_factor(rows, bias)
        ra = torch.maximum(ra, bias.abs() / k)
    rb = _input_ranges(b, ra.numel())
    prod = ra * rb
    s = torch.where(prod > 0, ra / torch.sqrt(prod), torch.ones_like(ra))
    s = torch.where(ra + rb < 0.5, torch.ones_like(s), s)
    a.params["weight"] = _divide_outputs(a, wa, s)
    if bias is not None:
        a.params["bias"] = bias / s
    _scale_input_channels(b, s)
    return s


def cross_layer_equalize(graph: Graph) -> list[tuple[str, str]]:
    """One pass over every pair, in graph order. Returns the pairs' names."""
    pairs = find_cle_pairs(graph)
    for a, b in pairs:
        equalize_pair(a, b)
    if pairs:
        log.info("cross-layer equalization over %d layer pairs", len(pairs))
    return [(a.name, b.name) for a, b in pairs]
