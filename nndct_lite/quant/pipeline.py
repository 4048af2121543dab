"""The calib/test session behind ``torch_quantizer``: one object per quantizer, no globals.

``prepare`` runs the one-way pipeline: config -> capture -> passes (ReLU6, BN folding, CLE) ->
placement -> config resolution -> generated model -> quantizers; in test mode it then loads
``quantize_result/`` and checks it belongs to this graph."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .. import distributed
from .._log import get_logger
from ..algorithms.cle import cross_layer_equalize
from ..config import explain, load_config, resolve
from ..config.resolve import NodeInfo, QuantPlan
from ..config.spec import QuantConfig, QuantSpec, TargetDevice, TensorKind
from ..errors import CalibrationError, ConfigError, QuantInfoError
from ..graph.capture import capture
from ..graph.ir import Graph, Node
from ..graph.ops import CONV_LIKE, OpKind
from ..graph.passes.fold_bn import fold_batchnorm
from ..graph.passes.relu6 import relu6_to_relu
import hashlib
import io

from ..state.files import atomic_torch_save, atomic_write_bytes, safe_torch_load, torch_bytes
from ..state.modes import QuantMode
from ..state.quant_info import QuantInfo, graph_md5, read_quant_info, write_quant_info
from .adjust import adjust_fix_positions
from ..result import QuantResult
from .freeze import freeze
from .build import build_quant_model, layer_of, quantizers, set_mode, write_and_import
from .params import QuantParams
from .placement import Placement, place_quantizers

__all__ = ["QuantSession", "prepare", "layer_type_of"]

log = get_logger("quant")
BIAS_CORR_FILE = "bias_corr.pth"
PARAM_FILE = "param.pth"


#: environment variable: how many calibration batches ``report.md`` is measured on (0: none)
REPORT_ENV = "NNDCT_LITE_REPORT_BATCHES"
DEFAULT_REPORT_BATCHES = 1


def report_batch_count() -> int:
    raw = os.environ.get(REPORT_ENV, "").strip()
    if not raw:
        return DEFAULT_REPORT_BATCHES
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{REPORT_ENV}={raw!r} is not an integer", where=REPORT_ENV,
                          hint="set it to 0 (no report) or a number of batches") from None
    if n < 0:
        raise ConfigError(f"{REPORT_ENV}={raw!r} is negative", where=REPORT_ENV,
                          hint="set it to 0 (no report) or a number of batches")
    return n


CHART_ENV = "NNDCT_LITE_REPORT_CHART"


def report_chart_wanted() -> bool:
    """``NNDCT_LITE_REPORT_CHART``: 1 draws report_chart.png at calibration (default 0)."""
    raw = os.environ.get(CHART_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{CHART_ENV}={raw!r} is not a switch", where=CHART_ENV,
                      hint="set it to 1 (draw report_chart.png at calibration) or 0")


#: the report measures at most this many input values per kept batch (whole samples) ...
REPORT_MAX_INPUT_VALUES = 1 << 20
#: ... and at most this many samples, a third of the cost of a CIFAR batch of 100. On ResNet-20
#: the 32 give the same worst five nodes and per-node SQNRs 0.4 dB (at most 1.2 dB) from the
#: 100's, where two batches of 100 differ by 0.25 dB (at most 0.9 dB): the report is a
#: diagnostic; more batches with REPORT_ENV
REPORT_MAX_SAMPLES = 32


def report_sample(args: tuple) -> tuple:
    """A copy of one forward's inputs for the report: the first samples of a batch whose
    tensors share their first dimension, at most ``REPORT_MAX_SAMPLES`` and as many as keep the
    inputs under ``REPORT_MAX_INPUT_VALUES`` values (at least one); other inputs whole."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    n = None
    if tensors and all(t.dim() > 0 for t in tensors) and \
            len({t.shape[0] for t in tensors}) == 1:
        batch = tensors[0].shape[0]
        per_sample = sum(t.numel() for t in tensors) // max(batch, 1)
        limit = max(1, min(REPORT_MAX_SAMPLES, REPORT_MAX_INPUT_VALUES // max(per_sample, 1)))
        n = limit if batch > limit else None
    return tuple((a[:n] if n is not None else a).detach().clone()
                 if isinstance(a, torch.Tensor) else a for a in args)


def layer_type_of(node: Node) -> str:
    """The torch-side type name ``layer_type`` rules match (``Conv2d``, ``add``, ``cat`` ...)."""
    if node.kind is OpKind.INPUT:
        return "input"
    if node.op == "call_module":
        return type(node.module).__name__
    if node.op == "call_method":
        return str(node.target)
    name = getattr(node.target, "__name__", str(node.target))
    return {"getitem": "strided_slice", "truediv": "div", "concat": "cat"}.get(name, name)


@dataclass
class QuantSession:
    graph: Graph
    placement: Placement
    config: QuantConfig
    plan: QuantPlan
    model: nn.Module
    mode: QuantMode
    output_dir: Path
    device: torch.device
    example: tuple
    source_path: Path
    forwards: int = 0
    fast_finetuned: bool = False
    warned_nonfinite: set = field(default_factory=set)
    dist: object = None   # distributed.attach(): the other ranks (None: one process)
    report_batches: list = field(default_factory=list)   # kept for report.md (calib mode)
    report_chart: bool = False   # draw report_chart.png too (NNDCT_LITE_REPORT_CHART)

    # ------------------------------------------------------------ parameters
    def collect(self) -> tuple[dict[str, QuantParams], dict[str, QuantParams]]:
        """(param entries, output entries) keyed as in quant_info.json, in node order."""
        qs = quantizers(self.model)
        params: dict[str, QuantParams] = {}
        outputs: dict[str, QuantParams] = {}
        for node in self.graph.nodes:
            mod = layer_of(self.model, node)
            for attr in ("weight_q", "bias_q"):
                q = mod._modules.get(attr)
                if q is not None:
                    params[q.key] = q.params or QuantParams(q.spec.bit_width)
            q = mod._modules.get("out_q")
            if q is not None:
                outputs[q.key] = q.params or QuantParams(q.spec.bit_width)
        assert len(params) + len(outputs) == len(qs)
        return params, outputs

    def export_quant_config(self) -> Path:
        if self.mode is not QuantMode.CALIB:
            return self._rewrite_test_quant_info()
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
                         graph_md5=graph_md5(self.graph))
        data = torch_bytes(self.bias_corrections()) if self.config.include_bias_corr else None
        if data is not None:
            info.bias_corr_sha256 = hashlib.sha256(data).hexdigest()

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
            write_report(rows, self.output_dir, chart=self.report_chart)
            log_report(rows)
        except Exception as exc:  # noqa: BLE001 - the report must not break calibration
            log.warning("the per-layer report was skipped: %s: %s", type(exc).__name__, exc)

    def _rewrite_test_quant_info(self) -> Path:
        params, outputs = self.collect()
        info = QuantInfo(param=params, output=outputs, fast_finetuned=self.fast_finetuned,
                         bias_corrected=bool(self.config.include_bias_corr),
                         graph_md5=graph_md5(self.graph))
        if self.dist is not None:
            return self.dist.write_once(lambda: write_quant_info(self.output_dir, info),
                                        "writing quant_info.json", agree=repr(info))
        return write_quant_info(self.output_dir, info)

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

    # ------------------------------------------------------------ test mode
    def load_results(self) -> None:
        info = read_quant_info(self.output_dir, self.graph)
        path = self.output_dir / "quant_info.json"
        for key, q in quantizers(self.model).items():
            section = info.param if q.key in info.param or "::" in key and q.role.name == "PARAM" \
                else info.output
            entry = section.get(key)
            if entry is None:
                known = list(info.param) + list(info.output)
                raise QuantInfoError(
                    f"quant_info.json has no entry for {key}: it was written for another model "
                    f"or another version of this one ({len(known)} entries, e.g. "
                    f"{known[:2]})", where=f"{path}, node {key}",
                    code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                    hint="re-run calibration with the same model, config and nndct_lite version")
            if entry.bit_width != q.spec.bit_width:
                raise QuantInfoError(
                    f"bit width of {key} is {entry.bit_width} in quant_info.json but "
                    f"{q.spec.bit_width} in the current config", where=f"{path}, node {key}",
                    hint="use the same quant_config_file for calib and test")
            q.params = entry if entry.is_set else None
            if entry.is_set and entry.fix_pos is not None and isinstance(entry.fix_pos, tuple):
                q.params = QuantParams(entry.bit_width, fix_pos=entry.fix_pos, axis=q.axis)
            elif entry.is_set and isinstance(entry.scale, tuple):
                q.params = QuantParams(entry.bit_width, scale=entry.scale,
                                       zero_point=entry.zero_point, float_max=entry.float_max,
                                       axis=q.axis)
        if not info.version.startswith("3."):
            keys = set(quantizers(self.model))
            extra = [k for k in (*info.param, *info.output) if k not in keys]
            if extra:
                raise QuantInfoError(
                    f"quant_info.json has entries for {len(extra)} node(s) this model does not "
                    f"have, first {extra[0]}: it was calibrated on another version of the model",
                    where=f"{path}, node {extra[0]}",
                    code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                    hint="re-run calibration with this model")
        if info.graph_md5 and info.graph_md5 != graph_md5(self.graph) \
                and not info.version.startswith("3."):
            raise QuantInfoError("quant_info.json was calibrated on a graph with a different "
                                 "structure (graph_md5 differs)", where=str(path),
                                 code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                                 hint="re-run calibration with this model")
        self.fast_finetuned = info.fast_finetuned
        wanted = bool(self.config.include_bias_corr)
        if info.bias_corrected != wanted:
            # the calibration decides: its fix positions were computed with (or without) the
            # corrected biases, and the deployed model must match the test-mode one
            log.warning("include_bias_corr is %s in this config but %s says the calibration ran "
                        "%s bias correction; following the calibration (%s)",
                        str(wanted).lower(), path, "with" if info.bias_corrected else "without",
                        "applying bias_corr.pth" if info.bias_corrected
                        else "no bias correction")
        if info.bias_corrected:
            self._load_bias_corrections(info.bias_corr_sha256)

    def _load_bias_corrections(self, sha256: str = "") -> None:
        path = self.output_dir / BIAS_CORR_FILE
        if sha256 and path.is_file() and \
                hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise QuantInfoError(
                "bias_corr.pth does not match quant_info.json (sha256 differs): it is corrupted, "
                "or comes from another calibration (e.g. an interrupted export_quant_config())",
                where=str(path), hint="re-run calibration")
        data = safe_torch_load(path, "bias correction result")
        if not isinstance(data, dict):
            raise QuantInfoError("bias_corr.pth must hold a dict {node name: corrections}",
                                 where=str(path), hint="re-run calibration")
        for node in self.graph.nodes:
            mod = layer_of(self.model, node)
            if node.kind not in CONV_LIKE or mod._modules.get("bias_q") is None:
                continue
            if node.name in data:
                corr = data[node.name]
            elif node.normalized in data:
                corr = data[node.normalized]
            else:
                raise QuantInfoError(
                    f"bias correction file has no entry for {node.name}: it does not match "
                    "the current model", where=f"{path}, node {node.name}",
                    code="QUANTIZER_TORCH_BIAS_CORRECTION",
                    hint="calibrate and test with the same model and include_bias_corr setting")
            if corr is not None:
                try:
                    t = torch.as_tensor(corr, dtype=mod.bias.dtype, device=mod.bias.device)
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise QuantInfoError(f"bias correction of {node.name} is not a list of "
                                         f"numbers ({exc})", where=f"{path}, node {node.name}",
                                         hint="re-run calibration to rewrite it") from exc
                if t.shape != mod.bias.shape:
                    raise QuantInfoError(f"bias correction of {node.name} has {t.numel()} "
                                         f"values, the layer has {mod.bias.numel()} channels",
                                         where=f"{path}, node {node.name}",
                                         hint="calibrate and test with the same model")
                mod.bias_correction = t

    def load_ft_param(self) -> None:
        path = self.output_dir / PARAM_FILE
        if not self.fast_finetuned:
            raise QuantInfoError("quant_info.json says the model was not fast-finetuned",
                                 where=str(self.output_dir / "quant_info.json"),
                                 code="QUANTIZER_TORCH_FAST_FINETUNE",
                                 hint="call quantizer.fast_finetune(...) in calib mode first, "
                                      "or drop load_ft_param()")
        sd = safe_torch_load(path, "fast finetune parameter")
        if not isinstance(sd, dict):
            raise QuantInfoError("param.pth must hold a state dict", where=str(path),
                                 hint="re-run fast finetune with this model")
        try:
            result = self.model.load_state_dict(sd, strict=False)
        except RuntimeError as exc:
            raise QuantInfoError(f"param.pth does not fit this model: {exc}", where=str(path),
                                 hint="re-run fast finetune with this model") from exc
        if result.unexpected_keys:
            raise QuantInfoError(
                f"param.pth does not fit this model: {len(result.unexpected_keys)} unknown "
                f"key(s), e.g. {result.unexpected_keys[:3]}", where=str(path),
                hint="re-run fast finetune with this model")


def _float_nodes(graph: Graph, config) -> frozenset:
    nodes = set()
    compute = [n for n in graph.nodes if n.kind in CONV_LIKE]
    if getattr(config, "keep_first_last_layer_accuracy", False) and compute:
        nodes.update({compute[0], compute[-1]})
    if getattr(config, "keep_add_layer_accuracy", False):
        nodes.update(n for n in graph.nodes if n.kind is OpKind.ADD)
    return frozenset(nodes)


def _node_infos(graph: Graph, placement: Placement) -> list[NodeInfo]:
    infos = []
    for n in graph.nodes:
        kinds = set()
        if n.kind in CONV_LIKE and placement.group_of[n] not in placement.float_heads:
            kinds.add(TensorKind.WEIGHTS)
            if "bias" in n.params:
                kinds.add(TensorKind.BIAS)
        if placement.is_carrier(n):
            kinds.add(TensorKind.ACTIVATION)
            if n.kind is OpKind.INPUT:
                kinds.add(TensorKind.INPUT)
        carrier = placement.output_quantizer_of(n) if n.is_tensor else None
        reason = None
        if n in placement.float_heads or placement.group_of.get(n) in placement.float_heads:
            reason = "kept float by keep_first_last_layer_accuracy / keep_add_layer_accuracy"
        elif n.kind is OpKind.OTHER:
            reason = "not supported by the DPU: runs in float"
        infos.append(NodeInfo(name=n.name, layer_type=layer_type_of(n), kinds=frozenset(kinds),
                              group=carrier.name if carrier is not None else None,
                              float_reason=reason))
    return infos


def _approximation_list(graph: Graph, model: nn.Module) -> list[str]:
    out = []
    for node in graph.nodes:
        mod = layer_of(model, node)
        if getattr(mod, "post", None) is not None:
            out.append(f"{node.name}: output x {float(mod.post(torch.ones(1))):.10g}")
        elif getattr(mod, "replace", None) is not None or node.kind is OpKind.LEAKY_RELU:
            out.append(f"{node.name}: {node.kind.value} replaced by its DPU form")
    return out


def _write_resolved(output_dir: Path, config, plan, rewrites: dict) -> None:
    import json
    from ..state.files import atomic_write_text
    data = explain(config, plan)
    data["graph_rewrites"] = rewrites
    atomic_write_text(output_dir / "resolved_config.json",
                      json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def prepare(module: nn.Module, example: tuple, *, mode: QuantMode, output_dir: Path,
            config_file, bitwidth, device: torch.device, target=None) -> QuantSession:
    config = load_config(config_file, bitwidth=bitwidth)
    graph, _ = capture(module, example)
    rewrites: dict[str, list] = {}
    if config.include_cle or config.convert_relu6_to_relu:
        rewrites["relu6_to_relu"] = relu6_to_relu(graph)
    rewrites["batchnorm_folded"] = fold_batchnorm(graph)
    if config.include_cle:
        rewrites["cross_layer_equalization_pairs"] = [list(p) for p in cross_layer_equalize(graph)]
    placement = place_quantizers(graph, float_nodes=_float_nodes(graph, config))
    if placement.float_ops:
        log.warning("these ops are not supported by the DPU and stay float: %s",
                    ", ".join(f"{n.name} ({getattr(n.target, '__name__', n.target)})"
                              for n in placement.float_ops))
    plan = resolve(config, _node_infos(graph, placement))

    def spec_of(node: Node, kind: TensorKind) -> QuantSpec:
        return plan.specs(node.name)[kind].spec

    output_dir.mkdir(parents=True, exist_ok=True)
    w = distributed.world()
    cls, path = write_and_import(graph, output_dir) if w is None else \
        distributed.import_generated(w, graph, output_dir)
    dpu_approx = config.target_device is TargetDevice.DPU
    model = build_quant_model(cls, graph, placement, spec_of, dpu_approx=dpu_approx,
                              bias_correction=bool(config.include_bias_corr), device=device,
                              target=config.target_device)
    rewrites["dpu_approximations"] = _approximation_list(graph, model) if dpu_approx else []
    rewrites["float_ops"] = [n.name for n in placement.float_ops]
    rewrites["kept_float_by_config"] = sorted(n.name for n in placement.float_heads)
    if distributed.is_writer(w):
        _write_resolved(output_dir, config, plan, rewrites)
    model.train(module.training)
    session = QuantSession(graph, placement, config, plan, model, mode, output_dir, device,
                           example, path)
    if mode is QuantMode.TEST:
        session.load_results()
    set_mode(model, mode)

    keep = report_batch_count() if mode is QuantMode.CALIB else 0
    session.report_chart = keep > 0 and report_chart_wanted()   # a bad value fails here

    def _count(_m, inp):
        session.forwards += 1
        if len(session.report_batches) < keep:
            session.report_batches.append(report_sample(inp))
    model.register_forward_pre_hook(_count)
    if w is not None:
        session.dist = distributed.attach(session, w)
    log.info("=>Quantizable module is generated.(%s)", path)
    return session
