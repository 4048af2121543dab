"""Rendering of report rows: the plain-text table, ``report.md`` and the log lines."""
from __future__ import annotations

import logging
import math
from typing import Sequence

from .._log import get_logger
from .._text import text_table
from .rows import LayerRow

__all__ = ["WORST_N", "worst_rows", "fmt_db", "format_table", "model_name", "render_markdown",
           "log_report"]

log = get_logger("report")

WORST_N = 5


def worst_rows(rows: Sequence[LayerRow], n: int = WORST_N) -> list[LayerRow]:
    """The ``n`` rows with the lowest finite (or -inf) SQNR, worst first."""
    scored = [r for r in rows if not math.isnan(r.sqnr_db) and r.sqnr_db != math.inf]
    return sorted(scored, key=lambda r: (r.sqnr_db, r.index))[:n]


def fmt_db(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.1f}"


_HEADERS = ("#", "node", "type", "input", "weights", "bias", "output", "SQNR dB", "drop dB",
            "quantizer dB", "weights dB")


def _cells(r: LayerRow) -> list[str]:
    ins = ", ".join(t.text() if t is not None else "float" for t in r.inputs) or "-"
    return [str(r.index), r.name, r.type, ins, r.weights.text() if r.weights else "",
            r.bias.text() if r.bias else "", r.output.text(), fmt_db(r.sqnr_db),
            fmt_db(r.drop_db), fmt_db(r.quantizer_sqnr_db), fmt_db(r.weight_sqnr_db)]


def format_table(rows: Sequence[LayerRow]) -> str:
    """A plain-text table (the one ``log_report`` logs)."""
    return "\n".join(text_table(_HEADERS, [_cells(r) for r in rows]))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def model_name(rows: Sequence[LayerRow]) -> str:
    return rows[0].name.split("::", 1)[0] if rows and "::" in rows[0].name else "model"


def render_markdown(rows: Sequence[LayerRow], *, worst: int = WORST_N) -> str:
    """The text of ``report.md``."""
    model = model_name(rows)
    bad = worst_rows(rows, worst)
    rank = {r.index: i + 1 for i, r in enumerate(bad)}
    batches = max((r.batches for r in rows), default=0)
    lines = [f"# Quantization report: {model}", ""]
    if not rows:
        lines += ["No node of this model carries an output quantizer: nothing was measured.", ""]
        return "\n".join(lines)
    lines += [
        f"{len(rows)} quantized node(s), measured on {batches} batch(es): the model ran once "
        "in float and once with the final quantization parameters.",
        "",
        "- **SQNR dB**: signal-to-quantization-noise ratio of the node's output, quantized "
        "model against float model, `10·log10(Σf² / Σ(q−f)²)`; it includes the error of every "
        "layer before it. Higher is better: about 6 dB per bit, so 8-bit layers typically "
        "show 20–40 dB; `inf` means no error.",
        "- **drop dB**: SQNR of the node's input minus SQNR of its output, the share this "
        "node adds.",
        "- **quantizer dB**: the node's output quantizer alone (rounding and clipping of the "
        "value it receives); a low value with a large drop points at its fix position or "
        "scale.",
        "- **weights dB**: quantized weights against float weights.",
        f"- the {len(bad)} worst nodes by SQNR are in **bold** and listed again at the end.",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "|".join("---:" if h in ("#",) or h.endswith("dB") else "---"
                       for h in _HEADERS) + "|",
    ]
    for r in rows:
        cells = [_md_escape(c) for c in _cells(r)]
        cells[1] = f"`{cells[1]}`"
        if r.index in rank:
            cells[1] = f"**{cells[1]}**"
            cells[7] = f"**{cells[7]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"## Worst {len(bad)}", ""]
    if not bad:
        lines.append("Every measured node is exact (SQNR inf).")
    for i, r in enumerate(bad, 1):
        drop = "" if r.drop_db is None else f", drop {fmt_db(r.drop_db)} dB"
        lines.append(f"{i}. `{_md_escape(r.name)}` ({r.type}): "
                     f"SQNR {fmt_db(r.sqnr_db)} dB{drop}, "
                     f"quantizer {fmt_db(r.quantizer_sqnr_db)} dB, output {r.output.text()}")
    lines += ["", "To keep a layer at higher precision, give it a `layer_name` rule in the "
              "quantization config (see docs/config.md), e.g. `\"overall_quantize_config\": "
              "{\"bit_width\": 16}`.", ""]
    return "\n".join(lines)


def log_report(rows: Sequence[LayerRow], *, worst: int = WORST_N) -> None:
    """Log the per-layer table (and the worst nodes) at INFO on ``nndct_lite.report``."""
    if not log.isEnabledFor(logging.INFO):
        return
    bad = worst_rows(rows, worst)
    summary = ", ".join(f"{r.short} {fmt_db(r.sqnr_db)} dB" for r in bad) or "none"
    log.info("per-layer quantization report, %d node(s); worst: %s\n%s", len(rows), summary,
             format_table(rows))
