"""A tiny XGraph builder for simulator tests: shapes are given explicitly, as an exporter knows them."""
from __future__ import annotations

import numpy as np

from nndct_lite.sim import Simulator
from nndct_lite.xmodel import XGraph, XOp, XTensor, const_op, data_op, fix_op


class GraphBuilder:
    def __init__(self, name="t"):
        self.g = XGraph(name)

    def data(self, name, shape):
        self.g.add(data_op(name, shape))
        return name

    def fix(self, name, src, fp, bw=8):
        self.g.add(fix_op(name, src, self.g.op(src).output.shape, fp, bw))
        return name

    def input(self, name, shape, fp):
        """A data op followed by its fix (the usual quantized input)."""
        return self.fix(name + "_fix", self.data(name, shape), fp)

    def param(self, name, codes, fp):
        """A float32 const holding ``codes * 2^-fp`` and its fix (exact codes)."""
        a = np.asarray(codes, dtype=np.float64) * 2.0 ** -fp
        self.g.add(const_op(name, a.astype(np.float32)))
        return self.fix(name + "_fix", name, fp)

    def const(self, name, values):
        self.g.add(const_op(name, np.asarray(values, dtype=np.float32)))
        return name

    def op(self, name, type_, inputs, out_shape, tensor_attrs=None, **attrs):
        if isinstance(inputs, str):
            inputs = {"input": [inputs]}
        elif isinstance(inputs, list):
            inputs = {"input": inputs}
        t = XTensor(name, tuple(out_shape), attrs=dict(tensor_attrs or {}))
        self.g.add(XOp(name, type_, attrs, inputs, t))
        return name

    def sim(self, **kw):
        return Simulator(self.g, **kw)

    def run(self, x, out=None, layout="NHWC", **kw):
        """Float results of ``out`` (default: the graph output) for the input array ``x``."""
        sim = self.sim()
        name = out or sim.outputs[0]
        return sim.run(x, layout=layout, outputs=[name], **kw)[name]

    def values(self, x, out, layout="NHWC"):
        return self.sim().run_values(x, layout=layout, outputs=[out])[out]
