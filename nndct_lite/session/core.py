"""The calib/test session behind ``torch_quantizer``: one object per quantizer, no globals.

:func:`~nndct_lite.session.prepare.prepare` builds it; calibration forwards it, test mode loads
``quantize_result/`` into it (:mod:`.loading`), and deploy exports read its frozen result
(:meth:`QuantSession.freeze`)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .. import distributed
from .._log import get_logger
from ..config.explain import plan_settings
from ..config.resolve import QuantPlan
from ..config.spec import QuantConfig, TargetDevice
from ..errors import CalibrationError
from ..graph.ir import Graph
from ..graph.ops import CONV_LIKE
from ..numerics.params import QuantParams
from ..quant.adjust import adjust_fix_positions
from ..quant.build import cast_datatypes, layer_of, quantizers
from ..quant.fake_quantizer import quantizer_of
from ..quant.freeze import freeze
from ..quant.placement import Placement
from ..result import QuantResult
from ..state.files import atomic_write_bytes, torch_bytes
from ..state.layout import BIAS_CORR_FILE, PARAM_FILE, QUANT_INFO_FILE
from ..state.modes import QuantMode
from ..state.quant_info import QuantInfo, graph_md5, write_quant_info
from .loading import TestModeLoading

if TYPE_CHECKING:
    from ..distributed.calibration import CalibrationSync

__all__ = ["QuantSession"]

log = get_logger("quant")


@dataclass
class QuantSession(TestModeLoading):
    graph: Graph
    placement: Placement
    config: QuantConfig
    plan: QuantPlan
    model: nn.Module
    mode: QuantMode
    output_dir: Path
    device: torch.device
    example: tuple[Any, ...]
    source_path: Path
    forwards: int = 0
    fast_finetuned: bool = False
    warned_nonfinite: set[str] = field(default_factory=set)
    dist: CalibrationSync | None = None   # distributed.attach(): the other ranks (None: one process)
    report_batches: list[tuple[Any, ...]] = field(default_factory=list)   # kept for report.md (calib mode)
    report_chart: bool = False   # draw report_chart.png too (NNDCT_LITE_REPORT_CHART)
    run_id: str = ""             # state.quant_info.run_id of the graph and the resolved settings

    # ------------------------------------------------------------ parameters
    def collect(self) -> tuple[dict[str, QuantParams], dict[str, QuantParams]]:
        """(param entries, output entries) keyed as in quant_info.json, in node order."""
        qs = quantizers(self.model)
        params: dict[str, QuantParams] = {}
        outputs: dict[str, QuantParams] = {}
        for node in self.graph.nodes:
            mod = layer_of(self.model, node)
            for attr in ("weight_q", "bias_q"):
                q = quantizer_of(mod, attr)
                if q is not None and q.cast is None:
                    params[q.key] = q.params or QuantParams(q.spec.bit_width)
            q = quantizer_of(mod, "out_q")
            if q is not None and q.cast is None:
                outputs[q.key] = q.params or QuantParams(q.spec.bit_width)
        assert len(params) + len(outputs) == len(qs)
        return params, outputs

    def export_quant_config(self) -> Path:
        if self.mode is not QuantMode.CALIB:
            return self._keep_test_quant_info()
        forwards = self.forwards if self.dist is None else self.dist.finalize()
        if forwards == 0:
            raise CalibrationError(
                "quantization is not performed completely: quant_model was never forwarded",
                hint="forward quantizer.quant_model over your calibration data before calling "
                     "export_quant_config()")
        self._report_nonfinite()
        dead = [q.key for q in quantizers(self.model).values()
                if q.nonfinite_batches and (q.params is None or not q.params.is_set)]
        if dead:
            raise CalibrationError(
                f"{len(dead)} tensor(s) saw only NaN/Inf during calibration, first {dead[0]}: "
                "no scale can be computed for them", where=f"node {dead[0]}",
                code="QUANTIZER_TORCH_TENSOR_VALUE_INVALID",
                hint="check the calibration data and the float model on it; these nodes never "
                     "produced a finite value")
        params, outputs = self.collect()
        merged = {**params, **outputs}
        if self._is_dpu():
            adjust_fix_positions(self.graph, self.placement, merged)
        info = QuantInfo(param={k: merged[k] for k in params},
                         output={k: merged[k] for k in outputs},
                         fast_finetuned=self.fast_finetuned,
                         bias_corrected=bool(self.config.include_bias_corr),
                         graph_md5=graph_md5(self.graph),
                         settings=plan_settings(self.config, self.plan), run_id=self.run_id,
                         dtype=cast_datatypes(self.model))
        data = torch_bytes(self.bias_corrections()) if self.config.include_bias_corr else None
        if data is not None:
            info.bias_corr_sha256 = hashlib.sha256(data).hexdigest()
        if self.fast_finetuned:   # pairs this quant_info.json with the param.pth it was made with
            param_file = self.output_dir / PARAM_FILE
            if param_file.is_file():
                info.param_sha256 = hashlib.sha256(param_file.read_bytes()).hexdigest()

        def write() -> Path:
            if data is not None:
                atomic_write_bytes(self.output_dir / BIAS_CORR_FILE, data)
            return write_quant_info(self.output_dir, info)   # last: it commits the set of files
        path = write() if self.dist is None else \
            self.dist.write_once(write, "writing quant_info.json", agree=repr(info))
        log.info("=>Exporting quant config.(%s)", path)
        if distributed.is_writer(getattr(self.dist, "world", None)):
            self._write_report()
        return path

    def _write_report(self) -> None:
        """``report.md`` (+ chart) on the kept calibration batches; a diagnostic, so a failure
        is logged and never undoes the exported configuration."""
        if not self.report_batches:
            return
        from ..report import layer_report, log_report, write_report
        try:
            rows = layer_report(self, list(self.report_batches))
            write_report(rows, self.output_dir, chart=self.report_chart, run_id=self.run_id)
            log_report(rows)
        except Exception as exc:  # noqa: BLE001 - the report must not break calibration
            log.warning("the per-layer report was skipped: %s: %s", type(exc).__name__, exc)

    def _keep_test_quant_info(self) -> Path:
        """Test mode: quant_info.json is the calibration's record and stays as it is (rewriting
        it from the test-mode config dropped its bias_corr_sha256 and could flip
        bias_corrected for every later run)."""
        path = self.output_dir / QUANT_INFO_FILE
        log.info("export_quant_config() in test mode writes nothing: %s is the calibration's "
                 "result and is kept as it is", path)
        return path

    def bias_corrections(self) -> dict[str, list[float] | None]:
        out: dict[str, list[float] | None] = {}
        for node in self.graph.nodes:
            if node.kind not in CONV_LIKE:
                continue
            bc = getattr(layer_of(self.model, node), "bias_corrector", None)
            corr = bc.correction() if bc is not None else None
            out[node.name] = None if corr is None else [float(v) for v in corr.cpu()]
        return out

    def _report_nonfinite(self) -> None:
        for q in quantizers(self.model).values():
            if q.nonfinite_batches and q.key not in self.warned_nonfinite:
                self.warned_nonfinite.add(q.key)
                log.warning("[QUANTIZER_TORCH_TENSOR_VALUE_INVALID] %s saw NaN/Inf in %d "
                            "calibration batch(es); those values were left out of its "
                            "statistics", q.key, q.nonfinite_batches)

    def _is_dpu(self) -> bool:
        return self.config.target_device is TargetDevice.DPU

    def freeze(self) -> QuantResult:
        """The frozen result exporters read (test mode: the loaded calibration, bias
        corrections and fast-finetuned parameters as the model holds them now)."""
        return freeze(self.graph, self.config, self.plan, self.model, self.example, self.device)

