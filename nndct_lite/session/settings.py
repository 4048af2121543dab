"""Settings of a quantization session read from the environment (the per-layer report)."""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError

__all__ = ["REPORT_ENV", "CHART_ENV", "report_batch_count", "report_chart_wanted",
           "report_sample", "REPORT_MAX_SAMPLES", "REPORT_MAX_INPUT_VALUES"]

#: environment variable: how many calibration batches ``report.md`` is measured on (0: none)
REPORT_ENV = "NNDCT_LITE_REPORT_BATCHES"
DEFAULT_REPORT_BATCHES = 1


def report_batch_count() -> int:
    raw = os.environ.get(REPORT_ENV, "").strip()
    if not raw:
        return DEFAULT_REPORT_BATCHES
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{REPORT_ENV}={raw!r} is not an integer", where=REPORT_ENV,
                          hint="set it to 0 (no report) or a number of batches") from None
    if n < 0:
        raise ConfigError(f"{REPORT_ENV}={raw!r} is negative", where=REPORT_ENV,
                          hint="set it to 0 (no report) or a number of batches")
    return n


CHART_ENV = "NNDCT_LITE_REPORT_CHART"


def report_chart_wanted() -> bool:
    """``NNDCT_LITE_REPORT_CHART``: 1 draws report_chart.png at calibration (default 0)."""
    raw = os.environ.get(CHART_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{CHART_ENV}={raw!r} is not a switch", where=CHART_ENV,
                      hint="set it to 1 (draw report_chart.png at calibration) or 0")


#: the report measures at most this many input values per kept batch (whole samples) ...
REPORT_MAX_INPUT_VALUES = 1 << 20
#: ... and at most this many samples, a third of the cost of a CIFAR batch of 100. On ResNet-20
#: the 32 give the same worst five nodes and per-node SQNRs 0.4 dB (at most 1.2 dB) from the
#: 100's, where two batches of 100 differ by 0.25 dB (at most 0.9 dB): the report is a
#: diagnostic; more batches with REPORT_ENV
REPORT_MAX_SAMPLES = 32


def report_sample(args: tuple) -> tuple:
    """A copy of one forward's inputs for the report: the first samples of a batch whose
    tensors share their first dimension, at most ``REPORT_MAX_SAMPLES`` and as many as keep the
    inputs under ``REPORT_MAX_INPUT_VALUES`` values (at least one); other inputs whole."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    n = None
    if tensors and all(t.dim() > 0 for t in tensors) and \
            len({t.shape[0] for t in tensors}) == 1:
        batch = tensors[0].shape[0]
        per_sample = sum(t.numel() for t in tensors) // max(batch, 1)
        limit = max(1, min(REPORT_MAX_SAMPLES, REPORT_MAX_INPUT_VALUES // max(per_sample, 1)))
        n = limit if batch > limit else None
    return tuple((a[:n] if n is not None else a).detach().clone()
                 if isinstance(a, torch.Tensor) else a for a in args)

