"""``prepare``: the one-way pipeline that builds a session.

config -> capture -> passes (ReLU6, BN folding, CLE) -> placement -> config resolution ->
generated model -> quantizers; in test mode it then loads ``quantize_result/`` and checks it
belongs to this graph."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .. import distributed
from ..errors import InputError
from .._log import get_logger
from ..algorithms.cle import cross_layer_equalize
from ..config import explain, load_config, resolve
from ..config.explain import plan_settings
from ..config.resolve import NodeInfo, QuantPlan, log_plan_warnings
from ..config.spec import DataType, QuantConfig, QuantSpec, TargetDevice, TensorKind
from ..graph.capture import capture
from ..graph.ir import Graph, Node
from ..graph.layer_type import layer_type_of
from ..graph.ops import CONV_LIKE, OpKind
from ..graph.passes.fold_bn import fold_batchnorm
from ..graph.passes.relu6 import relu6_to_relu
from ..quant.build import build_quant_model, layer_of, set_mode, write_and_import
from ..quant.placement import Placement, place_quantizers
from ..state.files import atomic_write_text, ensure_dir, remove_stale_temps
from ..state.layout import RESOLVED_CONFIG_FILE
from ..state.modes import QuantMode
from ..state.quant_info import graph_md5, run_id
from .core import QuantSession
from .settings import report_batch_count, report_chart_wanted, report_sample

__all__ = ["prepare"]

log = get_logger("quant")


def _float_nodes(graph: Graph, config: QuantConfig) -> dict[Node, str]:
    """Nodes the switches keep float (with their quantization group), with the reason."""
    nodes: dict[Node, str] = {}
    compute = [n for n in graph.nodes if n.kind in CONV_LIKE]
    if config.keep_first_last_layer_accuracy and compute:
        for n in (compute[0], compute[-1]):
            nodes[n] = "kept float by keep_first_last_layer_accuracy"
    if config.keep_add_layer_accuracy:
        nodes.update((n, "kept float by keep_add_layer_accuracy") for n in graph.nodes
                     if n.kind is OpKind.ADD)
    return nodes


def _float32_nodes(graph: Graph, plan: QuantPlan) -> dict[Node, str]:
    """DPU target: nodes with a ``datatype: float32`` tensor. The DPU has no float tensors, so
    such a node stays float as a whole (with its quantization group) and runs on the CPU."""
    by_name = {n.name: n for n in graph.nodes}
    out = {}
    for name in plan:
        kinds = [k.value for k, s in plan.specs(name).items()
                 if s.spec.datatype is DataType.FLOAT32]
        if kinds:
            out[by_name[name]] = (f"datatype float32 ({', '.join(kinds)}): on the DPU target the "
                                  "layer stays float and runs on the CPU")
    return out


def _node_infos(graph: Graph, placement: Placement,
                reasons: dict[Node, str] | None = None) -> list[NodeInfo]:
    reasons = reasons or {}
    by_head = {placement.group_of.get(n, n): r for n, r in reasons.items()}
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
            reason = reasons.get(n) or by_head.get(placement.group_of.get(n, n)) or \
                "kept float with its quantization group"
        elif n.kind is OpKind.OTHER:
            reason = "not supported by the DPU: runs in float"
        infos.append(NodeInfo(name=n.name, layer_type=layer_type_of(n), kinds=frozenset(kinds),
                              group=carrier.name if carrier is not None else None,
                              float_reason=reason))
    return infos


def _log_float_ops(nodes: list[Node]) -> None:
    """One WARNING line with the count per op type; the node list at DEBUG (and in
    resolved_config.json's ``float_ops``)."""
    counts = Counter(layer_type_of(n) for n in nodes)
    summary = ", ".join(f"{op} x{c}"
                        for op, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    log.warning("%d op(s) are not supported by the DPU and stay float: %s (the nodes: DEBUG log, "
                "resolved_config.json float_ops)", len(nodes), summary)
    log.debug("ops that stay float: %s", ", ".join(f"{n.name} ({layer_type_of(n)})" for n in nodes))


def _refuse_empty_batch(inp: tuple[Any, ...]) -> None:
    """A calibration batch without samples would give no statistics (and divide by zero)."""
    for i, a in enumerate(inp):
        if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == 0:
            raise InputError(f"calibration batch with 0 samples (input {i} has shape "
                             f"{tuple(a.shape)})", where="quant_model(...)",
                             hint="leave empty batches out of the calibration loop")


def _approximation_list(graph: Graph, model: nn.Module) -> list[str]:
    out = []
    for node in graph.nodes:
        mod = layer_of(model, node)
        post = getattr(mod, "post", None)
        if post is not None:
            out.append(f"{node.name}: output x {float(post(torch.ones(1))):.10g}")
        elif getattr(mod, "replace", None) is not None or node.kind is OpKind.LEAKY_RELU:
            out.append(f"{node.name}: {node.kind.value} replaced by its DPU form")
    return out


def _write_resolved(output_dir: Path, config: QuantConfig, plan: QuantPlan,
                    rewrites: dict[str, list[Any]], target: str | None, rid: str) -> None:
    data = explain(config, plan)
    data["run_id"] = rid          # the id quant_info.json and report.json of this run carry
    data["graph_rewrites"] = rewrites
    data["dpu_target"] = target   # recorded only: the DPU rules are the same for every DPU
    atomic_write_text(output_dir / RESOLVED_CONFIG_FILE,
                      json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def prepare(module: nn.Module, example: tuple[Any, ...], *, mode: QuantMode, output_dir: Path,
            config_file: str | os.PathLike[str] | None, bitwidth: int | None,
            device: torch.device,
            target: str | None = None) -> QuantSession:
    config = load_config(config_file, bitwidth=bitwidth)
    graph, _ = capture(module, example)
    rewrites: dict[str, list[Any]] = {}
    if config.include_cle or config.convert_relu6_to_relu:
        rewrites["relu6_to_relu"] = relu6_to_relu(graph)
    rewrites["batchnorm_folded"] = fold_batchnorm(graph)
    if config.include_cle:
        rewrites["cross_layer_equalization_pairs"] = [list(p) for p in cross_layer_equalize(graph)]
    kept = _float_nodes(graph, config)
    placement = place_quantizers(graph, float_nodes=frozenset(kept))
    plan = resolve(config, _node_infos(graph, placement, kept), quiet=True)
    added = 0
    while config.is_dpu:      # a new placement can give nodes new tensors: until none is added
        more = {n: r for n, r in _float32_nodes(graph, plan).items() if n not in kept}
        if not more:
            break
        kept.update(more)
        added += len(more)
        placement = place_quantizers(graph, float_nodes=frozenset(kept))
        plan = resolve(config, _node_infos(graph, placement, kept), quiet=True)
    log_plan_warnings(plan)
    if added:
        log.info("%d node(s) with datatype float32 stay float on the CPU (resolved_config.json "
                 "kept_float_by_config)", added)
    if placement.float_ops:
        _log_float_ops(placement.float_ops)
    rid = run_id(graph_md5(graph), plan_settings(config, plan))

    def spec_of(node: Node, kind: TensorKind) -> QuantSpec:
        return plan.specs(node.name)[kind].spec

    ensure_dir(output_dir)
    stale = remove_stale_temps(output_dir)
    if stale:
        log.info("removed %d temp file(s) a killed run left in %s: %s", len(stale), output_dir,
                 ", ".join(stale))
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
        _write_resolved(output_dir, config, plan, rewrites, target, rid)
    model.train(module.training)
    session = QuantSession(graph, placement, config, plan, model, mode, output_dir, device,
                           example, path, run_id=rid)
    if mode is QuantMode.TEST:
        session.load_results()
    set_mode(model, mode)

    keep = report_batch_count() if mode is QuantMode.CALIB else 0
    session.report_chart = keep > 0 and report_chart_wanted()   # a bad value fails here

    def _count(_m: nn.Module, inp: tuple[Any, ...]) -> None:
        if session.mode is QuantMode.CALIB:
            _refuse_empty_batch(inp)
        session.forwards += 1
        if len(session.report_batches) < keep:
            session.report_batches.append(report_sample(inp))
    model.register_forward_pre_hook(_count)
    if w is not None:
        session.dist = distributed.attach(session, w)
    log.info("=>Quantizable module is generated.(%s)", path)
    return session

