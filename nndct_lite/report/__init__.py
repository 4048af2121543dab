"""Quantization reports: per-layer SQNR of the quantized model against the float model.

>>> rows = layer_report(session, [x1, x2])       # doctest: +SKIP
>>> write_report(rows, "quantize_result")        # report.md, report.json  # doctest: +SKIP
>>> write_chart(rows, "quantize_result")         # report_chart.png (matplotlib)  # doctest: +SKIP

See docs/reports.md.
"""
from .files import (CHART_FILE, REPORT_FILE, REPORT_FORMAT, REPORT_JSON, load_rows, render_chart,
                    write_chart, write_report)
from .layers import layer_report, sqnr_db
from .render import WORST_N, format_table, log_report, render_markdown, worst_rows
from .rows import LayerRow, TensorQuant, short_name

__all__ = ["layer_report", "write_report", "write_chart", "load_rows", "log_report", "LayerRow",
           "TensorQuant", "format_table", "render_markdown", "render_chart", "worst_rows",
           "short_name", "sqnr_db", "REPORT_FILE", "REPORT_JSON", "CHART_FILE", "REPORT_FORMAT",
           "WORST_N"]
