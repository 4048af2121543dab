"""Per-layer quantization report: SQNR values, restored session state, report.md and the chart."""
from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
import torch.nn as nn

from nndct_lite import InputError, torch_quantizer
from nndct_lite.quant.build import quantizers
from nndct_lite.report import (CHART_FILE, REPORT_FILE, REPORT_JSON, LayerRow, layer_report,
                               load_rows, log_report, render_markdown, short_name, sqnr_db,
                               worst_rows, write_chart, write_report)
from nndct_lite.state.modes import QuantMode


class SmallNet(nn.Module):
    """conv-bn-relu, maxpool (identity-like on its quantized input), conv, residual add,
    global pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.mp = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.mp(self.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(self.pool(x), 1))


def _model():
    torch.manual_seed(0)
    m = SmallNet()
    with torch.no_grad():   # non-trivial BN statistics, so folding does something
        m.bn1.running_mean.uniform_(-0.2, 0.2)
        m.bn1.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 3, 16, 16, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """(calib quantizer after export_quant_config, output dir, batches)."""
    out = tmp_path_factory.mktemp("report_calib")
    batches = _batches()
    q = torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(out))
    for b in batches:
        q.quant_model(b)
    q.export_quant_config()
    return q, out, batches


@pytest.fixture(scope="module")
def rows(calibrated):
    q, _, batches = calibrated
    return layer_report(q._session, batches[:2])


def _row(rows, type_prefix) -> LayerRow:
    return next(r for r in rows if r.type.startswith(type_prefix))


def test_rows_cover_every_output_quantizer_in_graph_order(calibrated, rows):
    q, _, _ = calibrated
    s = q._session
    carriers = [n.name for n in s.graph.nodes
                if getattr(s.model, f"module_{n.index}")._modules.get("out_q") is not None]
    assert [r.name for r in rows] == carriers
    assert [r.index for r in rows] == sorted(r.index for r in rows)
    conv = _row(rows, "Conv2d+ReLU")           # conv1 (+ folded bn1) + relu
    assert conv.weights is not None and conv.bias is not None
    assert conv.bit_widths() == {"input": 8, "weights": 8, "bias": 8, "output": 8}
    assert isinstance(conv.output.fix_pos, int) and conv.output.text().startswith("int8 fp=")
    assert rows[0].type == "input" and rows[0].inputs == ()
    add = _row(rows, "add")
    assert len(add.inputs) == 2 and all(t is not None for t in add.inputs)
    assert all(r.values > 0 and r.batches == 2 for r in rows)


def test_sqnr_is_finite_and_sensible_for_8_bit(rows):
    for r in rows:
        assert math.isfinite(r.sqnr_db), r
        assert r.sqnr_db > 20.0, r
        # the quantizer alone: finite (inf was the bug of comparing a tensor rounded in place
        # with itself) and in the range int8 rounding gives
        if r.type.startswith("MaxPool"):
            # the max of values on its input's grid, requantized at the same fix position:
            # the quantizer changes nothing
            assert r.quantizer_sqnr_db == math.inf, r
        else:
            assert math.isfinite(r.quantizer_sqnr_db) and 25.0 < r.quantizer_sqnr_db < 60.0, r
    for r in rows:
        if r.weights is not None:
            assert 25.0 < r.weight_sqnr_db < 80.0, r


def test_identity_like_op_adds_no_error(rows):
    mp = _row(rows, "MaxPool2d")
    # the max of values on a fix-point grid is on that grid: the pool's own quantizer is exact
    # (or nearly: only when its fix position is coarser than its input's)
    assert mp.quantizer_sqnr_db == math.inf or mp.quantizer_sqnr_db > 60.0
    assert mp.drop_db is not None and mp.drop_db < 1.0


def test_calib_mode_report_equals_test_mode(calibrated, rows):
    """In calib mode the report uses what export_quant_config wrote (adjusted fix positions,
    bias corrections): the numbers a test-mode quantizer reproduces."""
    _, out, batches = calibrated
    t = torch_quantizer("test", _model(), (batches[0][:1],), output_dir=str(out))
    t.quant_model(batches[0])
    again = layer_report(t._session, batches[:2])
    assert [r.name for r in again] == [r.name for r in rows]
    for a, b in zip(rows, again):
        assert a.output == b.output and a.weights == b.weights and a.bias == b.bias
        assert a.sqnr_db == pytest.approx(b.sqnr_db, rel=1e-9, abs=1e-9)


def test_session_state_is_restored(calibrated):
    q, _, batches = calibrated
    s = q._session
    before = {k: (fq.mode, fq.params, fq.observer) for k, fq in quantizers(s.model).items()}
    forwards = s.forwards
    s.model.train()
    layer_report(s, [(batches[0], torch.zeros(4, dtype=torch.long))])  # (x, label) batches
    assert s.forwards == forwards
    assert all(m.training for m in s.model.modules())
    s.model.eval()
    after = {k: (fq.mode, fq.params, fq.observer) for k, fq in quantizers(s.model).items()}
    assert after == before
    assert all(fq.mode is QuantMode.CALIB for fq in quantizers(s.model).values())
    assert all("bias_correction" not in m.__dict__ for m in s.model.modules())


def test_no_batches_is_a_user_error(calibrated):
    with pytest.raises(InputError, match="at least one batch"):
        layer_report(calibrated[0]._session, [])


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_write_report_markdown_json_and_chart(calibrated, rows, tmp_path):
    path = write_report(rows, tmp_path)
    assert path == tmp_path / REPORT_FILE
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Quantization report: SmallNet")
    assert "| # | node | type | input | weights | bias | output | SQNR dB |" in text
    assert "## Worst 5" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(table) == len(rows)
    assert [int(line.split("|")[1]) for line in table] == [r.index for r in rows]
    worst = worst_rows(rows)
    assert len(worst) == 5 and worst[0].sqnr_db == min(r.sqnr_db for r in rows)
    assert sum("**" in line for line in table) == 5
    assert f"1. `{worst[0].name}`" in text
    assert not (tmp_path / CHART_FILE).exists()       # the chart is opt-in
    # report.json round-trips: the same markdown from the loaded rows
    loaded, n_worst = load_rows(tmp_path)
    assert n_worst == 5 and [r.name for r in loaded] == [r.name for r in rows]
    assert [r.short for r in loaded] == [r.short for r in rows]
    assert render_markdown(loaded) == text
    write_report(rows, tmp_path, chart=True)
    chart = tmp_path / CHART_FILE
    if _has_matplotlib():
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        write_report(rows, tmp_path)                  # a later report without chart ...
        assert not chart.exists()                     # ... removes the stale one
    else:
        assert not chart.exists()
    assert not list(tmp_path.glob(".*.tmp"))          # atomic writes leave no temp files


def test_load_rows_errors(tmp_path):
    with pytest.raises(InputError, match="no report.json") as e:
        load_rows(tmp_path)
    assert e.value.code == "NNDCT_LITE_NO_REPORT"
    (tmp_path / REPORT_JSON).write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="not readable JSON"):
        load_rows(tmp_path)
    (tmp_path / REPORT_JSON).write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(InputError, match="is not a nndct_lite.report/1 file"):
        load_rows(tmp_path)
    (tmp_path / REPORT_JSON).write_text('{"format": "nndct_lite.report/1", "nodes": [{}]}',
                                        encoding="utf-8")
    with pytest.raises(InputError, match="malformed node entry"):
        load_rows(tmp_path)


def test_without_matplotlib_the_chart_is_skipped_with_one_log_line(rows, tmp_path, monkeypatch,
                                                                      caplog):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends",
                "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    with caplog.at_level(logging.INFO, logger="nndct_lite.report"):
        write_report(rows, tmp_path, chart=True)
    assert (tmp_path / REPORT_FILE).is_file()
    assert not (tmp_path / CHART_FILE).exists()
    lines = [r for r in caplog.records if "matplotlib is not installed" in r.getMessage()]
    assert len(lines) == 1 and CHART_FILE in lines[0].getMessage()
    with pytest.raises(InputError, match="matplotlib is not installed") as e:
        write_chart(rows, tmp_path)                   # asked for explicitly: an error
    assert "pip install" in e.value.hint


def test_log_report(rows, caplog):
    with caplog.at_level(logging.INFO, logger="nndct_lite.report"):
        log_report(rows)
    (rec,) = [r for r in caplog.records if r.name == "nndct_lite.report"]
    msg = rec.getMessage()
    assert rec.levelno == logging.INFO and "worst:" in msg
    assert all(r.name in msg for r in rows)


def test_float_scale_target(tmp_path):
    """CPU target, float scales: the rows show scales and the SQNR stays sensible."""
    cfg = tmp_path / "cpu.json"
    cfg.write_text('{"target_device": "CPU", "overall_quantize_config": {"scale_type": "float",'
                   ' "method": "maxmin", "round_mode": "half_even", "symmetry": true,'
                   ' "calib_statistic_method": "max"}}', encoding="utf-8")
    batches = _batches(2)
    q = torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path / "out"),
                        quant_config_file=str(cfg))
    for b in batches:
        q.quant_model(b)
    q.export_quant_config()
    rows = layer_report(q._session, batches)
    assert rows and all(r.output.scale is not None and r.output.fix_pos is None for r in rows)
    assert all(r.output.text().startswith("int8 s=") for r in rows)
    assert all(r.sqnr_db > 20.0 for r in rows)
    assert "s=" in render_markdown(rows)


def test_helpers():
    assert sqnr_db(1.0, 0.0) == math.inf
    assert sqnr_db(0.0, 1.0) == -math.inf
    assert math.isnan(sqnr_db(0.0, 0.0, values=0))
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
    name = "ResNet::ResNet/Sequential[layer1]/BasicBlock[0]/Conv2d[conv1]/ret.5"
    assert short_name(name, 5, "Conv2d") == "layer1.0.conv1 #5"
    assert short_name("ResNet::ResNet/Sequential[layer1]/BasicBlock[0]/ret.12", None,
                      "add") == "layer1.0 add #12"
    assert short_name("ResNet::input_0") == "input_0"
    assert "Every" in render_markdown([]) or "nothing was measured" in render_markdown([])


# ------------------------------------------------- written by export_quant_config (issue 7)
def test_export_quant_config_writes_the_report(calibrated):
    """calib mode keeps the first batch; export_quant_config measures it and writes report.md
    (and the chart when matplotlib is there) next to quant_info.json, without changing it."""
    q, out, batches = calibrated
    text = (out / REPORT_FILE).read_text()
    assert "measured on 1 batch(es)" in text
    assert len(q._session.report_batches) == 1
    assert torch.equal(q._session.report_batches[0][0], batches[0])
    rows = layer_report(q._session, [batches[0]])
    assert text == render_markdown(rows)
    assert (out / REPORT_JSON).is_file() and not (out / CHART_FILE).exists()


def test_chart_environment_variable(tmp_path, monkeypatch):
    from nndct_lite.errors import ConfigError
    from nndct_lite.session.settings import CHART_ENV
    batches = _batches(1)
    monkeypatch.setenv(CHART_ENV, "maybe")
    with pytest.raises(ConfigError, match="NNDCT_LITE_REPORT_CHART='maybe' is not a switch"):
        torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path / "bad"))
    monkeypatch.setenv(CHART_ENV, "1")
    q = torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path / "on"))
    q.quant_model(batches[0])
    q.export_quant_config()
    assert (tmp_path / "on" / CHART_FILE).is_file() == _has_matplotlib()


def test_report_batches_environment_variable(tmp_path, monkeypatch):
    from nndct_lite.errors import ConfigError
    from nndct_lite.session.settings import REPORT_ENV
    batches = _batches(2)
    monkeypatch.setenv(REPORT_ENV, "0")
    q = torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path / "a"))
    q.quant_model(batches[0])
    q.export_quant_config()
    assert (tmp_path / "a" / "quant_info.json").is_file()
    assert not (tmp_path / "a" / REPORT_FILE).exists()
    monkeypatch.setenv(REPORT_ENV, "2")
    q = torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path / "b"))
    for b in batches:
        q.quant_model(b)
    q.export_quant_config()
    assert "measured on 2 batch(es)" in (tmp_path / "b" / REPORT_FILE).read_text()
    monkeypatch.setenv(REPORT_ENV, "two")
    with pytest.raises(ConfigError, match=REPORT_ENV):
        torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path / "c"))


def test_a_failing_report_never_breaks_the_export(calibrated, tmp_path, monkeypatch, caplog):
    import nndct_lite.report as report
    batches = _batches(1)
    q = torch_quantizer("calib", _model(), (batches[0][:1],), output_dir=str(tmp_path))
    q.quant_model(batches[0])

    def boom(*a, **k):
        raise RuntimeError("chart exploded")
    monkeypatch.setattr(report, "layer_report", boom)
    with caplog.at_level(logging.WARNING, logger="nndct_lite"):
        q.export_quant_config()
    assert (tmp_path / "quant_info.json").is_file()
    assert "report was skipped: RuntimeError: chart exploded" in caplog.text


def test_report_sample_keeps_whole_samples_under_the_limit(monkeypatch):
    from nndct_lite.session import settings as pipeline
    monkeypatch.setattr(pipeline, "REPORT_MAX_INPUT_VALUES", 1000)
    x, m = torch.randn(16, 3, 10, 10), torch.ones(16, 4)       # 304 values per sample
    kept = pipeline.report_sample((x, m, 7))
    assert kept[0].shape[0] == kept[1].shape[0] == 3 and kept[2] == 7
    assert torch.equal(kept[0], x[:3]) and kept[0].data_ptr() != x.data_ptr()
    small = pipeline.report_sample((x[:2],))
    assert small[0].shape[0] == 2
    odd = pipeline.report_sample((x, torch.ones(5)))          # no common batch dim: whole
    assert odd[0].shape[0] == 16 and odd[1].shape[0] == 5
    one = pipeline.report_sample((torch.randn(4, 3000),))       # one sample over the limit
    assert one[0].shape[0] == 1
    many = pipeline.report_sample((torch.randn(100, 3),))        # at most 32 samples
    assert many[0].shape[0] == pipeline.REPORT_MAX_SAMPLES == 32
