"""Tensor layouts of the exported graph.

XIR feature maps are NHWC; torch's are NCHW. A rank-4 tensor is stored either channels-last
(``cl=True``, what every DPU op reads and writes) or in torch order (``cl=False``: what CPU ops,
reshapes and permutes of the torch program work in). Tensors of any other rank are always stored
in torch order. These helpers map torch shapes, axes and permutations onto the stored layout."""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Val", "TO_CL", "TO_TORCH", "stored_shape", "stored_axis", "stored_perm",
           "compose_order", "is_trivial_perm", "batch1", "set_example_batch",
           "reset_example_batch"]

#: torch (NCHW) dims -> stored channels-last dims: stored[i] = torch[TO_CL[i]]
TO_CL = (0, 2, 3, 1)
#: stored channels-last dims -> torch dims: torch[i] = stored[TO_TORCH[i]]
TO_TORCH = (0, 3, 1, 2)


@dataclass(frozen=True)
class Val:
    """A node's value in the XGraph: the op that holds it (its ``fix`` when quantized), the op
    named after the node (``base``, used to name layout conversions) and its stored layout."""

    name: str
    base: str
    cl: bool
    rank: int


#: batch size of the example the graph's shapes were recorded with (set by the builder)
_EXAMPLE_BATCH = ContextVar("example_batch", default=1)


def set_example_batch(n: int):
    """Shapes whose first dim equals ``n`` are batch-``n`` shapes; returns a reset token."""
    return _EXAMPLE_BATCH.set(max(int(n), 1))


def reset_example_batch(token) -> None:
    _EXAMPLE_BATCH.reset(token)


def batch1(shape: Sequence[int]) -> list[int]:
    """Torch shape with the batch dimension set to 1 (the deploy graph runs batch 1). Shapes are
    recorded on the example input: only a first dim equal to its batch size is the batch."""
    shape = list(shape)
    n = _EXAMPLE_BATCH.get()
    return ([1] + shape[1:]) if shape and n != 1 and shape[0] == n else shape


def stored_shape(shape: Sequence[int], cl: bool) -> list[int]:
    """Stored dims of a tensor of torch ``shape`` (batch 1) in layout ``cl``."""
    s = batch1(shape)
    if cl and len(s) == 4:
        return [s[p] for p in TO_CL]
    return s


def stored_axis(axis: int, rank: int, cl: bool) -> int:
    """Stored axis of torch axis ``axis`` (negative allowed)."""
    axis %= max(rank, 1)
    if cl and rank == 4:
        return TO_CL.index(axis)
    return axis


def stored_perm(rank: int, cl: bool) -> tuple[int, ...]:
    """``P`` with stored[i] = torch[P[i]]."""
    return TO_CL if (cl and rank == 4) else tuple(range(rank))


def compose_order(perm: Sequence[int], in_cl: bool, out_cl: bool) -> list[int]:
    """XIR ``transpose`` order that turns the stored input into the stored output of the torch
    permutation ``perm`` (torch out[i] = torch in[perm[i]])."""
    r = len(perm)
    p_in, p_out = stored_perm(r, in_cl), stored_perm(r, out_cl)
    inv_in = [p_in.index(k) for k in range(r)]
    return [inv_in[perm[p_out[j]]] for j in range(r)]


def is_trivial_perm(dims: Sequence[int], order: Sequence[int]) -> bool:
    """True when transposing ``dims`` by ``order`` keeps the memory order (only size-1 dims
    move), so a reshape does the same."""
    moved = [o for o in order if dims[o] != 1]
    return moved == sorted(moved)
