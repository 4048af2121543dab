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
from ...quant.build import layer_of
from ...state.files import atomic_write_bytes, atomic_write_text
from .build import xir_name

__all__ = ["dump_deploy_check"]


def _codes(value: torch.Tensor, q) -> np.ndarray:
    p = q.params
    if p is None or p.fix_pos is None or isinstance(p.fix_pos, tuple):
        raise ExportError("deploy_check needs per-tensor power-of-two parameters", where=q.key)
    bw = q.spec.bit_width
    if bw > 16:
        raise ExportError(f"deploy_check dumps bit widths up to 16, {q.key} has {bw}", where=q.key)
    codes = torch.round(value.detach().double() * 2.0 ** p.fix_pos).cpu().numpy()
    return codes.astype(np.int8 if bw <= 8 else np.int16)


def _dump(folder: Path, name: str, value: torch.Tensor, q, shapes: list[str]) -> None:
    arr = value.detach().cpu().float().numpy()
    if arr.ndim == 4:
        arr = arr.transpose(0, 2, 3, 1)
        value = value.permute(0, 2, 3, 1)
    atomic_write_bytes(folder / f"{name}.bin", np.ascontiguousarray(arr).tobytes())
    atomic_write_bytes(folder / f"{name}_fix.bin",
                       np.ascontiguousarray(_codes(value, q)).tobytes())
    shapes.append(f"{list(arr.shape)}: {name}")


def dump_deploy_check(session, output_dir: Path) -> Path:
    model, graph = session.model, session.graph
    folder = Path(output_dir) / "deploy_check_data_int" / graph.model_name
    folder.mkdir(parents=True, exist_ok=True)
    example = tuple(a[:1] if isinstance(a, torch.Tensor) else a for a in session.example)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for node in graph.nodes:
        mod = layer_of(model, node)
        if mod._modules.get("out_q") is not None:
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
        mod = layer_of(model, node)
        for key in ("weight", "bias"):
            q = mod._modules.get(f"{key}_q")
            if q is not None:
                t = mod._qweight() if key == "weight" else mod._qbias()
                _dump(folder, xir_name(f"{graph.model_name}::{node.param_names[key]}"), t, q,
                      shapes)
        if node.name in captured:
            _dump(folder, xir_name(node.name), captured[node.name], mod._modules["out_q"], shapes)
    atomic_write_text(folder / "shape.txt", "\n".join(shapes) + "\n")
    return folder
