"""AdaRound for fast finetune (``fast_finetune_method: adaround``).

Each weight w lies between two grid values, floor(w/s)·s and that plus s. AdaRound learns, per
weight, whether to round down or up: the weight used while learning is s·(floor(w/s) + h(V)) with
h the rectified sigmoid h(V) = clamp(sigmoid(V)·(ζ − γ) + γ, 0, 1) (ζ = 1.1, γ = −0.1), V starting
where h(V) equals the weight's position between the two values. The loss is the reconstruction
error of the layer's output, the float model's output of the same layer (after its following
activation when one is fused) against the quantized layer on its quantized-model input, plus
λ·Σ(1 − |2h(V) − 1|^β), which pushes every h to 0 or 1. The regularizer is off for the first
20 % of the iterations (warm-up); then β falls linearly from 20 to 2. At the end every weight is
rounded hard (up where h(V) ≥ 0.5) and written as its grid value.

The grid is the layer's own calibrated one (``grid.WeightGrid``): codes outside the integer range
clamp, and the final values go through the layer's quantizer, so they are fixed points of it.
Mini-batches are drawn from the cached inputs with a generator seeded per layer, so a run is
reproducible."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .._log import get_logger, progress
from .grid import WeightGrid
from .protocols import RankSync

__all__ = ["AdaroundOptions", "AdaroundTuner", "rectified_sigmoid", "initial_v"]

log = get_logger("algorithms")
_ZETA, _GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaroundOptions:
    iters: int = 1000            # optimisation steps per layer
    batch_size: int = 32         # samples per step
    lr: float = 1e-2             # Adam on V
    reg_weight: float = 0.01     # λ
    warmup: float = 0.2          # share of the steps without the regularizer
    beta_start: float = 20.0
    beta_end: float = 2.0
    seed: int = 0


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0.0, 1.0)


def initial_v(rest: torch.Tensor) -> torch.Tensor:
    """V with h(V) = ``rest`` (the weight's position between its two grid values, in [0, 1))."""
    p = ((rest - _GAMMA) / (_ZETA - _GAMMA)).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def _beta(opts: AdaroundOptions, step: int) -> float | None:
    """β of ``step`` (None during the warm-up)."""
    start = int(opts.warmup * opts.iters)
    if step < start:
        return None
    t = (step - start) / max(1, opts.iters - start)
    return opts.beta_start + (opts.beta_end - opts.beta_start) * t


def _forward(layer: Any, act: nn.Module | None, x: torch.Tensor,
             w: torch.Tensor) -> torch.Tensor:
    """The quantized layer (test mode) with weight ``w`` used as it is (not re-rounded)."""
    with torch.no_grad():
        bias = layer._qbias()
    y = layer._finish(layer._compute(x, w, bias))
    return act(y) if act is not None else y


def _rec_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over each sample, averaged over the samples."""
    return (pred - target).pow(2).reshape(pred.shape[0], -1).sum(1).mean()


class AdaroundTuner:
    """``LayerTuner`` of AdaRound (needs the float targets). With ``dist`` (a distributed
    session) every rank draws its mini-batch from its own data and the gradient of V is
    averaged over the ranks at every step, so every rank learns the same rounding."""

    def __init__(self, opts: AdaroundOptions = AdaroundOptions(),
                 dist: RankSync | None = None):
        self.opts = opts
        self.dist = dist

    def __call__(self, index: int, name: str, layer: Any, grid: WeightGrid,
                 act: nn.Module | None, x: torch.Tensor, target: torch.Tensor | None,
                 x_float: torch.Tensor | None = None) -> None:
        if target is None:
            raise ValueError("adaround needs the float model's output of every layer")
        opts = self.opts
        weight: torch.Tensor = layer.weight
        low, rest = grid.codes_floor(weight)
        v = initial_v(rest).requires_grad_(True)
        opt = torch.optim.Adam([v], lr=opts.lr)
        gen = torch.Generator().manual_seed(opts.seed + index)
        n = x.shape[0]
        bs = min(opts.batch_size, n)
        with torch.no_grad():
            before = float(_rec_loss(_forward(layer, act, x[:256], grid.snap(weight)),
                                     target[:256]))
        with torch.enable_grad():
            for step in progress(range(opts.iters), desc=f"adaround {name}",
                                 total=opts.iters):
                idx = torch.randint(n, (bs,), generator=gen)
                h = rectified_sigmoid(v)
                w_soft = grid.value(low + h)
                loss = _rec_loss(_forward(layer, act, x[idx], w_soft), target[idx])
                beta = _beta(opts, step)
                if beta is not None:
                    loss = loss + opts.reg_weight * (1 - (2 * h - 1).abs().pow(beta)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.dist is not None:
                    self.dist.average_gradients([v], 1)
                opt.step()
        with torch.no_grad():
            up = (v.detach() >= 0).to(weight.dtype)
            new = grid.snap(grid.value(low + up))
            after = float(_rec_loss(_forward(layer, act, x[:256], new), target[:256]))
            weight.copy_(new)
        log.debug("adaround %s: reconstruction error %.4g (rounding to nearest) -> %.4g",
                  name, before, after)
