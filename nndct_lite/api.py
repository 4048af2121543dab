"""``torch_quantizer``: the vai_q_pytorch-compatible facade. It wires the pipeline stages
(capture -> passes -> config resolution -> placement -> generated model -> calibration / test
-> exports) and holds no algorithm code itself."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ._log import get_logger
from .config.spec import TargetDevice
from .errors import CalibrationError, ExportError, InputError, ModeError, QuantInfoError
from .graph.ir import Graph
from .session import QuantSession, prepare
from .state.layout import QAT_CONFIG_FILE, QUANT_INFO_FILE
from .state.modes import QuantMode, parse_quant_mode

__all__ = ["torch_quantizer"]

log = get_logger("api")


def _device(device: torch.device | str | int | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device {device!r} is not a torch device", where="device=",
                         hint="pass torch.device('cpu') or torch.device('cuda')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("[QUANTIZER_TORCH_CUDA_UNAVAILABLE] CUDA is not available, change device "
                    "to CPU")
        return torch.device("cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise InputError(f"device {str(dev)!r} does not exist: this machine has {n} CUDA "
                         "device(s)", where="device=",
                         hint=f"use 'cuda' or one of 'cuda:0' ... 'cuda:{n - 1}', or 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(dev)!r} is not supported", where="device=",
                         hint="use 'cpu' or 'cuda'")
    return dev


def _load_state_dict_file(module: nn.Module, path: str | os.PathLike[str]) -> None:
    from .state.files import safe_torch_load
    where = f"state_dict_file={os.fspath(path)!r}"
    if not Path(path).is_file():
        raise InputError("state_dict_file does not exist", where=where,
                         hint="check the path, or load the weights into the model yourself and "
                              "leave state_dict_file out")
    try:
        sd = safe_torch_load(path, "state_dict_file")
    except QuantInfoError as exc:
        raise InputError(exc.message, where=where,
                         hint="save it with torch.save(model.state_dict(), path); files holding "
                              "pickled Python objects are refused (weights_only=True)") from exc
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    try:
        module.load_state_dict(sd)
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines()][:3]
        raise InputError("state_dict_file does not fit the model: " + " ".join(lines),
                         where=where,
                         hint=f"pass a state dict saved from {type(module).__name__}, or none"
                         ) from exc


_CPU = torch.device("cpu")

#: arguments of vai_q_pytorch's torch_quantizer that nndct_lite does not implement: what the
#: argument does in the original, and what to do instead. Passing their default is fine;
#: anything else is an InputError (an argument that silently did nothing would mislead).
_UNIMPLEMENTED = {
    "mix_bit": (False, "mixed-bit search is not implemented",
                "leave mix_bit=False and set bit widths per layer in quant_config_file "
                "(layer_quant_config / layer_type_quant_config)"),
    "app_deploy": ("CV", "only the CV deployment flow exists",
                   "leave app_deploy='CV' (the NLP flow of the original is not implemented)"),
    "custom_quant_ops": (None, "custom op registration is not implemented",
                         "leave custom_quant_ops unset; ops the DPU cannot run stay float and "
                         "are written as CPU ops in the XModel"),
    "dynamo": (False, "capture through torch.dynamo is not implemented",
               "leave dynamo=False: models are captured with torch.fx, and Python control flow "
               "on shapes is resolved with the example input"),
}


def _reject_unimplemented(**given) -> None:
    for name, value in given.items():
        default, what, hint = _UNIMPLEMENTED[name]
        empty = value is None or value is False or (isinstance(value, (list, tuple, dict))
                                                     and not value)
        if value == default or (default in (None, False) and empty):
            continue
        raise InputError(f"{name}={value!r} is not supported: {what}", where=f"{name}=",
                         hint=hint)


def _check_target(target: object) -> None:
    """``target`` names a DPU (``DPUCZDX8G_ISA1_B4096`` ...). The quantization is the same for
    every DPU (the generic DPU rules); the name is recorded in resolved_config.json, and which
    ops the named DPU runs is decided when vai_c_xir compiles the XModel for it."""
    if target is None:
        return
    if not isinstance(target, str) or not target.upper().startswith("DPU"):
        raise InputError(f"target={target!r} is not a DPU target name", where="target=",
                         hint="pass a DPU name such as 'DPUCZDX8G_ISA1_B4096', or leave target "
                              "unset")
    log.warning("target=%s: the generic DPU rules are applied (they are the same for every "
                "DPU); vai_c_xir decides which ops %s runs when it compiles the XModel",
                target, target)


def _qat_config(mode: QuantMode, output_dir: Path, config_file: str | None) -> str:
    """``qat_proc=True``: test mode of a QAT result (the original's routing). The result folder's
    ``qat_config.json`` (written by ``QatProcessor.to_deployable``) is the config."""
    if mode is not QuantMode.TEST:
        raise InputError(f"qat_proc=True in {mode.value!r} mode: quantization-aware training "
                         "is not a calibration", where="qat_proc=",
                         hint="train with nndct_lite.apis.QatProcessor(model, inputs): "
                              "trainable_model(), your training loop, to_deployable(); then "
                              "torch_quantizer('test', deployable, inputs, qat_proc=True) "
                              "(docs/qat.md)")
    qat_config = output_dir / QAT_CONFIG_FILE
    if config_file is not None and Path(config_file).resolve() != qat_config.resolve():
        raise InputError(f"qat_proc=True reads {qat_config}, but quant_config_file names "
                         f"{config_file}", where="quant_config_file=",
                         hint="leave quant_config_file out: a QAT result is tested with the "
                              "configuration it was trained with")
    if not qat_config.is_file():
        raise QuantInfoError(f"no {QAT_CONFIG_FILE} in {output_dir}: not a QAT result",
                             where=str(qat_config),
                             hint="call QatProcessor.to_deployable(model, output_dir) first, or "
                                  "test a calibration result without qat_proc")
    return str(qat_config)


class torch_quantizer:  # noqa: N801 - the original's name
    """Quantize a float ``module`` for the DPU (or CPU/GPU float-scale targets).

    ``quant_mode``: ``'calib'`` collects statistics while you forward ``quant_model`` over
    calibration data, then ``export_quant_config()`` writes ``quantize_result/``; ``'test'``
    rebuilds the quantized model from those files; ``'float'`` leaves the model unchanged.
    Arguments after ``input_args`` follow vai_q_pytorch 3.5 and may all be given by keyword.
    ``qat_proc=True`` (test mode) tests a QAT result written by ``QatProcessor.to_deployable``
    with its ``qat_config.json``.
    """

    def __init__(self, quant_mode: str | QuantMode | int, module: nn.Module,
                 input_args: Any = None, input_kwargs: Any = None,
                 state_dict_file: str | os.PathLike[str] | None = None,
                 output_dir: str = "quantize_result",
                 bitwidth: int | None = None, mix_bit: bool = False,
                 device: torch.device | str | int | None = _CPU, lstm: bool = False,
                 app_deploy: str = "CV", qat_proc: bool = False, custom_quant_ops: object = None,
                 quant_config_file: str | None = None, target: str | None = None,
                 dynamo: bool = False) -> None:
        self.mode = parse_quant_mode(quant_mode)
        if isinstance(module, nn.DataParallel):
            log.warning("[QUANTIZER_TORCH_DATA_PARALLEL] unwrapping torch.nn.DataParallel")
            module = module.module
        if not isinstance(module, nn.Module):
            raise InputError(f"module must be a torch.nn.Module, got {type(module).__name__}",
                             where="module=", hint="pass the float model object itself")
        if isinstance(input_kwargs, (str, os.PathLike)) and state_dict_file is None:
            state_dict_file, input_kwargs = input_kwargs, None  # 3.0-era positional call
        if input_kwargs:
            raise InputError("input_kwargs is not supported yet", where="input_kwargs=",
                             hint="pass every forward input positionally in input_args")
        if input_args is None:
            raise InputError("input_args is required: an example input of the model",
                             where="input_args=", hint="pass e.g. torch.randn(1, 3, 224, 224)")
        if lstm:
            raise InputError("the LSTM flow is not part of nndct_lite", where="lstm=",
                             hint="use the PTQ flow (calib/test) for CNNs")
        if qat_proc:
            quant_config_file = _qat_config(self.mode, Path(output_dir), quant_config_file)
        _reject_unimplemented(mix_bit=mix_bit, app_deploy=app_deploy,
                              custom_quant_ops=custom_quant_ops, dynamo=dynamo)
        _check_target(target)
        self.device = _device(device)
        self.output_dir = Path(output_dir)
        if state_dict_file is not None:
            _load_state_dict_file(module, state_dict_file)
        self._float_module = module.to(self.device)
        example = input_args if isinstance(input_args, tuple) else (input_args,)
        self._example = tuple(a.to(self.device) if isinstance(a, torch.Tensor) else a
                              for a in example)
        self._session: QuantSession | None = None
        if self.mode is QuantMode.FLOAT:
            return
        self._session = prepare(
            module, self._example, mode=self.mode, output_dir=self.output_dir,
            config_file=quant_config_file, bitwidth=bitwidth, device=self.device,
            target=target)

    # ----------------------------------------------------------------- properties
    @property
    def quant_model(self) -> nn.Module:
        """The module to forward: the generated quantized model (float mode: the original)."""
        if self._session is None:
            return self._float_module
        return self._session.model

    @property
    def graph(self) -> Graph | None:
        return None if self._session is None else self._session.graph

    # ----------------------------------------------------------------- calib
    def export_quant_config(self) -> Path:
        """Write ``quant_info.json`` (and ``bias_corr.pth``); calib mode, after forwarding."""
        s = self._require_session("export_quant_config")
        return s.export_quant_config()

    def fast_finetune(self, run_fn: Callable[..., object], run_args: tuple,
                      method: str | None = None) -> None:
        """Layer-wise finetuning (calib mode), then saves ``param.pth``. The method is the
        config's ``fast_finetune_method`` (default ``"adaquant"``, the original's AdaQuant;
        also ``"gptq"``, ``"adaround"``); ``method=`` overrides it for this call."""
        s = self._require_session("fast_finetune")
        if self.mode is not QuantMode.CALIB:
            log.warning("[QUANTIZER_TORCH_FINETUNE_IGNORED] fast_finetune is ignored in test mode")
            return
        from .algorithms.fast_finetune import fast_finetune
        fast_finetune(s, run_fn, run_args, method=method)

    def load_ft_param(self) -> None:
        """Load ``param.pth`` written by fast_finetune (test mode)."""
        s = self._require_session("load_ft_param")
        if self.mode is not QuantMode.TEST:
            return
        s.load_ft_param()

    # ----------------------------------------------------------------- deploy
    def export_torch_script(self, output_dir: str = "quantize_result", verbose: bool = False):
        from .export.torchscript import export_torch_script
        s = self._require_test("export_torch_script")
        if s.dist is not None:   # rank 0 writes and gets the module; the others the file's path
            return s.dist.deploy(lambda: export_torch_script(s.freeze(), output_dir,
                                                             verbose=verbose),
                                 "export_torch_script()",
                                 reload=lambda: Path(output_dir) / f"{s.graph.model_name}_int.pt")
        return export_torch_script(s.freeze(), output_dir, verbose=verbose)

    export_traced_torch_script = export_torch_script

    def export_onnx_model(self, output_dir: str = "quantize_result", verbose: bool = False,
                          dynamic_batch: bool = False, opset_version: int | None = None,
                          native_onnx: bool = True, dump_layers: bool = False,
                          check_model: bool = False, opt_graph: bool = False):
        from .export.onnx_qdq import export_onnx_model
        s = self._require_test("export_onnx_model")
        if s.dist is not None:   # rank 0 writes; the others get its path
            return s.dist.deploy(lambda: export_onnx_model(s.freeze(), output_dir,
                                                           dynamic_batch=dynamic_batch,
                                                           opset_version=opset_version),
                                 "export_onnx_model()")
        return export_onnx_model(s.freeze(), output_dir, dynamic_batch=dynamic_batch,
                                 opset_version=opset_version)

    def export_xmodel(self, output_dir: str = "quantize_result", deploy_check: bool = False,
                      dynamic_batch: bool = False):
        from .export.xmodel.build import export_xmodel
        if dynamic_batch:
            raise InputError("export_xmodel(dynamic_batch=True) is not supported: an XModel "
                             "has a fixed batch size of 1", where="dynamic_batch=",
                             hint="drop dynamic_batch; the DPU runtime batches by running the "
                                  "batch-1 graph per image (use export_onnx_model(dynamic_batch"
                                  "=True) for a batch-agnostic file)")
        s = self._require_test("export_xmodel")
        result = s.freeze()
        if result.config.target_device is TargetDevice.DPU and not result.is_pof2:
            bad = [k for k, p in result.params.items() if p.is_set and not p.is_pof2]
            if not bad and not any(p.is_set for p in result.params.values()) \
                    and any("datatype float32" in (result.plan.float_reason(name) or "")
                            for name in result.plan):
                raise ExportError(
                    "every layer of this config stays float (datatype float32): nothing runs on "
                    "the DPU, so there is no XModel to write", where=str(result.config.path),
                    hint="give the layers the DPU should run datatype 'int' (e.g. a "
                         "layer_quantize_config rule), or export_onnx_model() / "
                         "export_torch_script() for a float model")
            what = (f"has float scales ({len(bad)} tensor(s), e.g. {bad[0]})" if bad
                    else "quantizes no tensor")
            raise ExportError(
                f"the loaded calibration {what}, but an XModel needs power-of-two fix "
                "positions on every quantized tensor", where=str(s.output_dir / QUANT_INFO_FILE),
                hint="calibrate with the DPU configuration (no quant_config_file, or one with "
                     "target_device DPU and scale_type poweroftwo), then export; for float "
                     "scales use export_onnx_model() or export_torch_script()")
        if s.dist is not None:   # rank 0 writes; the others get its path
            return s.dist.deploy(lambda: export_xmodel(result, output_dir,
                                                       deploy_check=deploy_check),
                                 "export_xmodel()")
        return export_xmodel(result, output_dir, deploy_check=deploy_check)

    # ----------------------------------------------------------------- helpers
    def _require_session(self, what: str) -> QuantSession:
        if self._session is None:
            raise ModeError(f"{what}() needs quant_mode 'calib' or 'test', not 'float'",
                            hint="construct torch_quantizer('calib', ...) first")
        return self._session

    def _require_test(self, what: str) -> QuantSession:
        s = self._require_session(what)
        if self.mode is not QuantMode.TEST:
            raise ModeError(f"{what}() is a deploy step and needs quant_mode 'test'",
                            where=f"quant_mode={self.mode.value!r}",
                            hint="run calibration, then construct torch_quantizer('test', ...), "
                                 "forward quant_model once, and export")
        if s.forwards == 0:
            raise CalibrationError(
                f"quant_model must be forwarded at least once before {what}()",
                code="QUANTIZER_TORCH_NO_FORWARD",
                hint="call quantizer.quant_model(x) on one batch before exporting")
        return s
