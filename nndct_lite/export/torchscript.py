"""``<Model>_int.pt``: the test-mode quantized model traced to TorchScript.

The fake-quant steps of ``nndct_lite.numerics`` are plain aten ops (multiply, round, compare,
clamp), so the trace holds the exact test-mode arithmetic and needs neither nndct_lite nor a
custom op to load: ``torch.jit.load(path)`` is enough. The trace runs on a batch-size-1 pass
derived from the result's example input (decisions.md 9); no shape is baked in, so the module
accepts any batch size and returns, bit for bit, what the test-mode model returns.

The helpers ``batch1_example``, ``deploy_state`` and ``probe`` are shared with the ONNX exporter.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import zipfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from .._log import get_logger
from ..errors import ExportError
from ..graph.ir import Node
from ..quant.freeze import batch1
from ..quant.modules import QuantOp
from ..result import QuantResult
from ..state.files import atomic_write_bytes

__all__ = ["export_torch_script", "batch1_example", "deploy_state", "probe", "check_outputs",
           "flatten_outputs"]

log = get_logger("export")


# ----------------------------------------------------------------------------- shared helpers
def batch1_example(result: QuantResult, what: str) -> tuple[torch.Tensor, ...]:
    """The result's example input cut to batch size 1, on the result's device."""
    return batch1(result.example, result.device, what)


def _drop_weight_caches(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, QuantOp):
            m.__dict__.pop("_wcache", None)


@contextlib.contextmanager
def deploy_state(result: QuantResult) -> Iterator[nn.Module]:
    """The result's private deploy model (test mode, no test-mode shortcuts, eval) with
    autograd off, so no straight-through ``autograd.Function`` enters the trace. The model is
    the result's own copy: nothing the user holds changes."""
    model = result.deploy_model
    model.eval()
    with torch.no_grad():
        yield model


def probe(result: QuantResult, model: nn.Module, example: tuple, what: str) -> Any:
    """Run ``model`` (inside ``deploy_state``) on the batch-1 example, check that every output
    is a tensor, and drop the weight caches the run filled. Returns the outputs."""
    try:
        out = model(*example)
    except Exception as exc:
        raise ExportError(f"the quantized {result.graph.model_name} fails on the batch-1 "
                          f"example input: {type(exc).__name__}: {exc}", where=f"{what}",
                          hint="check that the example input_args fit the model") from exc
    check_outputs(result, out, what)
    _drop_weight_caches(model)
    return out


def _describe(value: Any) -> str:
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    if isinstance(value, (bool, int, float, str)) or value is None:
        return f"{article} {kind} ({value!r})"
    return f"{article} {kind}"


def check_outputs(result: QuantResult, out: Any, what: str) -> None:
    """Raise ExportError unless ``out`` is a tensor or a (nested) tuple/list/dict of tensors;
    the error names the graph node that produced the offending value."""

    def walk(value, ref, path: str) -> None:
        if isinstance(value, torch.Tensor):
            return
        if isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                sub = ref[i] if isinstance(ref, (tuple, list)) and i < len(ref) else None
                walk(v, sub, f"{path}[{i}]")
            return
        if isinstance(value, dict):
            for k, v in value.items():
                sub = ref.get(k) if isinstance(ref, dict) else None
                walk(v, sub, f"{path}[{k!r}]")
            return
        node = (f"node {ref.name}" if isinstance(ref, Node)
                else "a literal in the model's return statement")
        raise ExportError(
            f"{what} needs tensor outputs, but {path} of {result.graph.model_name} is "
            f"{_describe(value)}", where=node,
            hint="return only tensors (or tuples/lists/dicts of tensors) from forward(); "
                 "compute Python values such as shapes outside the model")

    walk(out, result.graph.output, "output")


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """Output tensors in the order torch's exporters flatten them (dicts by value order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    return []


# ----------------------------------------------------------------------------- TorchScript
def reproducible_archive(data: bytes) -> bytes:
    """``torch.jit.save``'s zip made byte-identical across runs: the random
    ``.data/serialization_id`` becomes a digest of the other records, and the ``*.debug_pkl``
    records (source ranges with absolute paths of this machine) are left out; every other
    record is kept, in order, stored uncompressed with a fixed timestamp. ``torch.jit.load``
    reads the result as it reads the original."""
    src = zipfile.ZipFile(io.BytesIO(data))
    kept = [i for i in src.infolist() if not i.filename.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for info in kept:
        if not info.filename.endswith("serialization_id"):
            digest.update(info.filename.encode() + b"\0" + src.read(info))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in kept:
            body = src.read(info)
            if info.filename.endswith("serialization_id"):
                body = str(int(digest.hexdigest()[:32], 16)).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, body)
    return out.getvalue()


def _python_ops(graph: torch._C.Graph) -> list[str]:
    # torch's stubs omit Node.pyname, which the prim::PythonOp nodes have
    return sorted({n.pyname() for n in graph.nodes()  # type: ignore[attr-defined]
                   if n.kind() == "prim::PythonOp"})


def export_torch_script(result: QuantResult, output_dir: str | Path = "quantize_result",
                        verbose: bool = False) -> torch.jit.ScriptModule:
    """Trace the test-mode model and save ``<output_dir>/<Model>_int.pt`` (atomically).

    Returns the traced ``ScriptModule``. ``verbose=True`` prints its inlined graph, as the
    original does. Raises ``ExportError`` when the model cannot be traced or saved.
    """
    name = result.graph.model_name
    path = Path(output_dir) / f"{name}_int.pt"
    example = batch1_example(result, "export_torch_script()")
    with deploy_state(result) as model:
        probe(result, model, example, "export_torch_script()")
        try:
            with warnings.catch_warnings():
                # tensors built inside nndct_lite's numerics (scales, per-channel multipliers)
                # are constants by design; warnings from the user's own code still show
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                        module=r"nndct_lite\.")
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
                script = torch.jit.trace(model, example, check_trace=False, strict=False)
        except Exception as exc:
            raise ExportError(f"torch.jit.trace failed on the quantized {name}: "
                              f"{type(exc).__name__}: {exc}", where=str(path),
                              hint="the generated model must be traceable; see the traceback "
                                   "for the op that failed") from exc
    py_ops = _python_ops(script.inlined_graph)
    if py_ops:
        raise ExportError(f"the trace of {name} calls Python functions that TorchScript cannot "
                          f"save: {', '.join(py_ops)}", where=str(path),
                          hint="replace custom torch.autograd.Function calls in the model by "
                               "torch ops, or keep those layers out of the exported model")
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            torch.jit.save(script, buf)
    except Exception as exc:
        raise ExportError(f"torch.jit.save failed: {type(exc).__name__}: {exc}", where=str(path),
                          hint="see the traceback for the value TorchScript cannot serialise"
                          ) from exc
    atomic_write_bytes(path, reproducible_archive(buf.getvalue()))
    log.info("%s_int.pt is generated.(%s)", name, path)
    if verbose:
        print(script.inlined_graph)
    return script
