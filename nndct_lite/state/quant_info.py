"""``quant_info.json``: deterministic writer and a versioned, tolerant reader.

Keys are the long node names used in the generated code comments and by ``layer_name`` rules
(decisions.md 3); the reader also accepts the normalized keys of vai_q_pytorch 3.5
(``Model::nndct_relu_2``). Power-of-two entries are ``[bit_width, fix_pos]``; float-scale entries
``[bit_width, scale, zero_point, float_max]`` (lists per channel)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import QuantInfoError
from ..graph.ir import Graph
from ..numerics.params import QuantParams
from .files import atomic_write_text
from .layout import QUANT_INFO_FILE

__all__ = ["QuantInfo", "graph_md5", "write_quant_info", "read_quant_info", "VERSION"]

VERSION = "nndct_lite-0.1.0+torch" + torch.__version__.split("+")[0]
FILE = QUANT_INFO_FILE


def graph_md5(graph: Graph) -> str:
    """md5 of the graph's structure: op kinds and their input kinds, in order (not names)."""
    desc = [[n.kind.value, [i.kind.value for i in n.inputs]] for n in graph.nodes]
    return hashlib.md5(json.dumps(desc, separators=(",", ":")).encode()).hexdigest()


@dataclass
class QuantInfo:
    param: dict[str, QuantParams] = field(default_factory=dict)
    output: dict[str, QuantParams] = field(default_factory=dict)
    input: dict[str, QuantParams] = field(default_factory=dict)
    fast_finetuned: bool = False
    bias_corrected: bool = False
    version: str = VERSION
    graph_md5: str = ""
    bias_corr_sha256: str = ""
    param_sha256: str = ""      # sha256 of the param.pth this result was exported with


def _entry(p: QuantParams | None, bw: int) -> list[Any]:
    if p is None or not p.is_set:
        return [bw, None]
    if p.fix_pos is not None:
        fp = list(p.fix_pos) if isinstance(p.fix_pos, tuple) else int(p.fix_pos)
        return [p.bit_width, fp]
    as_list = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return [p.bit_width, as_list(p.scale), as_list(p.zero_point), as_list(p.float_max)]


_HINT = "re-run calibration (quant_mode='calib', then export_quant_config()) to rewrite it"
_ENTRY = "expected [[bit_width, fix_pos]] or [[bit_width, scale, zero_point, float_max]]"


def _params(entry: object, where: str) -> QuantParams:
    try:
        return _parse_params(entry, where)
    except QuantInfoError:
        raise
    except (TypeError, ValueError) as exc:
        raise QuantInfoError(f"malformed entry {_short(entry)} ({exc}); {_ENTRY}", where=where,
                             hint=_HINT) from exc


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _first(v: object, where: str) -> Any:
    if isinstance(v, list) and v:
        return v[0]
    raise QuantInfoError(f"malformed entry {_short(v)}; {_ENTRY}", where=where, hint=_HINT)


def _parse_params(entry: object, where: str) -> QuantParams:
    if not isinstance(entry, list) or not entry or not isinstance(entry[0], int) \
            or isinstance(entry[0], bool):
        raise QuantInfoError(f"malformed entry {_short(entry)}; {_ENTRY}", where=where,
                             hint=_HINT)
    bw = entry[0]
    if len(entry) == 2:
        fp = entry[1]
        if fp is None:
            return QuantParams(bw)
        if isinstance(fp, list):
            return QuantParams(bw, fix_pos=tuple(int(v) for v in fp), axis=0)
        if isinstance(fp, bool) or not isinstance(fp, int):
            raise QuantInfoError(f"fix position must be an integer, got {fp!r}", where=where,
                                 hint=_HINT)
        if not -127 <= fp <= 127:
            raise QuantInfoError(f"fix position {fp} is outside [-127, 127]: 2^{-fp} is no "
                                 "float32 step", where=where, hint=_HINT)
        return QuantParams(bw, fix_pos=fp)
    if len(entry) == 4:
        scale, zp, fmax = entry[1:]
        if isinstance(scale, list):
            return QuantParams(bw, scale=tuple(scale), zero_point=tuple(int(z) for z in zp),
                               float_max=tuple(fmax), axis=0)
        return QuantParams(bw, scale=float(scale), zero_point=int(zp), float_max=float(fmax))
    raise QuantInfoError(f"entry {entry!r} has {len(entry)} values; expected 2 or 4", where=where,
                         hint=_HINT)


def write_quant_info(output_dir: str | Path, info: QuantInfo) -> Path:
    doc = {
        "param": {k: [_entry(v, v.bit_width)] for k, v in info.param.items()},
        "output": {k: [_entry(v, v.bit_width)] for k, v in info.output.items()},
        "input": {k: [_entry(v, v.bit_width)] for k, v in info.input.items()},
        "fast_finetuned": info.fast_finetuned,
        "bias_corrected": info.bias_corrected,
        "version": info.version,
        "graph_md5": info.graph_md5,
    }
    if info.bias_corr_sha256:
        doc["bias_corr_sha256"] = info.bias_corr_sha256
    if info.param_sha256:
        doc["param_sha256"] = info.param_sha256
    text = json.dumps(doc, indent=2) + "\n"
    return atomic_write_text(Path(output_dir) / FILE, text)


def read_quant_info(output_dir: str | Path, graph: Graph) -> QuantInfo:
    """Read and check against ``graph``; keys may be long or normalized node names."""
    path = Path(output_dir) / FILE
    if not path.is_file():
        raise QuantInfoError("quantization calibration result file does not exist",
                             where=str(path), code="QUANTIZER_TORCH_NO_CALIB_RESULT",
                             hint="run the script with quant_mode='calib' and call "
                                  "quantizer.export_quant_config() before quant_mode='test'")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QuantInfoError(f"quant_info.json is not valid JSON ({exc}); the file is "
                             "corrupted or truncated", where=str(path),
                             hint="re-run calibration to rewrite it") from exc
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k, {}), dict)
                                            for k in ("param", "output", "input")):
        raise QuantInfoError("quant_info.json must be an object with 'param', 'output' and "
                             "'input' objects", where=str(path), hint=_HINT)
    by_norm = {n.normalized: n.name for n in graph.nodes}
    info = QuantInfo(fast_finetuned=bool(doc.get("fast_finetuned", False)),
                     bias_corrected=bool(doc.get("bias_corrected", False)),
                     version=str(doc.get("version", "")), graph_md5=str(doc.get("graph_md5", "")),
                     bias_corr_sha256=str(doc.get("bias_corr_sha256", "")),
                     param_sha256=str(doc.get("param_sha256", "")))
    info.param = {k: _params(_first(v, f"{path}: /param/{k}"), f"{path}: /param/{k}")
                  for k, v in doc.get("param", {}).items()}
    for section in ("output", "input"):
        entries = {}
        for k, v in doc.get(section, {}).items():
            w = f"{path}: /{section}/{k}"
            entries[by_norm.get(k, k)] = _params(_first(v, w), w)
        setattr(info, section, entries)
    return info
