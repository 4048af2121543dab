"""``explain-config``, ``show-quant-info``, ``report`` and ``xmodel`` subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:   # the command line imports torch and the pipeline lazily

    from ..numerics.params import QuantParams

from ..state.layout import QUANT_INFO_FILE
from .models import quant_session
from .._text import text_table

# =============================================================================== explain-config
def _cmd_explain(args: argparse.Namespace) -> int:
    from ..config import explain, format_explain, load_config
    if args.model is None:
        if args.input_shape:
            raise InputError("--input-shape needs a MODEL_SPEC", where="--input-shape",
                             hint="explain-config [--config F] MODEL_SPEC --input-shape ...")
        config, plan = load_config(args.config, bitwidth=args.bitwidth), None
        _emit_explain(args, config, plan, explain, format_explain)
        return 0
    with quant_session(args.model, args.input_shape, args.config, args.bitwidth) as s:
        _emit_explain(args, s.config, s.plan, explain, format_explain)
    return 0


def _emit_explain(args, config, plan, explain, format_explain) -> None:
    if args.json:
        print(json.dumps(explain(config, plan), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        sys.stdout.write(format_explain(config, plan))


# =============================================================================== show-quant-info
def _quant_info_path(arg: Path) -> Path:
    path = arg / QUANT_INFO_FILE if arg.is_dir() else arg
    if not path.is_file():
        raise InputError(f"{path} does not exist", where=str(arg),
                         code="QUANTIZER_TORCH_NO_CALIB_RESULT",
                         hint="give the quantize_result folder written by "
                              "export_quant_config() (calib mode)")
    return path


def _qp_text(p: QuantParams | None) -> tuple[str, str]:
    """(fix position or scale, extra) of one QuantParams."""
    if p is None or not p.is_set:
        return "-", "not calibrated (float)"
    if p.fix_pos is not None:
        if isinstance(p.fix_pos, tuple):
            return (f"{min(p.fix_pos)}..{max(p.fix_pos)}",
                    f"per channel ({len(p.fix_pos)}), step 2^-{max(p.fix_pos)} or coarser")
        lo, hi = -(2 ** (p.bit_width - 1)), 2 ** (p.bit_width - 1) - 1
        step = 2.0 ** -p.fix_pos
        return str(p.fix_pos), f"range [{lo * step:.6g}, {hi * step:.6g}], step 2^{-p.fix_pos}"
    if isinstance(p.scale, tuple):
        return (f"{min(p.scale):.6g}..{max(p.scale):.6g}",
                f"per channel ({len(p.scale)})")
    extra = f"zero_point {p.zero_point}" if p.zero_point else ""
    if p.float_max is not None:
        extra = ", ".join(x for x in (extra, f"float_max {p.float_max:.6g}") if x)
    return f"{p.scale:.6g}", extra


def _cmd_show_quant_info(args: argparse.Namespace) -> int:
    from ..graph.ir import Graph
    from ..state.quant_info import read_quant_info
    path = _quant_info_path(args.dir)
    if path.name != QUANT_INFO_FILE:     # read_quant_info reads <dir>/quant_info.json
        raise InputError(f"{path.name} is not quant_info.json", where=str(path),
                         hint="give the folder or its quant_info.json")
    # the graph only maps normalized keys (Model::nndct_relu_2) to long names: none here
    info = read_quant_info(path.parent, Graph(model_name="", nodes=[]))
    rows = []
    for section, entries in (("param", info.param), ("output", info.output),
                             ("input", info.input)):
        for key, p in entries.items():
            value, extra = _qp_text(p)
            rows.append((key, _kind_of(section, key), str(p.bit_width), value, extra))
    for section, casts in info.dtype.items():   # datatype bfloat16/float16/float32: no codes
        for key, dtype in casts.items():
            rows.append((key, _kind_of(section, key), "-", "-",
                         f"datatype {dtype} (not integer-quantized)"))
    pof2 = any(p.fix_pos is not None for p in (*info.param.values(), *info.output.values()))
    lines = [f"file:            {path}", f"version:         {info.version or '-'}",
             f"graph_md5:       {info.graph_md5 or '-'}",
             f"bias_corrected:  {'yes' if info.bias_corrected else 'no'}",
             f"fast_finetuned:  {'yes' if info.fast_finetuned else 'no'}",
             f"entries:         {len(info.param)} param, {len(info.output)} output, "
             f"{len(info.input)} input"
             + (f", {sum(len(c) for c in info.dtype.values())} float datatype"
                if info.dtype else ""),
             f"run_id:          {info.run_id or '-'}", ""]
    if rows:
        lines += text_table(("node / tensor", "kind", "bits", "fix pos" if pof2 else "scale",
                         "notes"), rows)
    else:
        lines.append("(no entries)")
    print("\n".join(lines))
    return 0


def _kind_of(section: str, key: str) -> str:
    """The tensor kind of a quant_info.json key in ``section``."""
    if section == "param":
        return "bias" if key.rsplit(".", 1)[-1].startswith("bias") else "weights"
    if "::input_" in key or "::nndct_input_" in key or section == "input":
        return "input"
    return "activation"


# =============================================================================== report
def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import CHART_FILE, REPORT_FILE, load_rows, write_chart
    from ..report.files import check_same_run
    path = args.dir / REPORT_FILE if args.dir.is_dir() else args.dir
    if not path.is_file():
        raise InputError(f"no {REPORT_FILE} in {args.dir}", where=str(path),
                         code="NNDCT_LITE_NO_REPORT",
                         hint="calibrate with torch_quantizer('calib', ...) and call "
                              "export_quant_config(): it writes the report next to "
                              "quant_info.json")
    check_same_run(path.parent)
    if args.chart:     # before printing: a missing report.json or matplotlib fails cleanly
        rows, worst = load_rows(path.parent)
        write_chart(rows, path.parent, worst=worst)
    sys.stdout.write(path.read_text(encoding="utf-8"))
    chart = path.with_name(CHART_FILE)
    if chart.is_file():
        print(f"\nchart: {chart}")
    return 0


def _cmd_xmodel(args: argparse.Namespace) -> int:
    from ..sim.cli import main_xmodel
    for attr, flag in (("file", "FILE"), ("input", "--input")):
        f = getattr(args, attr, None)
        if f is not None and not Path(f).is_file():
            raise InputError(f"{f} does not exist", where=flag,
                             hint="give an existing file" + (
                                 " (written by export_xmodel())" if attr == "file" else ""))
    rc = main_xmodel(args)
    # main_xmodel returns 1 only from its handlers of NndctError / OSError / ValueError, i.e.
    # for bad files or inputs: a user error here. Anything else propagates (internal, 1).
    return 2 if rc == 1 else rc
