"""One exception hierarchy for every user-facing failure.

Each error carries a stable ``code`` (the vai_q_pytorch message code where one exists), a ``where``
(file, JSON pointer, node name ...) and a ``hint`` saying what to do next. They subclass
``ValueError`` so existing ``except ValueError`` clauses keep working.
"""
from __future__ import annotations

__all__ = [
    "NndctError", "ConfigError", "TraceError", "CalibrationError", "QuantInfoError",
    "ExportError", "ModeError", "InputError", "OutputError",
]


class NndctError(ValueError):
    """Base class of every nndct_lite error."""

    code = "NNDCT_ERROR"

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None,
                 code: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        if code is not None:
            self.code = code
        parts = [f"[{self.code}] {message}"]
        if where:
            parts.append(f"  where: {where}")
        if hint:
            parts.append(f"  what to do: {hint}")
        super().__init__("\n".join(parts))


class ConfigError(NndctError):
    """The JSON quantization config (or a config argument) is invalid."""
    code = "QUANTIZER_TORCH_QUANT_CONFIG"


class TraceError(NndctError):
    """The model cannot be captured into a graph."""
    code = "QUANTIZER_TORCH_PYTORCH_TRACE"


class CalibrationError(NndctError):
    """Calibration state is missing or inconsistent (e.g. no forward pass happened)."""
    code = "QUANTIZER_TORCH_NO_CALIBRATION"


class QuantInfoError(NndctError):
    """quantize_result/ files are missing, corrupted, or belong to another model."""
    code = "QUANTIZER_TORCH_CALIB_RESULT_MISMATCH"


class ExportError(NndctError):
    """A deploy export cannot be produced."""
    code = "QUANTIZER_TORCH_EXPORT"


class ModeError(NndctError):
    """An operation was called in a quant mode where it is not allowed."""
    code = "QUANTIZER_TORCH_MODE"


class InputError(NndctError):
    """A bad argument to a public API (module, input_args, device ...)."""
    code = "QUANTIZER_TORCH_INPUT"


class OutputError(NndctError):
    """An output folder or file cannot be created or written (exists as a file, read-only, name
    too long, disk full ...). ``errno`` is the underlying OSError's code."""
    code = "NNDCT_LITE_OUTPUT"
    errno: int | None = None
