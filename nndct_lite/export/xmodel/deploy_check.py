"""``export_xmodel(deploy_check=True)``: per-node golden data for comparison with hardware.

Layout (vai_q_pytorch.md 3.1): ``deploy_check_data_int/<Model>/`` with, per quantized node,
``<name>.bin`` (float32 values) and ``<name>_fix.bin`` (integer codes: int8 up to 8 bits, int16
above), the same for every parameter, and ``shape.txt`` (``<shape>: <node name>`` per line).
File names are the XIR op names (non-alphanumerics -> ``_``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import ExportError
from ...numerics.params import QuantParams
from ...result import QuantResult
from ...state.files import atomic_write_bytes, atomic_write_text
from .build import xir_name

__all__ = ["dump_deploy_check"]


def _codes(value: torch.Tensor, p: QuantParams | None, key: str) -> np.ndarray:
    if p is None or p.fix_pos is None or isinstance(p.fix_pos, tuple):
        raise ExportError("deploy_check needs per-tensor power-of-two parameters", where=key)
    bw = p.bit_width
    if bw > 16:
        raise ExportError(f"deploy_check dumps bit widths up to 16, {key} has {bw}", where=key)
    codes = torch.round(value.detach().double() * 2.0 ** p.fix_pos).cpu().numpy()
    return codes.astype(np.int8 if bw <= 8 else np.int16)


def _dump(folder: Path, name: str, value: torch.Tensor, p: QuantParams | None, key: str,
          shapes: list[str]) -> None:
    arr = value.detach().cpu().float().numpy()
    if arr.ndim == 4:
        arr = arr.transpose(0, 2, 3, 1)
        value = value.permute(0, 2, 3, 1)
    atomic_write_bytes(folder / f"{name}.bin", np.ascontiguousarray(arr).tobytes())
    atomic_write_bytes(folder / f"{name}_fix.bin",
                       np.ascontiguousarray(_codes(value, p, key)).tobytes())
    shapes.append(f"{list(arr.shape)}: {name}")


def dump_deploy_check(result: QuantResult, output_dir: Path) -> Path:
    graph, model = result.graph, result.deploy_model
    folder = Path(output_dir) / "deploy_check_data_int" / graph.model_name
    folder.mkdir(parents=True, exist_ok=True)
    example = tuple(a[:1] if isinstance(a, torch.Tensor) else a for a in result.example)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for node in graph.nodes:
        if result.of(node).quantized_output:
            mod = getattr(model, f"module_{node.index}")
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, n=node.name: captured.__setitem__(n, o.detach())))
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for h in hooks:
            h.remove()
    shapes: list[str] = []
    for node in graph.nodes:
        nr = result.of(node)
        for key, t, p, qkey in (("weight", nr.weight, nr.weight_params, nr.weight_key),
                                ("bias", nr.bias, nr.bias_params, nr.bias_key)):
            if qkey is not None and t is not None:
                _dump(folder, xir_name(f"{graph.model_name}::{node.param_names[key]}"), t, p,
                      qkey, shapes)
        if node.name in captured:
            _dump(folder, xir_name(node.name), captured[node.name], nr.output,
                  nr.output_key or node.name, shapes)
    atomic_write_text(folder / "shape.txt", "\n".join(shapes) + "\n")
    return folder
