"""``<Model>_int.onnx``: the test-mode quantized model with a QuantizeLinear/DequantizeLinear pair
at every quantization point (activations, model inputs, weights, biases).

How: the exporter traces its own copy of the result's deploy model in which every calibrated
``FakeQuantizer`` is replaced by a ``QDQModule`` built from the result's ``QuantParams``. It
forwards through ``_QDQ``, an ``autograd.Function`` whose ``forward`` is the test-mode fake
quantization itself (so everything downstream is traced on the exact test-mode values) and whose
``symbolic`` writes the Q/DQ pair; the result's modules are never changed. The copy is exported
with torch's TorchScript-based exporter (``dynamo=False``, ``do_constant_folding=False``),
checked with ``onnx.checker`` (full check) and written atomically.

Each point's encoding (scale, zero point, type, clip) is in ``onnx_points.py``.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .._version import __version__
from .._log import get_logger
from ..errors import ExportError
from ..quant.build import quantizers
from ..quant.fake_quantizer import FakeQuantizer
from ..result import QuantResult
from ..state.files import atomic_write_bytes
from .onnx_ops import use_onnx_forms
from .onnx_points import INT16_OPSET, MIN_OPSET, Point, QDQModule, plan_point, uint16_zero_points
from .torchscript import batch1_example, deploy_state, flatten_outputs, probe

__all__ = ["export_onnx_model", "MIN_OPSET", "INT16_OPSET", "default_opset", "newest_opset"]

log = get_logger("export")


def default_opset() -> int:
    """The newest opset torch's TorchScript exporter calls stable (torch's own default)."""
    try:
        from torch.onnx._constants import ONNX_DEFAULT_OPSET
        return int(ONNX_DEFAULT_OPSET)
    except (ImportError, AttributeError):  # pragma: no cover - older/newer torch layouts
        return 17


def _calibrated(result: QuantResult) -> list[FakeQuantizer]:
    """The deploy model's quantizers whose parameters the result holds, calibrated."""
    return [q for q in quantizers(result.deploy_model).values()
            if q.key in result.params and result.params[q.key].is_set]


def _needs_int16(q: FakeQuantizer) -> bool:
    if q.spec.bit_width > 16:    # a 32-bit bias: an int32 DequantizeLinear, any opset >= 13
        return False
    r = q.spec.int_range
    return r.qmin < -128 or r.qmax > 255 or (r.qmin < 0 and r.qmax > 127)


def _resolve_opset(result: QuantResult, opset_version, qs: list[FakeQuantizer]) -> int:
    source = "opset_version="
    if opset_version is None:
        opset_version = getattr(result.config, "onnx_opset_version", None)
        source = "config onnx_opset_version"
    newest = newest_opset()
    if opset_version is None:
        opset = default_opset()
        wide = [q.key for q in qs if _needs_int16(q)]
        if wide and opset < INT16_OPSET:
            log.info("opset %d chosen for the ONNX export: %d tensor(s) wider than 8 bits (e.g. "
                     "%s) need int16 Q/DQ", INT16_OPSET, len(wide), wide[0])
            opset = INT16_OPSET
        return opset
    if isinstance(opset_version, bool) or not isinstance(opset_version, int):
        raise ExportError(f"opset version must be an integer, got {opset_version!r}",
                          where=source, hint=f"pass e.g. opset_version={default_opset()}")
    if not MIN_OPSET <= opset_version <= newest:
        raise ExportError(f"opset {opset_version} is out of range: the Q/DQ export supports "
                          f"opsets {MIN_OPSET} (the first with per-channel QuantizeLinear) to "
                          f"{newest} (the newest torch's exporter and the installed onnx both "
                          "support)", where=source,
                          hint=f"pass opset_version={default_opset()} or leave it unset")
    return opset_version


def newest_opset() -> int:
    """The newest opset both torch's exporter and the installed onnx package support."""
    import onnx
    newest = int(onnx.defs.onnx_opset_version())
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET
        newest = min(newest, int(ONNX_MAX_OPSET))
    except (ImportError, AttributeError):  # pragma: no cover - other torch layouts
        pass
    return newest


# ----------------------------------------------------------------------------- export
def _qdq_copy(model: nn.Module, points: list[Point]) -> nn.Module:
    """A deep copy of ``model`` in which every calibrated quantizer is a ``QDQModule``."""
    dup = copy.deepcopy(model)
    by_key = {p.key: p for p in points}
    for parent in list(dup.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantizer) and child.key in by_key:
                setattr(parent, name, QDQModule(by_key[child.key]))
    return dup.eval()


def _names(result: QuantResult, n_inputs: int, n_outputs: int) -> tuple[list[str], list[str]]:
    ins = [n.name for n in result.graph.inputs]
    if len(ins) != n_inputs or len(set(ins)) != len(ins):
        ins = [f"input_{i}" for i in range(n_inputs)]
    return ins, [f"output_{i}" for i in range(n_outputs)]


def _export_error_in(exc: BaseException) -> ExportError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ExportError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def export_onnx_model(result: QuantResult, output_dir: str | Path = "quantize_result",
                      dynamic_batch: bool = False, opset_version: int | None = None) -> Path:
    """Export ``<output_dir>/<Model>_int.onnx`` (atomically) and return its path.

    ``opset_version``: the argument, else the config's ``onnx_opset_version``, else torch's
    default opset (raised to 21 when a tensor needs int16). ``dynamic_batch`` makes axis 0 of
    every input and output symbolic (``batch``); otherwise the model is fixed to batch size 1.
    Raises ``ExportError`` for a point ONNX cannot encode, a non-tensor output, a failure of
    ``torch.onnx.export`` (with torch's reason) or a model ``onnx.checker`` rejects.
    """
    import onnx

    name = result.graph.model_name
    path = Path(output_dir) / f"{name}_int.onnx"
    example = batch1_example(result, "export_onnx_model()")
    qs = _calibrated(result)
    opset = _resolve_opset(result, opset_version, qs)
    points = [plan_point(q, result.params[q.key], opset) for q in qs]
    with deploy_state(result) as model:
        out = probe(result, model, example, "export_onnx_model()")
        in_names, out_names = _names(result, len(example), len(flatten_outputs(out)))
        axes = None
        if dynamic_batch:
            axes = {n: {0: "batch"} for n, a in zip(in_names, example) if a.dim() >= 1}
            axes.update({n: {0: "batch"} for n, t in zip(out_names, flatten_outputs(out))
                         if t.dim() >= 1})
        traced = _qdq_copy(model, points)
        use_onnx_forms(result, traced)
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                # torch's own deprecation notices about its exporter, not the user's code
                warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX")
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        module=r"torch\.onnx")
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
                warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1")
                warnings.filterwarnings("ignore", message=r".*opset version \d+ is not supported")
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                        module=r"nndct_lite\.")
                # torch's stubs type f as a path; the TorchScript exporter takes a file object
                torch.onnx.export(traced, example, buf,  # type: ignore[arg-type]
                                  dynamo=False, opset_version=opset,
                                  do_constant_folding=False, export_params=True,
                                  input_names=in_names, output_names=out_names,
                                  dynamic_axes=axes, training=torch.onnx.TrainingMode.EVAL)
        except ExportError:
            raise
        except Exception as exc:
            inner = _export_error_in(exc)
            if inner is not None:  # ours, raised inside the trace and wrapped by torch
                raise inner from exc
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}",
                              where=f"{path} (opset {opset})",
                              hint="see torch's reason above; an op without an ONNX symbolic "
                                   "at this opset may need a newer opset_version") from exc
    proto = onnx.load_model_from_string(buf.getvalue())
    uint16_zero_points(proto)
    proto.producer_name, proto.producer_version = "nndct_lite", __version__
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejects the exported model: {exc}",
                          where=f"{path} (opset {opset})",
                          hint="report this with the model; the export wrote nothing") from exc
    atomic_write_bytes(path, proto.SerializeToString())
    log.info("%s_int.onnx is generated.(%s): opset %d, %d Q/DQ pairs", name, path, opset,
             len(points))
    return path
