"""``quant_info.json``: deterministic writer and a versioned, tolerant reader.

Keys are the long node names used in the generated code comments and by ``layer_name`` rules
(decisions.md 3); the reader also accepts the normalized keys of vai_q_pytorch 3.5
(``Model::nndct_relu_2``). Power-of-two entries are ``[bit_width, fix_pos]``; float-scale entries
``[bit_width, scale, zero_point, float_max]`` (lists per channel)."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import QuantInfoError
from ..graph.ir import Graph
from ..numerics.params import QuantParams
from .files import atomic_write_text
from .layout import QUANT_INFO_FILE

__all__ = ["QuantInfo", "graph_md5", "run_id", "write_quant_info", "read_quant_info", "VERSION"]

VERSION = "nndct_lite-0.1.0+torch" + torch.__version__.split("+")[0]
FILE = QUANT_INFO_FILE
#: widest integer a quant_info.json entry may hold (32: the int32 bias of CPU/GPU kernels)
MAX_BIT_WIDTH = 32


def graph_md5(graph: Graph) -> str:
    """md5 of the graph's structure: op kinds and their input kinds, in order (not names)."""
    desc = [[n.kind.value, [i.kind.value for i in n.inputs]] for n in graph.nodes]
    return hashlib.md5(json.dumps(desc, separators=(",", ":")).encode()).hexdigest()


def run_id(graph_digest: str, settings: dict[str, Any]) -> str:
    """The id every file of one run carries: a digest of the graph and of what the run is set to
    do, so the same model and config give the same id (outputs stay byte-identical) and files of
    runs with another model or config never pair up."""
    text = json.dumps({"graph": graph_digest, "settings": settings}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    #: what the calibration ran with (``config.explain.plan_settings``); empty in older files
    settings: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""            #: ``run_id(graph_md5, settings)``; resolved_config/report carry it
    #: tensors with a float ``datatype`` (casts, no entry above): section -> key -> datatype
    dtype: dict[str, dict[str, str]] = field(default_factory=dict)


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


def _int(v: object, what: str, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise QuantInfoError(f"{what} must be an integer, got {_short(v)}", where=where,
                             hint=_HINT)
    if not lo <= v <= hi:
        raise QuantInfoError(f"{what} {v} is outside [{lo}, {hi}]", where=where, hint=_HINT)
    return v


def _float(v: object, what: str, where: str) -> float:
    """A finite float >= 0 (JSON numbers; NaN/Infinity literals and strings are refused)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise QuantInfoError(f"{what} must be a finite number >= 0, got {_short(v)}",
                             where=where, hint=_HINT)
    return float(v)


def _channels(v: object, n: int | None, what: str, where: str) -> list[object]:
    if not isinstance(v, list) or not v or (n is not None and len(v) != n):
        want = "a non-empty list" if n is None else f"a list of {n} values (one per channel)"
        raise QuantInfoError(f"{what} must be {want}, got {_short(v)}", where=where, hint=_HINT)
    return v


def _scale_triple(scale: object, zp: object, fmax: object, where: str) -> tuple[float, int, float]:
    s, f = _float(scale, "scale", where), _float(fmax, "float_max", where)
    z = _int(zp, "zero point", where, -(2 ** 31), 2 ** 32 - 1)
    if s == 0.0 and f != 0.0:    # an all-zero tensor/channel has scale 0 and float_max 0
        raise QuantInfoError(f"scale 0 with float_max {f}: only an all-zero range has scale 0",
                             where=where, hint=_HINT)
    return s, z, f


def _parse_params(entry: object, where: str) -> QuantParams:
    if not isinstance(entry, list) or not entry:
        raise QuantInfoError(f"malformed entry {_short(entry)}; {_ENTRY}", where=where,
                             hint=_HINT)
    bw = _int(entry[0], "bit width", where, 1, MAX_BIT_WIDTH)
    if len(entry) == 2:
        fp = entry[1]
        if fp is None:
            return QuantParams(bw)
        if isinstance(fp, list):
            fps = [_int(v, "fix position", where, -127, 127)
                   for v in _channels(fp, None, "fix positions", where)]
            return QuantParams(bw, fix_pos=tuple(fps), axis=0)
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
            n = len(_channels(scale, None, "scales", where))
            rows = [_scale_triple(a, b, c, where) for a, b, c in
                    zip(scale, _channels(zp, n, "zero points", where),
                        _channels(fmax, n, "float_max values", where))]
            return QuantParams(bw, scale=tuple(r[0] for r in rows),
                               zero_point=tuple(r[1] for r in rows),
                               float_max=tuple(r[2] for r in rows), axis=0)
        s, z, f = _scale_triple(scale, zp, fmax, where)
        return QuantParams(bw, scale=s, zero_point=z, float_max=f)
    raise QuantInfoError(f"entry {_short(entry)} has {len(entry)} values; expected 2 or 4",
                         where=where, hint=_HINT)


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
    if any(info.dtype.values()):   # as vai_q_pytorch 3.5: one datatype per tensor, in a list
        doc["dtype"] = {s: {k: [v] for k, v in info.dtype.get(s, {}).items()}
                        for s in ("param", "output", "input")}
    if info.run_id:
        doc["run_id"] = info.run_id
    if info.settings:
        doc["settings"] = info.settings
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
    except OSError as exc:
        raise QuantInfoError(f"quant_info.json cannot be read: {exc.strerror or exc}",
                             where=str(path), hint="check the file's permissions") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise QuantInfoError(f"quant_info.json is not valid JSON ({exc}); the file is "
                             "corrupted or truncated", where=str(path),
                             hint="re-run calibration to rewrite it") from None
    except RecursionError:
        raise QuantInfoError("quant_info.json is nested too deeply to be a calibration result",
                             where=str(path), hint=_HINT) from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k, {}), dict)
                                            for k in ("param", "output", "input")):
        raise QuantInfoError("quant_info.json must be an object with 'param', 'output' and "
                             "'input' objects", where=str(path), hint=_HINT)
    by_norm = {n.normalized: n.name for n in graph.nodes}
    info = QuantInfo(fast_finetuned=_flag(doc, "fast_finetuned", path),
                     bias_corrected=_flag(doc, "bias_corrected", path),
                     version=_text(doc, "version", path), graph_md5=_text(doc, "graph_md5", path),
                     bias_corr_sha256=_text(doc, "bias_corr_sha256", path),
                     param_sha256=_text(doc, "param_sha256", path),
                     settings=_settings(doc, path), run_id=_text(doc, "run_id", path),
                     dtype=_dtypes(doc, path))
    info.param = {k: _params(_first(v, f"{path}: /param/{k}"), f"{path}: /param/{k}")
                  for k, v in doc.get("param", {}).items()}
    for section in ("output", "input"):
        entries = {}
        for k, v in doc.get(section, {}).items():
            w = f"{path}: /{section}/{k}"
            entries[by_norm.get(k, k)] = _params(_first(v, w), w)
        setattr(info, section, entries)
    return info


def _flag(doc: dict, key: str, path: Path) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise QuantInfoError(f"{key} must be true or false, got {_short(value)}",
                             where=f"{path}: /{key}", hint=_HINT)
    return value


def _text(doc: dict, key: str, path: Path) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or len(value) > 200:
        raise QuantInfoError(f"{key} must be a short string, got {_short(value)}",
                             where=f"{path}: /{key}", hint=_HINT)
    return value


def _settings(doc: dict, path: Path) -> dict[str, Any]:
    """The ``settings`` record: a table of setting objects and node -> kind -> table index."""
    value = doc.get("settings", {})
    where = f"{path}: /settings"
    ok = isinstance(value, dict) and (not value or (
        isinstance(value.get("target_device"), str) and isinstance(value.get("table"), list)
        and all(isinstance(t, dict) for t in value["table"])
        and isinstance(value.get("nodes"), dict)
        and all(isinstance(row, dict) and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(value["table"])
            for i in row.values()) for row in value["nodes"].values())))
    if not ok:
        raise QuantInfoError("settings must be {target_device, table: [objects], nodes: {node: "
                             "{kind: table index}}}", where=where, hint=_HINT)
    return value


_DTYPES = ("int", "bfloat16", "float16", "float32")


def _dtypes(doc: dict, path: Path) -> dict[str, dict[str, str]]:
    """The ``dtype`` section: ``{param|output|input: {key: [datatype]}}``."""
    value = doc.get("dtype", {})
    out: dict[str, dict[str, str]] = {}
    if not isinstance(value, dict):
        raise QuantInfoError("dtype must be an object {param, output, input}",
                             where=f"{path}: /dtype", hint=_HINT)
    for section, entries in value.items():
        where = f"{path}: /dtype/{section}"
        if section not in ("param", "output", "input") or not isinstance(entries, dict):
            raise QuantInfoError("dtype sections are param, output and input objects",
                                 where=where, hint=_HINT)
        for key, v in entries.items():
            if not (isinstance(v, list) and len(v) >= 1 and v[0] in _DTYPES):
                raise QuantInfoError(f"datatype of {key} must be a list like [\"bfloat16\"] "
                                     f"with one of {', '.join(_DTYPES)}, got {_short(v)}",
                                     where=f"{where}/{key}", hint=_HINT)
            out.setdefault(section, {})[key] = v[0]
    return out
