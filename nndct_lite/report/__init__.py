"""Quantization reports: per-layer SQNR of the quantized model against the float model.

>>> rows = layer_report(session, [x1, x2])       # doctest: +SKIP
>>> write_report(rows, "quantize_result")        # report.md (+ report_chart.png)  # doctest: +SKIP

See docs/reports.md.
"""
from .layers import (CHART_FILE, REPORT_FILE, WORST_N, LayerRow, TensorQuant, format_table,
                     layer_report, log_report, render_chart, render_markdown, short_name,
                     sqnr_db, worst_rows, write_report)

__all__ = ["layer_report", "write_report", "log_report", "LayerRow", "TensorQuant",
           "format_table", "render_markdown", "render_chart", "worst_rows", "short_name",
           "sqnr_db", "REPORT_FILE", "CHART_FILE", "WORST_N"]
