"""GPTQ for fast finetune (``fast_finetune_method: gptq``).

For one layer with weight rows w (one per output channel) and inputs X (the quantized model's
input of the layer; for a convolution the im2col columns), the output error of rounded weights q
is (w - q) H (w - q)^T / 2 with H = 2 X X^T / n. GPTQ rounds the input columns one after the other
and, after each, moves the rounding error onto the columns not rounded yet, in the way that
minimises that error given H (the optimal-brain-surgeon update). With U the upper Cholesky factor
of H^-1, rounding column j with error e = (w_j - q_j) / U[j, j] updates every later column k by
-e * U[j, k]; the updates of a block of columns are applied to the rest at once.

Columns are taken in decreasing order of H's diagonal (the inputs with the most energy first), a
dampening of 1 % of the mean diagonal keeps H invertible, and an input that was always zero
(H[j, j] = 0) neither receives nor spreads error. Grouped and depthwise convolutions are one
problem per group (the inputs of a group only reach its own output channels), solved together.

Every column is rounded by the layer's own weight quantizer with its calibrated fix position or
scale (``grid.WeightGrid.snap``), so the result lies on the grid calibration chose: power of two
per tensor for the DPU, float scales per channel for CPU/GPU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._log import get_logger
from .grid import WeightGrid
from .protocols import RankSync

__all__ = ["GptqOptions", "GptqTuner", "Moments", "gptq_quantize", "layer_hessian",
           "layer_moments", "float_input_fit"]

log = get_logger("algorithms")
_CHUNK = 1 << 22   # im2col elements per chunk of the Hessian accumulation


@dataclass(frozen=True)
class GptqOptions:
    damp: float = 0.01          # dampening, a fraction of the mean of H's diagonal
    block: int = 128            # columns per lazy-update block
    act_order: bool = True      # columns in decreasing order of H's diagonal
    float_inputs: bool = True   # first move W to the least-squares fit of the float output
    fit_bias: bool = True       # then move the bias by the mean output error left (float inputs)
    max_columns: int = 1 << 18  # input columns per layer the moments are estimated from (0: all)


def _stride_factor(samples: int, positions: tuple[int, int], cap: int) -> int:
    """The smallest f >= 1 with ``samples * ceil(h/f) * ceil(w/f) <= cap`` (1 without a cap):
    the statistics of a layer with more input columns than ``cap`` are taken on every f-th
    output row and column (``_columns``: the sub-grid's offset rotates from image to image)."""
    h, w = positions
    f = 1
    while cap > 0 and samples * (-(-h // f)) * (-(-w // f)) > cap and f < max(h, w):
        f += 1
    return f


def _unfold_args(layer: Any) -> tuple | None:
    """(kernel, dilation, padding, stride) of a 1-D/2-D zero-padded convolution as 2-D tuples."""
    if getattr(layer, "padding_mode", "zeros") != "zeros" or isinstance(layer.padding, str) \
            or getattr(layer, "transposed", False):
        return None
    k, d, p, s = layer.kernel_size, layer.dilation, layer.padding, layer.stride
    if len(k) == 2:
        return tuple(k), tuple(d), tuple(p), tuple(s)
    if len(k) == 1:
        return (1, k[0]), (1, d[0]), (0, p[0]), (1, s[0])
    return None


def _im2col(x: torch.Tensor, kernel: tuple, dilation: tuple, padding: tuple,
            stride: tuple) -> torch.Tensor:
    """``F.unfold`` by strided slices of the padded input (much faster on the CPU): ``[n,
    C·kh·kw, L]`` with the rows in the weight's (channel, kernel row, kernel column) order."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    xp = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
            for i in range(kh) for j in range(kw)]
    return torch.stack(taps, 2).reshape(x.shape[0], x.shape[1] * kh * kw, ho * wo)


def _columns(layer: nn.Module, x: torch.Tensor, cap: int = 0) -> Iterator[torch.Tensor] | None:
    """The layer's inputs as ``[groups, K, n]`` chunks (None: not a layer GPTQ handles); with
    ``cap``, at most about that many columns (every f-th row of a linear layer's inputs; every
    f-th output row and column of a convolution, ``_stride_factor``, the sub-grid's offset
    rotating over the f² phases from image to image)."""
    if isinstance(layer, nn.Linear):
        flat = x.reshape(-1, x.shape[-1])
        if cap > 0 and flat.shape[0] > cap:
            flat = flat[::-(-flat.shape[0] // cap)]
        step = max(1, _CHUNK // max(1, flat.shape[1]))
        return (flat[i:i + step].t().unsqueeze(0) for i in range(0, flat.shape[0], step))
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        return None
    args = _unfold_args(layer)
    if args is None:
        return None
    kernel, dilation, padding, stride = args
    xs = x.unsqueeze(2) if x.dim() == 3 else x
    ho = (xs.shape[2] + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    wo = (xs.shape[3] + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    f = _stride_factor(xs.shape[0], (ho, wo), cap)
    g = layer.groups
    if f > 1:
        # every f-th output row and column, the sub-grid's phase (oy, ox) rotating over the
        # images so that every output position (borders included) is sampled equally often
        phases = [(oy, ox) for oy in range(min(f, ho)) for ox in range(min(f, wo))]
        xp = F.pad(xs, (padding[1], padding[1], padding[0], padding[0]))
        sub_stride = (stride[0] * f, stride[1] * f)
        parts = [(xp[k::len(phases), :, oy * stride[0]:, ox * stride[1]:], (0, 0), sub_stride)
                 for k, (oy, ox) in enumerate(phases)]
    else:
        parts = [(xs, padding, stride)]
    per_image = layer.weight[0].numel() * g * max(1, xs.shape[-1] * xs.shape[-2]) \
        // max(1, f * f)
    step = max(1, _CHUNK // max(1, per_image))

    def chunks() -> Iterator[torch.Tensor]:
        for images, pad, strides in parts:
            for i in range(0, images.shape[0], step):
                cols = _im2col(images[i:i + step], kernel, dilation, pad, strides)  # [n, gK, L]
                n, gk, length = cols.shape
                if n * length == 0:
                    continue
                yield cols.view(n, g, gk // g, length).permute(1, 2, 0, 3).reshape(
                    g, gk // g, n * length)
    return chunks()


def layer_hessian(layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """H = 2 X X^T / n per group, ``[groups, K, K]`` in float64 (None: layer not handled)."""
    moments = layer_moments(layer, x)
    return None if moments is None else moments.h


@dataclass
class Moments:
    """Input statistics of one layer, per group, float64: H = 2 X X^T / n, the cross moment
    M = 2 X_f X^T / n with the float model's input X_f, and the mean input columns."""

    h: torch.Tensor
    m: torch.Tensor | None
    mean: torch.Tensor
    mean_float: torch.Tensor | None

    @staticmethod
    def from_sums(sums: list[torch.Tensor]) -> "Moments":
        """The statistics of ``_moment_sums``'s list (of one rank, or summed over ranks)."""
        n = max(1.0, float(sums[2]))
        floats = len(sums) == 5
        return Moments(sums[0] * (2.0 / n), sums[3] * (2.0 / n) if floats else None,
                       sums[1] / n, sums[4] / n if floats else None)


def layer_moments(layer: nn.Module, x: torch.Tensor,
                  x_float: torch.Tensor | None = None, max_columns: int = 0) -> Moments | None:
    """The ``Moments`` of ``layer`` on its input ``x`` (and float input ``x_float``), from at
    most about ``max_columns`` input columns (0: all); None when GPTQ does not handle the
    layer."""
    sums = _moment_sums(layer, x, x_float, max_columns)
    return None if sums is None else Moments.from_sums(sums)


def _moment_sums(layer: nn.Module, x: torch.Tensor, x_float: torch.Tensor | None,
                 max_columns: int) -> list[torch.Tensor] | None:
    """[X Xᵀ, column sum of X, count] (+ [X_f Xᵀ, column sum of X_f] with ``x_float``), float64
    sums over the layer's input columns: what ranks add up before the statistics are
    normalised. None when GPTQ does not handle the layer."""
    chunks = _columns(layer, x, max_columns)
    if chunks is None:
        return None
    floats = _columns(layer, x_float, max_columns) if x_float is not None else None
    h = m = total = total_f = None
    count = 0
    for cols in chunks:
        c = cols.float()
        part = torch.bmm(c, c.transpose(1, 2)).double()
        h = part if h is None else h + part
        col_sum = c.sum(2).double()
        total = col_sum if total is None else total + col_sum
        if floats is not None:
            cf = next(floats).float()
            cross = torch.bmm(cf, c.transpose(1, 2)).double()
            m = cross if m is None else m + cross
            f_sum = cf.sum(2).double()
            total_f = f_sum if total_f is None else total_f + f_sum
        count += cols.shape[2]
    if h is None or total is None:
        return None
    out = [h, total, torch.tensor(float(count), dtype=torch.float64)]
    return out if m is None or total_f is None else out + [m, total_f]


def float_input_fit(w: torch.Tensor, h: torch.Tensor, m: torch.Tensor,
                    damp: float) -> torch.Tensor:
    """The weights W' minimising |W X_f - W' X|^2 (dampened): W' = W + W (M - H) (H + dI)^-1.
    With X_f = X (no input error) W' = W exactly."""
    diag = h.diagonal(dim1=1, dim2=2)
    mean = diag.mean(dim=1).clamp_min(1e-12)
    eye = torch.eye(h.shape[1], dtype=h.dtype).expand_as(h)
    damped = h + eye * (damp * mean)[:, None, None]
    rhs = torch.bmm(w, m - h)                               # [g, R, K]
    low, info = torch.linalg.cholesky_ex(damped)
    if int(info.max()) != 0:
        return w
    # W (M - H) D^-1 = (D^-1 (M - H)^T W^T)^T, D symmetric
    return w + torch.cholesky_solve(rhs.transpose(1, 2), low).transpose(1, 2)


def _cholesky_inverse_upper(h: torch.Tensor, damp: float) -> torch.Tensor | None:
    """The upper Cholesky factor of (H + damping)^-1, per group; None when H stays singular."""
    diag = h.diagonal(dim1=1, dim2=2)
    mean = diag.mean(dim=1).clamp_min(1e-12)
    eye = torch.eye(h.shape[1], dtype=h.dtype).expand_as(h)
    for factor in (1.0, 10.0, 100.0, 1000.0):
        damped = h + eye * (damp * factor * mean)[:, None, None]
        low, info = torch.linalg.cholesky_ex(damped)
        if int(info.max()) != 0:
            continue
        inv = torch.cholesky_inverse(low)
        up, info = torch.linalg.cholesky_ex(inv, upper=True)
        if int(info.max()) == 0:
            return up
    return None


def gptq_quantize(w: torch.Tensor, h: torch.Tensor,
                  quant: Callable[[torch.Tensor], torch.Tensor],
                  opts: GptqOptions = GptqOptions()) -> torch.Tensor | None:
    """Round ``w`` (``[groups, rows, K]``) column by column with error feedback through ``h``
    (``[groups, K, K]``); ``quant`` rounds one column of every group (``[groups, rows]``) to the
    grid. Returns the rounded weights (float64), None when H cannot be factorised."""
    w = w.double().clone()
    h = h.double().clone()
    groups, rows, k = w.shape
    diag = h.diagonal(dim1=1, dim2=2)
    dead = diag == 0
    if bool(dead.any()):
        h = h + torch.diag_embed(dead.double())   # no error in, none out: a zero row and column
    perm = None
    if opts.act_order:
        perm = torch.argsort(h.diagonal(dim1=1, dim2=2), dim=1, descending=True, stable=True)
        w = torch.gather(w, 2, perm[:, None, :].expand(groups, rows, k))
        h = torch.gather(h, 1, perm[:, :, None].expand(groups, k, k))
        h = torch.gather(h, 2, perm[:, None, :].expand(groups, k, k))
    u = _cholesky_inverse_upper(h, opts.damp)
    if u is None:
        return None
    q = torch.zeros_like(w)
    for b0 in range(0, k, opts.block):
        b1 = min(b0 + opts.block, k)
        wb = w[:, :, b0:b1].clone()
        errs = torch.zeros_like(wb)
        ub = u[:, b0:b1, b0:b1]
        for j in range(b1 - b0):
            col = wb[:, :, j]
            qc = quant(col)
            q[:, :, b0 + j] = qc
            e = (col - qc) / ub[:, j, j][:, None]
            wb[:, :, j + 1:] -= e[:, :, None] * ub[:, j, j + 1:][:, None, :]
            errs[:, :, j] = e
        if b1 < k:
            w[:, :, b1:] -= torch.bmm(errs, u[:, b0:b1, b1:])
    if perm is not None:
        q = torch.empty_like(q).scatter_(2, perm[:, None, :].expand(groups, rows, k), q)
    return q


class GptqTuner:
    """``LayerTuner`` of GPTQ (the float targets are not used). With ``dist`` (a distributed
    session) the layer statistics are summed over the ranks before the solve, so every rank
    rounds the same way."""

    def __init__(self, opts: GptqOptions = GptqOptions(), dist: RankSync | None = None):
        self.opts = opts
        self.dist = dist
        self.skipped: list[str] = []

    def _moments(self, layer: Any, x: torch.Tensor, x_float: torch.Tensor | None
                 ) -> Moments | None:
        sums = _moment_sums(layer, x, x_float, self.opts.max_columns)
        if sums is None:
            return None
        if self.dist is not None:
            sums = self.dist.sum_tensors(sums, "gptq layer statistics")
        return Moments.from_sums(sums)

    def __call__(self, index: int, name: str, layer: Any, grid: WeightGrid,
                 act: nn.Module | None, x: torch.Tensor, target: torch.Tensor | None,
                 x_float: torch.Tensor | None = None) -> None:
        weight: torch.Tensor = layer.weight
        use_float = self.opts.float_inputs and x_float is not None
        moments = self._moments(layer, x, x_float if use_float else None) \
            if grid.axis in (None, 0) else None
        if moments is None:
            self.skipped.append(name)
            log.info("gptq: %s (%s) is not handled; it keeps its calibrated rounding", name,
                     type(layer).__name__)
            return
        h, m = moments.h, moments.m
        groups = h.shape[0]
        out = weight.shape[0]
        w3 = weight.detach().reshape(groups, out // groups, -1)
        start = w3.double() if m is None else float_input_fit(w3.double(), h, m, self.opts.damp)

        def quant(col: torch.Tensor) -> torch.Tensor:
            flat = col.to(weight.dtype).reshape(out, 1)
            return grid.snap(flat).reshape(col.shape).double()

        q = gptq_quantize(start, h, quant, self.opts)
        if q is None:
            self.skipped.append(name)
            log.warning("gptq: the input Hessian of %s could not be factorised even with "
                        "strong dampening; it keeps its calibrated rounding", name)
            return
        new = grid.snap(q.to(weight.dtype).reshape(weight.shape))
        if log.isEnabledFor(10):
            d_new = (w3.double() - new.reshape(w3.shape).double())
            d_old = (w3.double() - grid.snap(weight).reshape(w3.shape).double())
            err = [float((torch.bmm(d, h) * d).sum()) for d in (d_old, d_new)]
            log.debug("gptq %s: output error %.4g (rounding to nearest) -> %.4g", name, *err)
        bias = getattr(layer, "bias", None)
        if self.opts.fit_bias and moments.mean_float is not None and bias is not None:
            # mean over the samples of W X_f - Q X: the output shift rounding and input error left
            q3 = new.reshape(w3.shape).double()
            shift = (torch.bmm(w3.double(), moments.mean_float[:, :, None])
                     - torch.bmm(q3, moments.mean[:, :, None])).reshape(-1)
            with torch.no_grad():
                bias.add_(shift.to(bias.dtype))
        with torch.no_grad():
            weight.copy_(new)
