"""All op implementations of the integer simulator, by family (this module only loads them).

| module | ops |
|---|---|
| ``ops_conv`` | const, fix, conv1d/2d/3d (depthwise, transposed), ``*-fix`` convs, matmul, inner-product, scale |
| ``ops_act`` | relu, relu6, hard-tanh, leaky-relu, prelu, hard-sigmoid(-fix), hard-swish |
| ``ops_eltwise`` | add, sub, mul, div, min, max, neg, eltwise-fix, depthwise-fix, concat, stack |
| ``ops_pool`` | maxpool1d/2d, avgpool2d, pool-fix, reductions, argmax |
| ``ops_shape`` | reshape, flatten, squeeze, transpose, strided_slice, pad, resize, pixel-shuffle, ... |
| ``ops_cpu`` | XIR float ops (sigmoid, softmax, gelu, batchnorm, ...) |
| ``ops_aten`` | CPU ops by framework name (``aten::mean``, ``aten::silu_``, ``custom_*``) |
| ``ops_aten_nn`` | CPU layers by framework name: layer / group norm, attention, eval identities |

Fixed-point ops compute exactly on integer codes; the ops in :data:`FLOAT_OPS` compute in
float64 and mark their result inexact.
"""
from __future__ import annotations

from . import (ops_act, ops_aten, ops_aten_nn, ops_conv, ops_cpu, ops_eltwise,  # noqa: F401
               ops_pool, ops_shape)
from .registry import (CPU_ALIASES, FLOAT_OPS, IMPLS, resolve, supported_cpu_names,
                       supported_op_types)

__all__ = ["IMPLS", "FLOAT_OPS", "EXACT_OPS", "CPU_ALIASES", "resolve", "supported_op_types",
           "supported_cpu_names"]

#: op types computed exactly on integer codes (when their inputs are exact)
EXACT_OPS = frozenset(set(IMPLS) - FLOAT_OPS)
