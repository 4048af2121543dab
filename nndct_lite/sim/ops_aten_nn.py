"""CPU ops of network layers, by framework name: ``layer_norm`` / ``layernorm``,
``group_norm``, ``scaled_dot_product_attention`` and the identities of eval mode
(``stochastic_depth``, ``identity``, ``drop_path``) and float casts (``float``, ``to``,
``type_as``).

Like the other CPU ops (``ops_aten``) they see the tensors in the framework's layout. They read
their tensors from ``input`` in torch argument order; the ``input_args`` attribute, when
present, names the torch argument of each input (our exporter writes it; without it the inputs
are taken positionally). Parameters are attributes named like the torch arguments:
``layer_norm`` ``normalized_shape`` (default: the weight's shape, else the last dim) and ``eps``
(1e-5); ``group_norm`` ``num_groups`` (required) and ``eps``;
``scaled_dot_product_attention`` ``scale`` (1/sqrt(E)) and ``is_causal`` (False),
``dropout_p`` ignored (eval); an ``attn_mask`` input is added (a float mask: 0 or -inf).
"""
from __future__ import annotations

import math

import numpy as np

from .ophelp import float_result, one
from .ops_cpu import softmax_axis
from .registry import register_cpu
from .values import SimError, Value

__all__ = ["named_inputs"]


def named_inputs(op, ins, default: tuple[str, ...]) -> dict[str, Value]:
    """The op's inputs by torch argument name (``input_args``, else ``default`` in order)."""
    vals = list(ins.get("input", []))
    names = op.attr("input_args")
    if names is None or len(names) != len(vals):
        if len(vals) > len(default):
            raise SimError(f"op {op.name!r} ({op.type}): {len(vals)} inputs, at most "
                           f"{len(default)} expected ({', '.join(default)})")
        names = default[:len(vals)]
    out: dict[str, Value] = {}
    for n, v in zip(names, vals):
        out.setdefault(str(n), v)
    if "input" not in out and default and default[0] in out:
        out["input"] = out[default[0]]
    if "input" not in out:
        raise SimError(f"op {op.name!r} ({op.type}): no input tensor")
    return out


def _float_attr(op, name: str, default: float | None) -> float | None:
    v = op.attr(name)
    return default if v is None else float(v)


def _affine(y: np.ndarray, args: dict[str, Value], shape) -> np.ndarray:
    w, b = args.get("weight"), args.get("bias")
    if w is not None:
        y = y * w.values().reshape(shape)
    if b is not None:
        y = y + b.values().reshape(shape)
    return y


@register_cpu("layer_norm", "layernorm")
def _layer_norm(ctx, op, ins):
    args = named_inputs(op, ins, ("input", "weight", "bias"))
    x = args["input"]
    a = x.values()
    ns = op.attr("normalized_shape")
    if ns is None:
        w = args.get("weight")
        ns = tuple(w.values().shape) if w is not None else (a.shape[-1],)
    ns = (int(ns),) if isinstance(ns, (int, np.integer)) else tuple(int(d) for d in ns)
    if tuple(a.shape[a.ndim - len(ns):]) != ns:
        raise SimError(f"op {op.name!r} ({op.type}): normalized_shape {list(ns)} does not end "
                       f"the input shape {list(a.shape)}")
    axes = tuple(range(a.ndim - len(ns), a.ndim))
    mu = a.mean(axis=axes, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (a - mu) / np.sqrt(var + _float_attr(op, "eps", 1e-5))
    return float_result(op, _affine(y, args, ns), *args.values())


@register_cpu("group_norm", "groupnorm")
def _group_norm(ctx, op, ins):
    args = named_inputs(op, ins, ("input", "weight", "bias"))
    a = args["input"].values()
    g = op.attr("num_groups")
    if g is None:
        raise SimError(f"op {op.name!r} ({op.type}): a CPU group_norm needs 'num_groups'")
    g, c = int(g), a.shape[1]
    if c % g:
        raise SimError(f"op {op.name!r}: {c} channels are not divisible into {g} groups")
    r = a.reshape(a.shape[0], g, -1)
    mu = r.mean(axis=2, keepdims=True)
    var = ((r - mu) ** 2).mean(axis=2, keepdims=True)
    y = ((r - mu) / np.sqrt(var + _float_attr(op, "eps", 1e-5))).reshape(a.shape)
    shape = (c,) + (1,) * (a.ndim - 2)
    return float_result(op, _affine(y, args, shape), *args.values())


@register_cpu("scaled_dot_product_attention")
def _sdpa(ctx, op, ins):
    args = named_inputs(op, ins, ("query", "key", "value", "attn_mask"))
    q = args.get("query", args["input"]).values()
    k, v = args.get("key"), args.get("value")
    if k is None or v is None:
        raise SimError(f"op {op.name!r} ({op.type}): needs query, key and value inputs")
    kv, vv = k.values(), v.values()
    scale = _float_attr(op, "scale", None)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(kv, -1, -2)) * scale
    if bool(op.attr("is_causal", False)):
        lq, lk = s.shape[-2], s.shape[-1]
        s = np.where(np.tril(np.ones((lq, lk), dtype=bool)), s, -np.inf)
    m = args.get("attn_mask")
    if m is not None:
        s = s + m.values()
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.matmul(softmax_axis(s, -1), vv)
    return float_result(op, y, *args.values())


@register_cpu("stochastic_depth", "stochasticdepth", "drop_path", "droppath", "identity",
              "float", "to", "type_as")
def _identity(ctx, op, ins):
    """Eval-mode identities and casts between float types (``x.float()``, ``x.to(dtype)``):
    the input value itself (exact when it is; the simulator computes float in float64)."""
    v = one(ins)
    if v is None:
        raise SimError(f"op {op.name!r} ({op.type}): no input")
    return v
