"""The report's files: ``report.md`` and ``report.json`` after every calibration, and the
``report_chart.png`` bar chart on request (``NNDCT_LITE_REPORT_CHART=1`` at calibration, or
``nndct-lite report DIR --chart`` afterwards, from ``report.json``). The chart is opt-in because
matplotlib's import and one render cost about 0.6 s, more than the rest of the report and a
large part of a small model's calibration. See docs/reports.md."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

from .._log import get_logger
from ..errors import InputError
from ..state.files import atomic_write_bytes, atomic_write_text
from ..state.layout import QUANT_INFO_FILE
from .render import WORST_N, fmt_db, model_name, render_markdown, worst_rows
from .rows import LayerRow

__all__ = ["REPORT_FILE", "REPORT_JSON", "CHART_FILE", "REPORT_FORMAT", "write_report",
           "write_chart", "load_rows", "render_chart"]

log = get_logger("report")

REPORT_FILE = "report.md"
REPORT_JSON = "report.json"
CHART_FILE = "report_chart.png"
#: the ``format`` field of report.json
REPORT_FORMAT = "nndct_lite.report/1"


def write_report(rows: Sequence[LayerRow], output_dir: str | Path, *, worst: int = WORST_N,
                 chart: bool = False, run_id: str = "") -> Path:
    """Write ``<output_dir>/report.md`` and ``report.json`` (atomically) and, with ``chart``,
    ``report_chart.png`` (needs matplotlib). Without ``chart`` a chart left by an earlier
    calibration is removed, so the folder never shows a chart of other numbers. Returns the
    path of ``report.md``."""
    output_dir = Path(output_dir)
    path = atomic_write_text(output_dir / REPORT_FILE, render_markdown(rows, worst=worst))
    doc: dict[str, object] = {"format": REPORT_FORMAT, "worst": worst}
    if run_id:    # the id of the calibration (quant_info.json's run_id) these numbers are from
        doc["run_id"] = run_id
    doc["nodes"] = [r.as_dict() for r in rows]
    atomic_write_text(output_dir / REPORT_JSON, json.dumps(doc, indent=1) + "\n")
    if chart:
        write_chart(rows, output_dir, worst=worst, missing_ok=True)
    else:
        stale = output_dir / CHART_FILE
        if stale.is_file():
            stale.unlink()
            log.info("removed the old %s (it showed an earlier calibration); draw a new one "
                     "with: nndct-lite report %s --chart", CHART_FILE, output_dir)
    log.info("=>Per-layer quantization report written.(%s)", path)
    return path


def write_chart(rows: Sequence[LayerRow], output_dir: str | Path, *, worst: int = WORST_N,
                missing_ok: bool = False) -> Path | None:
    """Render ``report_chart.png`` into ``output_dir`` (atomically). Without matplotlib:
    None and one log line with ``missing_ok``, else an InputError saying what to install."""
    chart = Path(output_dir) / CHART_FILE
    png = render_chart(rows, worst=worst)
    if png is None:
        msg = f"matplotlib is not installed: {CHART_FILE} not drawn"
        hint = "pip install 'nndct_lite[report]'"
        if not missing_ok:
            raise InputError(msg, where=str(chart), hint=hint)
        log.info("%s (%s)", msg, hint)
        return None
    return atomic_write_bytes(chart, png)


def check_same_run(folder: str | Path) -> None:
    """Refuse a folder whose report.json and quant_info.json come from two runs (a calibration
    stopped between its quant_info.json and its report leaves the older report)."""
    folder = Path(folder)
    ids = {}
    for name in (REPORT_JSON, QUANT_INFO_FILE):
        try:
            doc = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue   # absent or unreadable: the reader of that file says so
        if isinstance(doc, dict) and isinstance(doc.get("run_id"), str):
            ids[name] = doc["run_id"]
    if len(ids) == 2 and ids[REPORT_JSON] != ids[QUANT_INFO_FILE]:
        raise InputError(f"{folder} mixes two runs: {REPORT_JSON} is from run "
                         f"{ids[REPORT_JSON]}, {QUANT_INFO_FILE} from run {ids[QUANT_INFO_FILE]}",
                         where=str(folder / REPORT_JSON), code="NNDCT_LITE_MIXED_RUNS",
                         hint="calibrate again: export_quant_config() writes both")


def load_rows(path: str | Path) -> tuple[list[LayerRow], int]:
    """``(rows, worst)`` from a ``report.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    hint = ("calibrate again (export_quant_config() writes report.json next to report.md; "
            "NNDCT_LITE_REPORT_BATCHES=0 turns the report off)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no {REPORT_JSON} in {path.parent}", where=str(path),
                         code="NNDCT_LITE_NO_REPORT", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}", where=str(path),
                         hint=hint) from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise InputError(f"{path} is not a {REPORT_FORMAT} file (format: "
                         f"{doc.get('format') if isinstance(doc, dict) else None!r})",
                         where=str(path), hint=hint)
    try:
        rows = [LayerRow.from_dict(d) for d in doc["nodes"]]
        worst = int(doc.get("worst", WORST_N))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: malformed node entry ({type(exc).__name__}: {exc})",
                         where=f"{path}: nodes", hint=hint) from None
    return rows, worst


def render_chart(rows: Sequence[LayerRow], *, worst: int = WORST_N) -> bytes | None:
    """PNG bytes of a horizontal bar chart of per-node SQNR (worst in red), or None when
    matplotlib is not importable. Uses the object API (no pyplot, no global backend change)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    bad = {r.index for r in worst_rows(rows, worst)}
    finite = [r.sqnr_db for r in rows if math.isfinite(r.sqnr_db)]
    cap = (max(finite) if finite else 0.0) + 5.0
    values, colors, hatches = [], [], []
    for r in rows:
        v = r.sqnr_db
        if math.isnan(v):
            values.append(0.0)
        elif math.isinf(v):
            values.append(cap if v > 0 else min(finite, default=0.0) - 5.0)
        else:
            values.append(v)
        colors.append("#d62728" if r.index in bad else "#4c72b0")
        hatches.append("//" if math.isinf(v) else "")
    n = max(len(rows), 1)
    fig = Figure(figsize=(8.0, min(0.25 * n + 1.2, 60.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = list(range(len(rows)))
    bars = ax.barh(y, values, color=colors)
    for bar, hatch, r in zip(bars, hatches, rows):
        if hatch:
            bar.set_hatch(hatch)
        if r.index in bad:  # the numbers are in report.md; label only the worst bars
            x = bar.get_width()
            ax.text(x, bar.get_y() + bar.get_height() / 2, f" {fmt_db(r.sqnr_db)} ",
                    va="center", ha="left" if x >= 0 else "right", fontsize=6)
    ax.set_yticks(y)
    ax.set_yticklabels([r.short for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR of the node output, quantized vs float (dB)")
    ax.set_title(f"{model_name(rows)}: per-layer SQNR (red: worst {len(bad)})", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    # fixed margins instead of tight_layout(), which would draw the whole figure once more
    width_in = 8.0
    label_in = 0.1 + 0.06 * max((len(r.short) for r in rows), default=4)
    height_in = fig.get_figheight()
    fig.subplots_adjust(left=min(0.6, (label_in + 0.1) / width_in), right=0.97,
                        top=1.0 - 0.45 / height_in, bottom=0.5 / height_in)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


