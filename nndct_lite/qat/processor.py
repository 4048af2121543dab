"""``QatProcessor``: quantization-aware training for the DPU on top of the PTQ pipeline.

1. The constructor keeps the float model and example inputs. ``trainable_model()`` runs the
   calib pipeline (capture, BN folding with the running statistics, placement, generated
   ``<Model>.py``, DPU observers) on a copy, forwards the calibration batches, applies the DPU
   fix-position rules (``quant/adjust.py``) and swaps every ``FakeQuantizer`` of the generated
   model for a :class:`TrainablePof2Quantizer` started at the calibrated fix position.
2. The user trains that model with an ordinary loop. Each quantizer holds ``log2_t``, the log2
   of its threshold: ``fix_pos = (bit_width - 1) - ceil(log2_t)``. With ``learn_fix_pos=True``
   it is a Parameter trained with the TQT gradient (Jain et al., "Trained Quantization
   Thresholds"): straight through ``ceil`` and ``round``, ``d q / d log2_t = s ln2 (round(x/s)
   - x/s)`` inside the range and ``s ln2 * clipped code`` outside, ``s = 2^-fix_pos``; the input
   gets the clipped STE (1 inside ``[qmin s, qmax s]``, 0 outside). With ``learn_fix_pos=False``
   the fix positions stay as calibrated and only the weights train.
3. ``to_deployable(trained, output_dir)`` reads the learned fix positions, applies the DPU rules
   again (a moved position is also set in the trained model, so both agree), writes the trained
   (folded) weights back into a copy of the float model (each folded BatchNorm becomes an exact
   identity, or carries the bias of a bias-less conv), and writes ``quantize_result/`` through
   the calib writers: ``<Model>.py``, ``quant_info.json``, ``resolved_config.json`` and
   ``qat_config.json``. ``torch_quantizer("test", deployable, inputs, output_dir=...,
   quant_config_file=<output_dir>/qat_config.json)`` then gives the trained model's outputs.

With a float-scale ``config`` (``target_device`` CPU or GPU, ``scale_type`` float) the
quantizers are :class:`TrainableScaleQuantizer`: the calibrated scale (per tensor or per channel)
trains as ``log_scale`` with the LSQ gradient (Esser et al., "Learned Step Size Quantization"),
written for ``log s``: ``s (round(x/s) - x/s)`` inside the range, ``s * clipped code`` outside;
zero points stay as calibrated; the input gets the clipped STE.

QAT runs with bias correction off and deploys with cross-layer equalization off
(``qat_config.json``): both change weights or biases outside training, and the deployed weights
must be the trained ones. ``include_cle: true`` in the config equalizes the weights once, before
training starts (the trained weights are the equalized ones, written back as they are).
"""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from .._log import get_logger
from ..config.explain import plan_settings
from ..errors import InputError, ModeError
from ..numerics.params import QuantParams
from ..quant.adjust import adjust_fix_positions
from ..quant.build import cast_datatypes, layer_of, set_mode
from ..quant.fake_quantizer import FakeQuantizer
from ..session import QuantSession, prepare
from ..state.files import atomic_write_text
from ..state.modes import QuantMode
from ..state.quant_info import QuantInfo, graph_md5, write_quant_info
from ..state.files import ensure_dir
from ..state.layout import QAT_CONFIG_FILE
from .quantizers import TrainablePof2Quantizer, TrainableScaleQuantizer

__all__ = ["QatProcessor", "TrainablePof2Quantizer", "TrainableScaleQuantizer", "QAT_CONFIG_FILE"]


log = get_logger("qat")

#: the config QAT calibrates, trains and deploys with (written next to quant_info.json)

_ATTRS = ("weight_q", "bias_q", "out_q")


def _qat_device(device) -> torch.device:
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("[QUANTIZER_TORCH_CUDA_UNAVAILABLE] CUDA is not available, change device "
                    "to CPU")
        return torch.device("cpu")
    return dev


def _as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


class QatProcessor:
    """Quantization-aware training for the DPU (vai_q_pytorch's ``QatProcessor``).

    ``model``: the float model (pretrained); ``inputs``: an example input (a tensor or a tuple),
    also the default calibration batch; ``bitwidth``: weights, biases and activations.
    ``config`` (an extension of the original): a quantization config, a dict or the path of a
    JSON file as ``torch_quantizer``'s ``quant_config_file`` (e.g. the CPU target with float
    scales and per-channel weights); default: the DPU default at ``bitwidth``. Its
    ``include_bias_corr`` is forced off; ``include_cle: true`` equalizes the weights once before
    training (the deployed config has CLE off); ``bitwidth`` fills in
    ``overall_quantize_config.bit_width`` when the config leaves it out.
    """

    def __init__(self, model: nn.Module, inputs: Any, bitwidth: int = 8, mix_bit: bool = False,
                 device: torch.device | str | None = None,
                 config: dict[str, Any] | str | Path | None = None) -> None:
        if mix_bit:
            raise InputError("mix_bit=True is not supported: mixed-bit search is not "
                             "implemented", where="mix_bit=",
                             hint="leave mix_bit=False; every tensor uses bitwidth")
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}",
                             where="model=")
        if isinstance(bitwidth, bool) or not isinstance(bitwidth, int) \
                or not 2 <= bitwidth <= 16:
            raise InputError(f"bitwidth must be an int in 2..16, got {bitwidth!r}",
                             where="bitwidth=")
        self.device = _qat_device(device)
        self.bitwidth = bitwidth
        self._user_config = _read_config(config)
        self._float = copy.deepcopy(model).to(self.device).eval()
        self._inputs = tuple(a.to(self.device) if isinstance(a, torch.Tensor) else a
                             for a in _as_tuple(inputs))
        self._tmp = tempfile.TemporaryDirectory(prefix="nndct_lite_qat_")
        self._config = Path(self._tmp.name) / QAT_CONFIG_FILE
        self._config_text = json.dumps(self.config_dict(), indent=2) + "\n"
        atomic_write_text(self._config, self._config_text)
        # the training session may equalize first (CLE is a weight transform before training;
        # the deployed model carries the trained, equalized weights and runs no CLE)
        self._train_config = Path(self._tmp.name) / "qat_train_config.json"
        atomic_write_text(self._train_config,
                          json.dumps(self._train_config_dict(), indent=2) + "\n")
        self._session: QuantSession | None = None
        self._deployable: nn.Module | None = None
        self._deploy_dir: Path | None = None

    @property
    def equalizes(self) -> bool:
        """Whether ``trainable_model()`` runs cross-layer equalization before training: the
        config says ``include_cle: true`` (the default config does not)."""
        return self._user_config is not None and self._user_config.get("include_cle") is True

    def _train_config_dict(self) -> dict[str, Any]:
        cfg = self.config_dict()
        if self.equalizes:
            cfg["include_cle"] = True
        return cfg

    def config_dict(self) -> dict[str, Any]:
        """The JSON config of QAT's deployed result (``qat_config.json``): the given config
        (default: the DPU default at ``bitwidth``) with no CLE and no bias correction. With
        ``include_cle: true`` in the given config, training starts from equalized weights and
        the deployed config keeps ReLU6 replaced by ReLU as CLE did."""
        if self._user_config is None:
            return {"target_device": "DPU", "include_cle": False, "include_bias_corr": False,
                    "overall_quantize_config": {"bit_width": self.bitwidth}}
        cfg = copy.deepcopy(self._user_config)
        if cfg.get("include_cle") is True:
            cfg["convert_relu6_to_relu"] = True
        cfg["include_cle"] = False
        cfg["include_bias_corr"] = False
        overall = cfg.setdefault("overall_quantize_config", {})
        if not isinstance(overall, dict):
            raise InputError("config: overall_quantize_config must be an object",
                             where="config=")
        overall.setdefault("bit_width", self.bitwidth)
        return cfg

    # ------------------------------------------------------------------ training model
    def trainable_model(self, learn_fix_pos: bool = True,
                        calib_batches: Iterable[Any] | None = None,
                        fast_finetune: str | None = None) -> nn.Module:
        """The generated model with trainable power-of-two fake quantization, in train mode.

        Fix positions (float scales with a float-scale ``config``) start from a calibration over
        ``calib_batches`` (inputs of the model, a tensor or a tuple each; default: the
        constructor's ``inputs``); ``learn_fix_pos`` trains them (TQT; LSQ for float scales) or
        keeps them fixed. ``fast_finetune`` (``"gptq"``, ``"adaround"`` or ``"adaquant"``;
        default None: off) first runs that fast finetune method over the same batches, so that
        training starts from the fast-finetuned weights instead of the float ones.
        """
        session = prepare(copy.deepcopy(self._float), self._inputs, mode=QuantMode.CALIB,
                          output_dir=Path(self._tmp.name), config_file=self._train_config,
                          bitwidth=None, device=self.device)
        batches = [tuple(a.to(self.device) if isinstance(a, torch.Tensor) else a
                         for a in _as_tuple(b))
                   for b in ([self._inputs] if calib_batches is None else calib_batches)]

        def forward_all() -> None:
            with torch.no_grad():
                for b in batches:
                    session.model(*b)
        if fast_finetune is not None:
            from ..algorithms.fast_finetune import fast_finetune as run_fast_finetune
            log.info("QAT starts from fast finetune (%s) over %d batch(es)", fast_finetune,
                     len(batches))
            run_fast_finetune(session, forward_all, (), method=fast_finetune)
        forward_all()
        params, outputs = session.collect()
        merged = {**params, **outputs}
        adjust_fix_positions(session.graph, session.placement, merged)
        model = session.model
        model._forward_pre_hooks.clear()      # the session's forward counter
        set_mode(model, QuantMode.TEST)
        for node in session.graph.nodes:
            mod = layer_of(model, node)
            for attr in _ATTRS:
                q = mod._modules.get(attr)
                if isinstance(q, FakeQuantizer) and q.cast is None:  # casts: nothing to train
                    p = merged.get(q.key)
                    p = p if p is not None and p.is_set else None
                    trainable: FakeQuantizer = TrainablePof2Quantizer(q, p, learn_fix_pos) \
                        if q.spec.is_pof2 else TrainableScaleQuantizer(q, p, learn_fix_pos)
                    setattr(mod, attr, trainable)
        model.train()
        self._session = session
        return model

    # ------------------------------------------------------------------ deploy
    def _require_session(self, what: str) -> QuantSession:
        if self._session is None:
            raise ModeError(f"{what}() needs the model of trainable_model()",
                            hint=f"call trainable_model(), train it, then {what}()")
        return self._session

    def _learned(self, trained: nn.Module
                 ) -> tuple[dict[str, QuantParams], dict[str, QuantParams]]:
        s = self._require_session("fix_positions")
        params: dict[str, QuantParams] = {}
        outputs: dict[str, QuantParams] = {}
        for node in s.graph.nodes:
            mod = layer_of(trained, node)
            for attr in _ATTRS:
                q = mod._modules.get(attr)
                if not isinstance(q, FakeQuantizer) or q.cast is not None:
                    continue             # a cast is in quant_info.json's dtype section
                p = q.params or QuantParams(q.spec.bit_width)
                (outputs if attr == "out_q" else params)[q.key] = p
        return params, outputs

    def fix_positions(self, trained: nn.Module) -> dict[str, int | tuple[int, ...] | None]:
        """The fix position of every quantization point of ``trained`` (None: float)."""
        params, outputs = self._learned(trained)
        return {k: p.fix_pos for k, p in {**params, **outputs}.items()}

    def to_deployable(self, trained_model: nn.Module, output_dir: str | Path = "quantize_result"
                      ) -> nn.Module:
        """Write ``quantize_result/`` for ``trained_model`` and return the float model with the
        trained weights (module docstring, step 3)."""
        s = self._require_session("to_deployable")
        out = Path(output_dir)
        params, outputs = self._learned(trained_model)
        merged = {**params, **outputs}
        moves = adjust_fix_positions(s.graph, s.placement, merged)
        if moves:
            log.warning("to_deployable: the DPU rules moved %d learned fix position(s); the "
                        "trained model now uses the moved ones too", len(moves))
            for node in s.graph.nodes:
                mod = layer_of(trained_model, node)
                for attr in _ATTRS:
                    q = mod._modules.get(attr)
                    if isinstance(q, (TrainablePof2Quantizer, TrainableScaleQuantizer)) \
                            and q.key in merged:
                        q.params = merged[q.key]
        deployable = copy.deepcopy(self._float)
        _write_back(s.graph, trained_model, deployable)
        ensure_dir(out)
        config = atomic_write_text(out / QAT_CONFIG_FILE, self._config_text)
        # the calib pipeline on the deployable model writes <Model>.py and resolved_config.json
        check = prepare(copy.deepcopy(deployable), self._inputs, mode=QuantMode.CALIB,
                        output_dir=out, config_file=config, bitwidth=None, device=self.device)
        keys_now = {m.key for m in check.model.modules()
                    if isinstance(m, FakeQuantizer) and m.cast is None}
        if keys_now != set(merged):
            raise ModeError("the deployable model's graph differs from the trained one "
                            f"({len(keys_now ^ set(merged))} quantization points differ)",
                            hint="keep the float model's structure unchanged between "
                                 "QatProcessor() and to_deployable()")
        info = QuantInfo(param={k: merged[k] for k in params},
                         output={k: merged[k] for k in outputs},
                         fast_finetuned=False, bias_corrected=False,
                         graph_md5=graph_md5(check.graph),
                         settings=plan_settings(check.config, check.plan),
                         run_id=check.run_id, dtype=cast_datatypes(check.model))
        path = write_quant_info(out, info)
        log.info("=>QAT result written (%s); test with quant_config_file=%s", path, config)
        self._deployable = deployable
        self._deploy_dir = out
        return deployable

    def test_quantizer(self, output_dir: str | Path = "quantize_result") -> Any:
        """``torch_quantizer("test", deployable, inputs, qat_proc=True)`` on the result of
        ``to_deployable`` in ``output_dir``, after one forward of ``inputs`` (what the exports
        need)."""
        from ..api import torch_quantizer
        out = Path(output_dir)
        if self._deployable is None or self._deploy_dir is None \
                or self._deploy_dir.resolve() != out.resolve():
            raise ModeError("exports need to_deployable(trained_model, output_dir) with the same "
                            "output_dir first",
                            hint=f"call to_deployable(trained, {str(out)!r}) first")
        q = torch_quantizer("test", self._deployable, self._inputs, output_dir=str(out),
                            device=self.device, qat_proc=True)
        with torch.no_grad():
            q.quant_model(*self._inputs)
        return q

    def export_xmodel(self, output_dir: str | Path = "quantize_result",
                      deploy_check: bool = False) -> Path:
        """Test mode on the deployable model, one forward, then the XModel (after
        ``to_deployable`` into the same ``output_dir``; power-of-two results only)."""
        path: Path = self.test_quantizer(output_dir).export_xmodel(str(output_dir),
                                                                   deploy_check=deploy_check)
        return path

    def export_onnx_model(self, output_dir: str | Path = "quantize_result",
                          dynamic_batch: bool = False, opset_version: int | None = None) -> Path:
        """The Q/DQ ONNX model of the trained result (as ``torch_quantizer``'s)."""
        path: Path = self.test_quantizer(output_dir).export_onnx_model(
            str(output_dir), dynamic_batch=dynamic_batch, opset_version=opset_version)
        return path

    def export_torch_script(self, output_dir: str | Path = "quantize_result") -> Any:
        """The TorchScript module of the trained result, written as ``<Model>_int.pt``."""
        return self.test_quantizer(output_dir).export_torch_script(str(output_dir))


def _read_config(config: dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    if config is None:
        return None
    if isinstance(config, dict):
        return copy.deepcopy(config)
    if isinstance(config, (str, Path)):
        from ..config.jsonfile import read_json
        data = read_json(str(config))
        if not isinstance(data, dict):
            raise InputError(f"config file {config} does not hold a JSON object",
                             where="config=")
        return data
    raise InputError(f"config must be a dict, a path or None, got {type(config).__name__}",
                     where="config=")


def _tensor_at(model: nn.Module, name: str) -> torch.Tensor | None:
    owner, _, leaf = name.rpartition(".")
    try:
        mod = model.get_submodule(owner) if owner else model
    except AttributeError:
        return None
    t = mod._parameters.get(leaf) if leaf in mod._parameters else mod._buffers.get(leaf)
    return t


def _identity_bn(bn: nn.Module, bias: torch.Tensor | None) -> None:
    """Make ``bn`` fold to ``W' = W, b' = b`` exactly: the fold computes
    ``a = gamma / sqrt(var + eps)`` and ``offset = beta - mean * a``; gamma is set to the very
    float ``sqrt(1 + eps)`` the fold divides by, so ``a == 1``; beta carries ``bias`` (for a
    conv without one) or 0."""
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.weight is None \
            or bn.bias is None or bn.running_mean is None or bn.running_var is None:
        raise InputError(f"BatchNorm {type(bn).__name__} without affine parameters or running "
                         "statistics cannot carry trained weights back", where="to_deployable",
                         hint="use affine=True BatchNorm layers with running statistics for QAT")
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        denom = torch.sqrt(bn.running_var + bn.eps)
        bn.weight.copy_(denom)
        bn.bias.copy_(bias.to(bn.bias) if bias is not None else torch.zeros_like(bn.bias))


def _write_back(graph, trained: nn.Module, float_model: nn.Module) -> None:
    """Copy every trained parameter of the generated model to the float model's tensor of the
    same state-dict name; folded BNs become identities (see ``_identity_bn``)."""
    for node in graph.nodes:
        mod = layer_of(trained, node)
        orphan_bias = None
        for key, name in node.param_names.items():
            src = mod._parameters.get(key) if key in mod._parameters else mod._buffers.get(key)
            if src is None:
                continue
            dst = _tensor_at(float_model, name)
            if dst is None:
                if key == "bias" and node.meta.get("folded_bn"):
                    orphan_bias = src.detach()
                    continue
                raise InputError(f"the float model has no tensor {name!r} for {node.name}",
                                 where="to_deployable")
            with torch.no_grad():
                dst.copy_(src.detach().to(dst))
        bn_path = node.meta.get("folded_bn")
        if bn_path:
            bn = float_model.get_submodule(bn_path)
            _identity_bn(bn, orphan_bias)
