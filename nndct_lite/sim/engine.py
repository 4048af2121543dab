"""The simulator: runs an :class:`~nndct_lite.xmodel.XGraph` on numpy inputs.

Ops whose inputs are all constants (weights and their ``fix`` ops, shape constants) are evaluated
once when the :class:`Simulator` is built; each ``run`` then executes the remaining ops in graph
order, in batches, dropping intermediate values as soon as their last consumer has run.

Batch: the xmodel's ``data`` op has a stored batch (1 for quantizer exports). Inputs may have any
batch size N; every op treats axis 0 as the batch axis, and shape targets (reshape) whose first
entry equals the stored batch get N instead.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from nndct_lite.errors import NndctError
from nndct_lite.xmodel.model import XGraph, XOp, numpy_dtype_of
from nndct_lite.xmodel.reader import read_xmodel

from .opimpl import resolve
from .registry import Impl, unsupported_error
from .values import Fixed, Floating, SimError, Value, requantize

__all__ = ["Simulator", "simulate", "load_graph"]

_INPUT_TYPES = ("data", "data-fix")


def load_graph(graph: XGraph | str | os.PathLike) -> XGraph:
    return graph if isinstance(graph, XGraph) else read_xmodel(graph)


class _Ctx:
    def __init__(self, sim: "Simulator", batch: int):
        self.sim = sim
        self.batch = batch
        self.graph_batch = sim.graph_batch

    def batch_fix(self, target: list[int]) -> list[int]:
        t = list(target)
        if t and self.batch != self.graph_batch and t[0] == self.graph_batch:
            t[0] = self.batch
        return t

    def stored_shape(self, name: str) -> tuple[int, ...] | None:
        op = self.sim.graph.op(name)
        return op.output.shape if op.output is not None else None

    def stored_input_shape(self, op: XOp, arg: str = "input") -> tuple[int, ...] | None:
        names = op.inputs.get(arg) or []
        return self.stored_shape(names[0]) if names else None

    def out_hw(self, op: XOp, in_shape) -> tuple[int, int]:
        """Spatial output size of a resize: the stored output dims, else ``scale`` {w, h}."""
        if op.output is not None and len(op.output.shape) == 4:
            return op.output.shape[1], op.output.shape[2]
        sc = op.attr("scale")
        if sc and len(sc) >= 2:
            return int(round(in_shape[1] * sc[1])), int(round(in_shape[2] * sc[0]))
        raise SimError(f"op {op.name!r}: cannot tell the resize output size")


class Simulator:
    """Integer reference simulator of an xmodel (see ``docs/xmodel.md``).

    >>> sim = Simulator("model.xmodel")                  # doctest: +SKIP
    >>> logits = sim.run(images_nchw)[sim.outputs[0]]    # doctest: +SKIP

    ``check_shapes``: compare every simulated output shape with the stored tensor dims (batch
    axis excepted) and raise :class:`SimError` on a mismatch.
    """

    def __init__(self, graph: XGraph | str | os.PathLike, *, check_shapes: bool = True):
        self.graph = load_graph(graph)
        self.check_shapes = check_shapes
        errs = self.graph.topo_errors()
        if errs:
            raise SimError("the graph is not in topological order: " + errs[0])
        self._impl: dict[str, Impl] = {}
        missing = []
        for op in self.graph:
            if op.type in _INPUT_TYPES:
                continue
            fn = resolve(op)
            if fn is None:
                missing.append(op)
                continue
            self._impl[op.name] = fn
        if missing:
            raise unsupported_error(missing)
        ins = self.graph.input_ops()
        if not ins:
            raise SimError("the graph has no data op")
        self.inputs: list[str] = [op.name for op in ins]
        self.outputs: list[str] = [op.name for op in self.graph.output_ops()]
        self.graph_batch = ins[0].shape[0] if ins[0].shape else 1
        #: ops executed in float (not fixed-point) during the last run
        self.float_ops: list[str] = []
        self._const: dict[str, Value] = {}
        ctx = _Ctx(self, self.graph_batch)
        for op in self.graph:
            if op.type in _INPUT_TYPES:
                continue
            names = op.input_names()
            if all(n in self._const for n in names):
                v = self._exec(ctx, op, self._const)
                self._check(ctx, op, v, folded=True)
                self._const[op.name] = v
        self._plan = [op for op in self.graph if op.name not in self._const
                      and op.type not in _INPUT_TYPES]
        #: ops whose leading dim is not the batch (``x.reshape(B * C, ...)``, a transpose that
        #: moves the batch axis): such a graph runs ``graph_batch`` samples at a time, as the
        #: DPU does
        self.batch_folding = [op.name for op in self._plan
                              if op.output is not None and op.output.shape
                              and op.output.shape[0] != self.graph_batch]

    # -- execution ----------------------------------------------------------------------------
    def _exec(self, ctx, op: XOp, env: Mapping[str, Value]) -> Value:
        ins: dict[str, list[Value]] = {}
        for arg, names in op.inputs.items():
            try:
                ins[arg] = [env[n] if n in env else self._const[n] for n in names]
            except KeyError as e:
                raise SimError(f"op {op.name!r}: input {e.args[0]!r} has no value") from None
        try:
            return self._impl[op.name](ctx, op, ins)
        except NndctError:
            raise
        except Exception as e:  # numpy errors etc.: say which op failed
            raise SimError(f"op {op.name!r} ({op.type}) failed: {type(e).__name__}: {e}",
                           where=op.name) from e

    def _check(self, ctx, op: XOp, v: Value, folded: bool) -> None:
        if not self.check_shapes or op.output is None:
            return
        stored = tuple(op.output.shape)
        expect = stored
        if not folded and stored and stored[0] == self.graph_batch:
            expect = (ctx.batch,) + stored[1:]
        if tuple(v.shape) != expect and not (stored == () and v.shape in ((), (1,))):
            raise SimError(f"op {op.name!r} ({op.type}): simulated shape {list(v.shape)} differs "
                           f"from the stored output dims {list(stored)} (expected {list(expect)})",
                           where=op.name,
                           hint="the xmodel is inconsistent, or pass check_shapes=False")

    def _prepare_inputs(self, inputs, layout: str) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            given = dict(inputs)
        elif isinstance(inputs, (list, tuple)) and not isinstance(inputs, np.ndarray) \
                and len(inputs) == len(self.inputs) and all(hasattr(a, "shape") for a in inputs):
            given = dict(zip(self.inputs, inputs))
        else:
            if len(self.inputs) != 1:
                raise SimError(f"the graph has {len(self.inputs)} inputs {self.inputs}; pass a dict")
            given = {self.inputs[0]: inputs}
        out = {}
        for name in self.inputs:
            if name not in given:
                raise SimError(f"no value for input {name!r}")
            x = given[name]
            if hasattr(x, "detach"):  # torch tensor
                x = x.detach().cpu().numpy()
            x = np.asarray(x)
            # the values the deployed model would see: cast to the data op's declared type
            # (float32 for quantizer exports), then computed on exactly
            dt = numpy_dtype_of(self.graph.op(name).attr("data_type", "float32") or "float32")
            if dt is not None and dt.kind == "f":
                x = x.astype(dt.newbyteorder("="))
            out[name] = self._to_stored_layout(name, x.astype(np.float64), layout)
        extra = set(given) - set(self.inputs)
        if extra:
            raise SimError(f"unknown input name(s) {sorted(extra)}; inputs are {self.inputs}")
        return out

    def _to_stored_layout(self, name: str, x: np.ndarray, layout: str) -> np.ndarray:
        stored = self.graph.op(name).shape
        if x.ndim == len(stored) - 1:
            x = x[None]
        if x.ndim != len(stored):
            raise SimError(f"input {name!r}: got rank {x.ndim}, the xmodel expects {list(stored)}")
        if x.ndim != 4:
            if tuple(x.shape[1:]) != tuple(stored[1:]):
                raise SimError(f"input {name!r}: shape {list(x.shape)} does not match {list(stored)}")
            return x
        h, w, c = stored[1:]
        nhwc_ok = tuple(x.shape[1:]) == (h, w, c)
        nchw_ok = tuple(x.shape[1:]) == (c, h, w)
        lay = layout.upper()
        if lay == "AUTO":
            if nhwc_ok and nchw_ok and (h, w, c) != (c, h, w):
                raise SimError("internal layout ambiguity")
            if nhwc_ok and nchw_ok:
                lay = "NHWC"  # H == W == C: both readings coincide only if the user meant NHWC
                if not (h == w == c):
                    raise SimError(f"input {name!r}: ambiguous layout; pass layout='NCHW' or 'NHWC'")
            elif nhwc_ok:
                lay = "NHWC"
            elif nchw_ok:
                lay = "NCHW"
            else:
                raise SimError(f"input {name!r}: shape {list(x.shape)} is neither NHWC {[h, w, c]} "
                               f"nor NCHW {[c, h, w]} of the stored {list(stored)}")
        if lay == "NCHW":
            if not nchw_ok:
                raise SimError(f"input {name!r}: NCHW shape {list(x.shape)} does not match {[c, h, w]}")
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if lay == "NHWC":
            if not nhwc_ok:
                raise SimError(f"input {name!r}: NHWC shape {list(x.shape)} does not match {[h, w, c]}")
            return x
        raise SimError(f"layout must be 'auto', 'NCHW' or 'NHWC', got {layout!r}")

    def _run_batch(self, feeds: dict[str, np.ndarray], wanted: Sequence[str]) -> dict[str, Value]:
        n = next(iter(feeds.values())).shape[0]
        ctx = _Ctx(self, n)
        env: dict[str, Value] = {k: self._feed(k, v) for k, v in feeds.items()}
        wanted_set = set(wanted)
        last_use: dict[str, int] = {}
        for i, op in enumerate(self._plan):
            for nm in op.input_names():
                last_use[nm] = i
        results: dict[str, Value] = {k: env[k] for k in wanted if k in env}
        for k in wanted:
            if k in self._const:
                results[k] = self._const[k]
        floats = []
        for i, op in enumerate(self._plan):
            v = self._exec(ctx, op, env)
            self._check(ctx, op, v, folded=False)
            if isinstance(v, Floating) and op.name in v.inexact:
                floats.append(op.name)
            env[op.name] = v
            if op.name in wanted_set:
                results[op.name] = v
            for nm in set(op.input_names()):
                if last_use.get(nm) == i and nm not in wanted_set:
                    env.pop(nm, None)
        self.float_ops = floats
        return results

    def _feed(self, name: str, x: np.ndarray) -> Value:
        """A fed input: float values, or for a ``data-fix`` op with a ``fix_point`` tensor
        attribute (compiled xmodels) the codes the DPU would receive."""
        op = self.graph.op(name)
        t = op.output
        if op.type == "data-fix" and t is not None and "fix_point" in t.attrs:
            fp = int(t.attrs["fix_point"].value)
            bw = t.bit_width if t.bit_width < 32 else 8
            return Fixed(requantize(Floating(x), fp, bw, True, "DPU_ROUND"), fp, 1, (bw, True))
        return Floating(x)

    def run_values(self, inputs, *, layout: str = "auto", batch_size: int | None = 100,
                   outputs: Iterable[str] | None = None) -> dict[str, Value]:
        """Like :meth:`run` but returns the simulator values (:class:`Fixed` with integer codes
        and fix position, or :class:`Floating`)."""
        feeds = self._prepare_inputs(inputs, layout)
        wanted = list(outputs) if outputs is not None else list(self.outputs)
        for w in wanted:
            if w not in self.graph:
                raise SimError(f"no op named {w!r} in the graph")
        n = next(iter(feeds.values())).shape[0]
        bs = n if not batch_size or batch_size <= 0 else int(batch_size)
        if self.batch_folding:
            bs = self.graph_batch
        parts: list[dict[str, Value]] = []
        floats: list[str] = []
        for s in range(0, n, bs):
            parts.append(self._run_batch({k: v[s:s + bs] for k, v in feeds.items()}, wanted))
            floats.extend(f for f in self.float_ops if f not in floats)
        self.float_ops = floats
        return {k: _concat([p[k] for p in parts], k in self._const) for k in wanted}

    def run(self, inputs, *, layout: str = "auto", batch_size: int | None = 100,
            outputs: Iterable[str] | None = None, output_layout: str = "NHWC"
            ) -> dict[str, np.ndarray]:
        """Run float inputs through the graph; returns ``{op name: float64 array}`` for the graph
        outputs (or the ops named in ``outputs``), i.e. ``codes * 2^-fp`` of the final fix ops.

        ``inputs``: one array (single-input graphs), a list in :attr:`inputs` order, or a dict
        by data-op name. 4-D inputs may be NCHW or NHWC (``layout='auto'`` decides from the
        stored NHWC dims). 4-D outputs are NHWC unless ``output_layout='NCHW'``.
        """
        vals = self.run_values(inputs, layout=layout, batch_size=batch_size, outputs=outputs)
        out = {}
        for k, v in vals.items():
            a = v.values()
            if output_layout.upper() == "NCHW" and a.ndim == 4:
                a = np.ascontiguousarray(a.transpose(0, 3, 1, 2))
            out[k] = a
        return out

    def __call__(self, inputs, **kw) -> np.ndarray | dict[str, np.ndarray]:
        r = self.run(inputs, **kw)
        return next(iter(r.values())) if len(r) == 1 else r

    def output_fix(self, name: str | None = None) -> tuple[int, int] | None:
        """``(bit_width, fix_point)`` of an output when it is produced by a ``fix`` op."""
        op = self.graph.op(name or self.outputs[0])
        if op.type in ("fix", "float2fix", "fix2float"):
            return int(op.attr("bit_width")), int(op.attr("fix_point"))
        return None


def _concat(vals: list[Value], const: bool) -> Value:
    if len(vals) == 1 or const:
        return vals[0]
    fixed = [v for v in vals if isinstance(v, Fixed)]
    if len(fixed) == len(vals):
        fps = {v.fp for v in fixed}
        if len(fps) == 1 and all(isinstance(v.denom, int) for v in fixed) \
                and len({v.denom for v in fixed}) == 1:
            return Fixed(np.concatenate([v.codes for v in fixed]), fixed[0].fp, fixed[0].denom,
                         fixed[0].qtype)
    inexact = tuple(dict.fromkeys(n for v in vals if isinstance(v, Floating) for n in v.inexact))
    return Floating(np.concatenate([v.values() for v in vals]), inexact)


def simulate(graph: XGraph | str | os.PathLike, inputs, **kw) -> np.ndarray | dict[str, np.ndarray]:
    """One-shot :class:`Simulator` run: the single output array, or a dict for several."""
    return Simulator(graph)(inputs, **kw)

