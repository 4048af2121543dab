"""Test mode: load ``quant_info.json``, the bias corrections and the fast-finetuned
parameters of ``quantize_result/`` into a session, checking they belong to its graph."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from .._log import get_logger
from ..config.explain import plan_settings
from ..config.resolve import QuantPlan
from ..config.spec import QuantConfig, QuantSpec
from ..errors import QuantInfoError
from ..graph.ir import Graph
from ..graph.ops import CONV_LIKE
from ..numerics.params import QuantParams
from ..quant.build import cast_datatypes, layer_of, quantizers
from ..quant.fake_quantizer import FakeQuantizer
from ..state.files import safe_torch_load
from ..state.layout import BIAS_CORR_FILE, PARAM_FILE, QUANT_INFO_FILE
from ..state.quant_info import graph_md5, read_quant_info

__all__ = ["TestModeLoading"]

log = get_logger("quant")


class TestModeLoading:
    """Mixin of :class:`~nndct_lite.session.core.QuantSession`: the test-mode loaders."""

    graph: Graph
    config: QuantConfig
    plan: QuantPlan
    model: nn.Module
    output_dir: Path
    fast_finetuned: bool
    run_id: str
    _param_sha256: str = ""     # from quant_info.json: the param.pth it was exported with

    def load_results(self) -> None:
        info = read_quant_info(self.output_dir, self.graph)
        path = self.output_dir / QUANT_INFO_FILE
        if info.settings:
            _check_settings(info.settings, plan_settings(self.config, self.plan), path)
        channels = _param_channels(self.model)
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
            if entry.is_set:
                _check_entry_matches_spec(key, entry, q.spec, path)
                _check_entry_values(key, entry, q.spec, channels.get(key), path)
            q.params = entry if entry.is_set else None
            if entry.is_set and entry.fix_pos is not None and isinstance(entry.fix_pos, tuple):
                q.params = QuantParams(entry.bit_width, fix_pos=entry.fix_pos, axis=q.axis)
            elif entry.is_set and isinstance(entry.scale, tuple):
                q.params = QuantParams(entry.bit_width, scale=entry.scale,
                                       zero_point=entry.zero_point, float_max=entry.float_max,
                                       axis=q.axis)
        # a file nndct_lite wrote (it has graph_md5) is checked whatever its version says; a
        # vai_q_pytorch 3.x file has no md5 and may list nodes this graph names differently
        ours = bool(info.graph_md5) or not info.version.startswith("3.")
        if ours:
            keys = set(quantizers(self.model))
            extra = [k for k in (*info.param, *info.output) if k not in keys]
            if extra:
                raise QuantInfoError(
                    f"quant_info.json has entries for {len(extra)} node(s) this model does not "
                    f"have, first {extra[0]}: it was calibrated on another version of the model",
                    where=f"{path}, node {extra[0]}",
                    code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                    hint="re-run calibration with this model")
        if info.graph_md5 and info.graph_md5 != graph_md5(self.graph):
            raise QuantInfoError("quant_info.json was calibrated on a graph with a different "
                                 "structure (graph_md5 differs)", where=str(path),
                                 code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                                 hint="re-run calibration with this model")
        for part, casts in cast_datatypes(self.model).items():
            for key, dtype in casts.items():
                got = info.dtype.get(part, {}).get(key)
                if got != dtype:
                    said = f"datatype {got}" if got else "an integer entry or none"
                    raise QuantInfoError(
                        f"{key} has {said} in quant_info.json but datatype {dtype} in the "
                        "current config", where=f"{path}, node {key}",
                        code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                        hint="use the same quant_config_file for calib and test")
        if info.run_id and info.run_id != self.run_id:
            raise QuantInfoError(
                f"quant_info.json belongs to run {info.run_id}; this model and config make run "
                f"{self.run_id} (resolved_config.json says which run wrote it)", where=str(path),
                code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                hint="test with the model and quant_config_file used for calibration, or re-run "
                     "calibration")
        self.fast_finetuned = info.fast_finetuned
        self._param_sha256 = info.param_sha256
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
            bias = mod.bias
            if corr is not None:
                if not isinstance(bias, torch.Tensor):   # a layer with a bias quantizer has one
                    raise QuantInfoError(f"{node.name} has a bias quantizer but no bias tensor",
                                         where=f"{path}, node {node.name}")
                try:
                    t = torch.as_tensor(corr, dtype=bias.dtype, device=bias.device)
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise QuantInfoError(f"bias correction of {node.name} is not a list of "
                                         f"numbers ({exc})", where=f"{path}, node {node.name}",
                                         hint="re-run calibration to rewrite it") from exc
                if t.shape != bias.shape:
                    raise QuantInfoError(f"bias correction of {node.name} has {t.numel()} "
                                         f"values, the layer has {bias.numel()} channels",
                                         where=f"{path}, node {node.name}",
                                         hint="calibrate and test with the same model")
                mod.bias_correction = t

    def load_ft_param(self) -> None:
        path = self.output_dir / PARAM_FILE
        if not self.fast_finetuned:
            raise QuantInfoError("quant_info.json says the model was not fast-finetuned",
                                 where=str(self.output_dir / QUANT_INFO_FILE),
                                 code="QUANTIZER_TORCH_FAST_FINETUNE",
                                 hint="call quantizer.fast_finetune(...) in calib mode first, "
                                      "or drop load_ft_param()")
        expected = self._param_sha256
        if expected and path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise QuantInfoError("param.pth is not the one quant_info.json was exported with "
                                 "(a later fast finetune wrote it and was stopped before "
                                 "export_quant_config())", where=str(path),
                                 code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                                 hint="re-run calibration with fast finetune to completion "
                                      "(export_quant_config() writes quant_info.json last)")
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


def _check_entry_matches_spec(key: str, entry: QuantParams, spec, path: Path) -> None:
    """quant_info.json's entry was made with the scale type and per-channel setting the current
    config asks for (calibrating for one target and testing with another's config used to run
    silently: a CPU calibration tested with the DPU default exported an XModel without fixes)."""
    diffs = []
    if entry.is_pof2 != spec.is_pof2:
        diffs.append(f"scale_type {'poweroftwo' if entry.is_pof2 else 'float'} in "
                     f"quant_info.json, {'poweroftwo' if spec.is_pof2 else 'float'} in the config")
    per_channel = isinstance(entry.fix_pos, tuple) or isinstance(entry.scale, tuple)
    if per_channel != bool(spec.per_channel):
        diffs.append(f"per_channel {str(per_channel).lower()} in quant_info.json, "
                     f"{str(bool(spec.per_channel)).lower()} in the config")
    if diffs:
        raise QuantInfoError(
            f"quant_info.json was calibrated with another configuration: {key}: "
            + "; ".join(diffs), where=f"{path}, node {key}",
            code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
            hint="test with the quant_config_file (and target) used for calibration, or "
                 "re-run calibration with this one")


def _param_channels(model: nn.Module) -> dict[str, int]:
    """Channel count of every per-channel parameter quantizer, by key."""
    out: dict[str, int] = {}
    for mod in model.modules():
        for attr, name in (("weight_q", "weight"), ("bias_q", "bias")):
            q = mod._modules.get(attr)
            tensor = getattr(mod, name, None)
            if isinstance(q, FakeQuantizer) and q.axis is not None \
                    and isinstance(tensor, torch.Tensor) and tensor.dim() > q.axis:
                out[q.key] = int(tensor.shape[q.axis])
    return out


def _check_entry_values(key: str, entry: QuantParams, spec: QuantSpec, channels: int | None,
                        path: Path) -> None:
    """Zero points inside the integer range of the tensor's spec; one value per channel."""
    where = f"{path}, node {key}"
    values = entry.fix_pos if entry.fix_pos is not None else entry.scale
    if channels is not None and isinstance(values, tuple) and len(values) != channels:
        raise QuantInfoError(f"{key} has {len(values)} per-channel values in quant_info.json; "
                             f"the tensor has {channels} channels", where=where,
                             code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
                             hint="re-run calibration with this model")
    r = spec.int_range
    zps = entry.zero_point if isinstance(entry.zero_point, tuple) else (entry.zero_point,)
    bad = [z for z in zps if not r.qmin <= z <= r.qmax]
    if bad:
        raise QuantInfoError(f"zero point {bad[0]} of {key} is outside its integer range "
                             f"[{r.qmin}, {r.qmax}]", where=where,
                             hint="re-run calibration to rewrite quant_info.json")


def _check_settings(stored: dict, current: dict, path: Path) -> None:
    """The calibration's recorded settings equal the ones this config resolves to; otherwise an
    error naming the differing fields (first few), so no run mixes two configurations."""
    diffs = []
    if stored.get("target_device") != current["target_device"]:
        diffs.append(f"target_device {stored.get('target_device')} in quant_info.json, "
                     f"{current['target_device']} in the config")
    old_nodes, old_table = stored.get("nodes", {}), stored.get("table", [])
    # nodes on one side only mean another model: the entry checks name those
    common = [n for n in current["nodes"] if n in old_nodes]
    for node in common:
        row, old_row = current["nodes"][node], old_nodes[node]
        for kind, i in row.items():
            if kind not in old_row:
                diffs.append(f"{node} {kind}: not quantized in quant_info.json, quantized in "
                             "the config")
                continue
            old, new = old_table[old_row[kind]], current["table"][i]
            fields = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
            if fields:
                diffs.append(f"{node} {kind}: " + ", ".join(fields))
        diffs += [f"{node} {kind}: quantized in quant_info.json, not in the config"
                  for kind in old_row if kind not in row]
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise QuantInfoError(
            "quant_info.json was calibrated with other settings (calibration -> this config): "
            + "; ".join(diffs[:3]) + more, where=str(path),
            code="QUANTIZER_TORCH_CALIB_RESULT_MISMATCH",
            hint="test with the quant_config_file (and target) used for calibration, or re-run "
                 "calibration with this one")
