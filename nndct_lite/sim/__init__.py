"""Integer reference simulator of XModel graphs (DPU fixed-point rules), in numpy.

>>> from nndct_lite.sim import Simulator
>>> sim = Simulator("CifarResNet_int.xmodel")            # doctest: +SKIP
>>> logits = sim(images_nchw_float32)                    # doctest: +SKIP

See ``docs/xmodel.md`` for what is exact and what falls back to float.
"""
from .engine import Simulator, load_graph, simulate
from .opimpl import EXACT_OPS, FLOAT_OPS, supported_cpu_names, supported_op_types
from .values import (Fixed, Floating, SimError, dyadic, requantize, round_div, round_float,
                     round_shift, saturate)

__all__ = [
    "Simulator", "simulate", "load_graph", "Fixed", "Floating", "SimError", "supported_op_types",
    "supported_cpu_names",
    "EXACT_OPS", "FLOAT_OPS", "requantize", "round_shift", "round_div", "round_float", "saturate",
    "dyadic",
]
