"""Power-of-two calibration: the ``diffs`` search and the scope-1 ``maxmin`` rule (numerics.md 4.1),
and the histogram methods (``percentile``, ``mse``, ``entropy``) on a power-of-two grid.

For one tensor, or one slice along the channel axis::

    step = max(min / lb, max / ub)          lb = -2^(bw-1) - 0.5, ub = 2^(bw-1) - 0.5
    fp0  = floor(log2(1 / step))            (18 when step == 0)
    fp   = argmin_{fp0 <= f < fp0 + scope} sum((x - fakequant(x, f))^2)   (ties: smaller f)
    fp   = min(fp, 12 if bw <= 8 else 15)

computed in the tensor's dtype on its device (float32 for float32 tensors, as the original does;
float16/bfloat16 are widened to float32). The error is a plain sum of squares in that dtype. The
rounding inside the search is ``spec.round_mode``; for the round-to-nearest modes the error uses
half-even codes, which gives the same ``|x - fakequant(x)|`` bit for bit (two codes that differ on
a tie are both exactly half a step away, and clamping maps both to the same bound). When
``fp0`` is already at or above the cap, every candidate is capped to the same value, so no error is
computed at all.

``percentile`` / ``mse`` / ``entropy`` with power-of-two scale (not in the original, whose DPU
path ignores ``method``): each batch's clip range ``T`` comes from the method's histogram search
(as for float scale, histogram.py), and the fix position is the range rule applied to ``[-T, T]``:
``fp = min(floor(log2((2^(bw-1) - 0.5) / T)), cap)``, the finest grid whose range still holds
``T``. Batches vote like the diffs fix positions. Per-tensor only.

A non-zero tensor with ``max|x|`` below about 3.7e-37 makes ``1/step`` overflow; the original
then leaves the tensor unquantized. Here it is calibrated like an all-zero tensor (fp = the cap)
and a warning is logged.
"""
from __future__ import annotations

import math

import torch

from .._log import get_logger
from ..config.spec import CalibMethod, QuantSpec, StatMethod
from ..errors import ConfigError
from ..numerics import native
from ..numerics.fixpoint import TINY_STEP_FIX_POS, max_fix_pos
from ..numerics.rounding import RoundMode
from ..numerics.params import QuantParams
from .base import Observer, Role, Scratch, finite_rows, rows
from .histogram import HISTOGRAM_METHODS, batch_amax
from .stats import FixPosVotes

__all__ = ["DIFFS_SCOPE", "range_fix_pos", "diffs_fix_pos", "histogram_fix_pos", "Pof2Observer"]

_LOG = get_logger("calib")

#: number of candidates of the diffs search (option ``diffs_mode`` "mse", the default)
DIFFS_SCOPE = 5


def range_fix_pos(mn: torch.Tensor, mx: torch.Tensor, bit_width: int):
    """``(fp0, overflow)`` per channel from per-channel minima and maxima (same dtype/device).

    ``fp0`` is a float tensor of integers (``TINY_STEP_FIX_POS`` = 18 for an all-zero range, and
    also where ``1/step`` overflows, which ``overflow`` flags). Uncapped.
    """
    lb = -(2.0 ** (bit_width - 1)) - 0.5
    ub = 2.0 ** (bit_width - 1) - 0.5
    step = torch.maximum(mn / lb, mx / ub)
    inv = torch.reciprocal(step)
    positive = step > 0
    ok = positive & torch.isfinite(inv)
    fp0 = torch.where(ok, torch.floor(torch.log2(torch.where(ok, inv, 1.0))),
                      float(TINY_STEP_FIX_POS))
    return fp0, positive & ~ok


def _round_codes(buf: torch.Tensor, mode: RoundMode) -> None:
    if mode is RoundMode.FLOOR:
        buf.floor_()
    elif mode is RoundMode.CEIL:
        buf.ceil_()
    else:
        buf.round_()


def _sq_errors(x2: torch.Tensor, neg_x2: torch.Tensor, fps: list[int], spec: QuantSpec,
               buf: torch.Tensor) -> torch.Tensor:
    """Per-row ``sum((x - fakequant(x, fp))^2)`` for one candidate fp per row.

    ``fakequant(x) - x`` is formed as ``-x + q * 2^-fp`` in one fused op: ``q * 2^-fp`` is exact,
    so this is the same single rounding as subtracting the dequantized value.
    """
    m: float | torch.Tensor
    back: float | torch.Tensor
    if len(fps) == 1:
        m, back = math.ldexp(1.0, fps[0]), math.ldexp(1.0, -fps[0])
    else:
        dtype, device = x2.dtype, x2.device
        m = torch.tensor([math.ldexp(1.0, f) for f in fps], dtype=dtype,
                         device=device).unsqueeze(1)
        back = torch.tensor([math.ldexp(1.0, -f) for f in fps], dtype=dtype,
                            device=device).unsqueeze(1)
    r = spec.int_range
    torch.mul(x2, m, out=buf)
    _round_codes(buf, spec.round_mode)
    buf.clamp_(r.qmin, r.qmax)
    if isinstance(back, float):
        torch.add(neg_x2, buf, alpha=back, out=buf)
    else:
        torch.addcmul(neg_x2, buf, back, out=buf)
    return buf.mul_(buf).sum(dim=1)


#: rounding of the fused search's codes (native.diffs_errors): half_even stands for every
#: round-to-nearest mode, as in ``_round_codes``
_NATIVE_MODE = {RoundMode.FLOOR: "floor", RoundMode.CEIL: "ceil"}

#: a candidate is skipped when its clipping error alone exceeds the best full error by this factor
#: (both are float32 sums; their rounding is many orders of magnitude below 1 %)
_PRUNE_MARGIN = 1.01


def _error_one(x: torch.Tensor, fp: int, spec: QuantSpec, buf: torch.Tensor,
               needs_clamp: bool) -> float:
    """``sum((x - fakequant(x, fp))^2)`` of a 1-D tensor, in three or four passes."""
    r = spec.int_range
    torch.mul(x, math.ldexp(1.0, fp), out=buf)
    _round_codes(buf, spec.round_mode)
    if needs_clamp:
        buf.clamp_(r.qmin, r.qmax)
    torch.add(x, buf, alpha=-math.ldexp(1.0, -fp), out=buf)  # q * 2^-fp is exact: one rounding
    return float(torch.dot(buf, buf))


def _clip_error_one(x: torch.Tensor, fp: int, spec: QuantSpec, buf: torch.Tensor) -> float:
    """``sum((x - clamp(x, qmin*2^-fp, qmax*2^-fp))^2)``: a lower bound of the error at ``fp``
    that grows with ``fp`` (every element's excess over a halved range can only grow)."""
    r = spec.int_range
    step = math.ldexp(1.0, -fp)
    torch.clamp(x, r.qmin * step, r.qmax * step, out=buf)
    buf.sub_(x)
    return float(torch.dot(buf, buf))


def _search_one(x: torch.Tensor, fp0: int, mn: float, mx: float, spec: QuantSpec,
                scope: int, scratch: Scratch | None = None) -> int:
    """The diffs search of one per-tensor row, pruned without changing its answer: candidates
    are tried from ``fp0`` upwards, and once a candidate's clipping error alone is above the best
    error so far, it and every larger fp are skipped (their errors can only be larger)."""
    cap = max_fix_pos(spec.bit_width)
    r = spec.int_range
    errors = native.diffs_errors(x, [fp0 + k for k in range(scope)], r.qmin, r.qmax,
                                 _NATIVE_MODE.get(spec.round_mode, "half_even"))
    if errors is not None:   # every candidate in one fused pass; the first minimum wins
        return min(fp0 + errors.index(min(errors)), cap)
    buf = scratch.get(x) if scratch is not None else torch.empty_like(x)
    best_k, best = 0, math.inf
    for k in range(scope):
        fp = fp0 + k
        if k >= 2 and _clip_error_one(x, fp, spec, buf) > best * _PRUNE_MARGIN:
            break
        m = math.ldexp(1.0, fp)
        # the clamp is a no-op when both extremes already round inside the code range
        needs_clamp = k > 0 or not (r.qmin <= round(mn * m) and round(mx * m) <= r.qmax)
        if spec.round_mode in (RoundMode.FLOOR, RoundMode.CEIL):
            needs_clamp = True
        err = _error_one(x, fp, spec, buf, needs_clamp)
        if err < best:  # strict: on equal error the smaller fp wins
            best_k, best = k, err
    return min(fp0 + best_k, cap)


def _search(x2: torch.Tensor, fp0: list[int], spec: QuantSpec, scope: int,
            mn: list[float] | None = None, mx: list[float] | None = None,
            scratch: Scratch | None = None) -> list[int]:
    cap = max_fix_pos(spec.bit_width)
    base = [min(f, cap) for f in fp0]
    active = [f < cap for f in fp0]
    if scope <= 1 or not any(active):
        return base
    if x2.shape[0] == 1 and mn is not None and mx is not None:
        return [_search_one(x2[0], fp0[0], mn[0], mx[0], spec, scope, scratch)]
    buf, neg = torch.empty_like(x2), torch.neg(x2)
    errors = torch.stack([_sq_errors(x2, neg, [b + k for b in base], spec, buf)
                          for k in range(scope)]).tolist()
    out = []
    for c, b in enumerate(base):
        if not active[c]:
            out.append(cap)
            continue
        col = [errors[k][c] for k in range(scope)]
        out.append(min(b + col.index(min(col)), cap))  # first minimum: the smaller fp
    return out


def _fix_positions(x2: torch.Tensor, spec: QuantSpec, scope: int, name: str | None,
                   scratch: Scratch | None = None):
    """``(fix positions or None, had non-finite values)`` for the rows of ``x2``."""
    nonfinite = False
    for attempt in range(2):
        if x2.shape[0] == 1:   # one pass; aminmax(dim=) is ~20x slower on CPU than amin+amax
            mn, mx = (v.reshape(1) for v in torch.aminmax(x2))
        else:
            mn, mx = x2.amin(dim=1), x2.amax(dim=1)
        fp0, overflow = range_fix_pos(mn, mx, spec.bit_width)
        host = torch.stack([mn, mx, fp0, overflow.to(mn.dtype)]).tolist()  # the one sync
        if attempt == 0 and not all(map(math.isfinite, host[0] + host[1])):
            nonfinite = True
            finite = torch.isfinite(x2)
            if not bool(finite.any()):
                return None, True
            x2 = finite_rows(x2)
            continue
        break
    if any(host[3]):
        _LOG.warning("%s: max|x| is below ~3.7e-37, 1/step overflows; calibrated as an all-zero "
                     "tensor (fix position %d)", name or "tensor", max_fix_pos(spec.bit_width))
    return (_search(x2, [int(f) for f in host[2]], spec, scope, host[0], host[1], scratch),
            nonfinite)


def diffs_fix_pos(x: torch.Tensor, spec: QuantSpec, *, scope: int = DIFFS_SCOPE,
                  axis: int | None = None) -> list[int]:
    """Capped fix position of ``x`` (a list of one) or of each slice along ``axis``.

    ``scope`` 1 is the plain range rule (model input, ``maxmin``). Non-finite values are
    ignored; an all-non-finite tensor raises ``ValueError``.

    >>> from nndct_lite.config.spec import DPU_ACT_SPEC
    >>> diffs_fix_pos(torch.tensor([0.3, -0.7, 1.9]), DPU_ACT_SPEC)
    [6]
    >>> diffs_fix_pos(torch.tensor([1.0, 0.01, 0.07]), DPU_ACT_SPEC), \
diffs_fix_pos(torch.tensor([1.0, 0.01, 0.07]), DPU_ACT_SPEC, scope=1)
    ([7], [6])
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    fps, _ = _fix_positions(rows(x.detach(), axis), spec, scope, None)
    if fps is None:
        raise ValueError("no finite value to calibrate on")
    return fps


def histogram_fix_pos(x: torch.Tensor, spec: QuantSpec) -> tuple[int | None, bool]:
    """``(capped fix position or None, had non-finite values)`` of one batch for the histogram
    methods: the range rule on the clip range ``spec.method`` chooses.

    >>> from dataclasses import replace
    >>> from nndct_lite.config.spec import DPU_ACT_SPEC
    >>> x = torch.cat([torch.full((999,), 0.5), torch.tensor([40.0])])
    >>> histogram_fix_pos(x, replace(DPU_ACT_SPEC, method=CalibMethod.MAXMIN))[0] is None
    Traceback (most recent call last):
    ...
    ValueError: histogram_fix_pos needs percentile, mse or entropy, got maxmin
    >>> histogram_fix_pos(x, replace(DPU_ACT_SPEC, method=CalibMethod.PERCENTILE, percentage=99.0))
    (8, False)
    >>> diffs_fix_pos(x, DPU_ACT_SPEC, scope=1)
    [1]
    """
    if spec.method not in HISTOGRAM_METHODS:
        raise ValueError(f"histogram_fix_pos needs percentile, mse or entropy, got "
                         f"{spec.method.value}")
    found = batch_amax(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, spec)
    if found is None:
        return None, True
    amax, nonfinite = found
    t = torch.tensor([amax], dtype=torch.float32)
    fp0, _ = range_fix_pos(-t, t, spec.bit_width)
    return min(int(fp0.item()), max_fix_pos(spec.bit_width)), nonfinite


class Pof2Observer(Observer):
    """Power-of-two fix positions: ``diffs`` (scope 5), the range rule (scope 1), or the range
    rule on the clip range of a histogram method (``histogram_fix_pos``).

    Each batch yields one (capped) fp per channel; the result is the mode of all of them, ties
    to the smaller fp, or to the larger with ``vote_on_scale`` (the CPU/GPU path votes on the
    scale 2^-fp; numerics.md 4.2, T9 / T27). ``Role.PARAM`` keeps the first batch's fps.
    ``scope`` defaults to 1 for ``Role.MODEL_INPUT`` and for ``method`` maxmin, else 5.
    The vote is order-independent, so ``merge`` is exact.
    """

    def __init__(self, spec: QuantSpec, *, role: Role, axis: int | None = None,
                 scope: int | None = None, vote_on_scale: bool = False, name: str | None = None):
        if not spec.is_pof2:
            raise ConfigError("Pof2Observer needs scale_type poweroftwo", where=name)
        if role is not Role.PARAM and spec.calib_statistic_method is not StatMethod.MODAL:
            raise ConfigError(
                f"calib_statistic_method {spec.calib_statistic_method.value!r} with power-of-two "
                "scale", where=name, hint="power-of-two activations combine batches by 'modal'")
        if spec.method in HISTOGRAM_METHODS and axis is not None:
            raise ConfigError(f"method {spec.method.value!r} is per-tensor only", where=name,
                              hint="per-channel power-of-two works with diffs or maxmin")
        if scope is None:
            scope = 1 if role is Role.MODEL_INPUT or spec.method is CalibMethod.MAXMIN \
                else DIFFS_SCOPE
        if scope < 1:
            raise ValueError(f"scope must be >= 1, got {scope}")
        self.scope = scope
        self.vote_on_scale = bool(vote_on_scale)
        super().__init__(spec, role=role, axis=axis, name=name)

    def _options(self) -> tuple:
        return (self.scope, self.vote_on_scale)

    def reset(self) -> None:
        self.votes = FixPosVotes()

    def _observe(self, x: torch.Tensor) -> bool:
        if self.spec.method in HISTOGRAM_METHODS:
            fp, nonfinite = histogram_fix_pos(x, self.spec)
            fps = None if fp is None else [fp]
        else:
            fps, nonfinite = _fix_positions(rows(x, self.axis), self.spec, self.scope, self.name,
                                            self.scratch)
        self.nonfinite_batches += nonfinite
        if fps is None:
            return False
        self.votes.add(fps)
        return True

    def compute(self) -> QuantParams:
        fps = self.votes.mode(prefer_larger=self.vote_on_scale)
        if fps is None:
            return QuantParams(self.spec.bit_width, axis=self.axis)
        return QuantParams(self.spec.bit_width, fix_pos=fps if self.axis is not None else fps[0],
                           axis=self.axis)

    def _merge(self, other: Pof2Observer) -> None:
        self.votes.merge(other.votes)

    def _state(self) -> dict:
        return self.votes.state()

    def _load_state(self, state: dict) -> None:
        self.votes = FixPosVotes()
        self.votes.load(state)
