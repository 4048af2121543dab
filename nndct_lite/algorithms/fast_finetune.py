"""Fast finetune: layer-wise reconstruction of the quantized model, chosen by the config key
``fast_finetune_method`` (``FinetuneMethod``):

* ``adaquant`` (the default, the original's; numerics.md 11): layer by layer, learn the float
  weights and biases of each conv/linear so that its quantized output reconstructs the float
  model's output of that layer, on a small cached data set. Fix positions stay frozen while tuning.
* ``gptq`` (``gptq.py``) and ``adaround`` (``adaround.py``): choose the rounding of every weight
  on the grid calibration fixed, in one quantized pass over the cached data (``layerwise.py``).

Differences of ``adaquant`` from vai_q_pytorch, on purpose: the per-epoch acceptance test uses the
layer's own reconstruction loss on the cached data (not a full network evaluation per epoch), and
every layer is checked once against the network loss afterwards and reverted if it made the
network worse, so fast finetune never makes the calibrated model worse on the cached data."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._log import get_logger, progress
from ..config.spec import FinetuneMethod
from ..errors import CalibrationError, ConfigError
from ..graph.ops import OpKind
from ..quant.build import layer_of, quantizers, set_mode
from ..quant.modes import model_transaction
from ..state.files import atomic_torch_save, atomic_write_text
from ..state.layout import PARAM_FILE, RESOLVED_CONFIG_FILE
from ..state.modes import QuantMode
from .adaround import AdaroundOptions, AdaroundTuner
from .gptq import GptqOptions, GptqTuner
from .layerwise import ACTS as _ACTS
from .layerwise import RunFn, run_layerwise
from .layerwise import capture_inputs as _capture_inputs
from .layerwise import detach_bias_correctors, renew_bias_correctors
from .protocols import FinetuneSession, RankSync

__all__ = ["FinetuneOptions", "fast_finetune", "finetune_method"]

log = get_logger("algorithms")


@dataclass(frozen=True)
class FinetuneOptions:
    max_epochs: int = 100
    lr_factor: float = 0.01
    min_lr: float = 1e-5
    gptq: GptqOptions = GptqOptions()
    adaround: AdaroundOptions = AdaroundOptions()


def _outputs(model: nn.Module, batches: list[tuple]) -> list[Any]:
    with torch.no_grad():
        return [model(*b) for b in batches]


def _flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


def _net_loss(model: nn.Module, batches: list[tuple], targets: list[Any],
              dist: RankSync | None = None) -> list[float]:
    """Per model output: sqrt(MSE(float, quantized)) averaged over the cached batches (with
    ``dist``, session.dist: over every rank's batches)."""
    outs = _outputs(model, batches)
    per_batch = [[float(torch.sqrt(F.mse_loss(a, b))) for a, b in zip(_flat(o), _flat(t))]
                 for o, t in zip(outs, targets)]
    if dist is not None:
        per_batch = dist.all_batches(per_batch)
    per: list[float] | None = None
    for vals in per_batch:
        per = vals if per is None else [p + v for p, v in zip(per, vals)]
    if per is None:   # _capture_inputs guarantees a batch
        raise CalibrationError("fast_finetune: no cached batch to measure the network loss on")
    return [p / len(per_batch) for p in per]


def _layer_io(model: nn.Module, layer: nn.Module, batches: list[tuple],
              mode: QuantMode) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Inputs and raw outputs of ``layer`` over the cached batches, with the model in ``mode``."""
    ins: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        ins.append(args[0].detach())
        outs.append(out.detach())
    set_mode(model, mode)
    h = layer.register_forward_hook(hook)
    try:
        _outputs(model, batches)
    finally:
        h.remove()
    return ins, outs


def _sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    noise = float((ref - test).pow(2).mean())
    return math.inf if noise == 0 else 10 * math.log10(float(ref.pow(2).mean()) / noise)


def _tune_layer(layer: Any, act: nn.Module | None,
                float_act: Callable[[torch.Tensor], torch.Tensor] | None,
                q_in: list[torch.Tensor], f_out: list[torch.Tensor], opts: FinetuneOptions,
                batch_size: int, dist: RankSync | None = None) -> int:
    w_f = layer.weight.detach().clone()
    f = opts.lr_factor * (0.5 if batch_size == 1 else 1.0)
    wq = layer._modules["weight_q"]
    if _sqnr_db(w_f, wq(w_f)) / 8 > 4.5:
        f = 0.1 * f * (0.5 if batch_size == 1 else 1.0)
    with torch.no_grad():   # numerics.md 11: the std of the current, snapped parameters
        lr_w = f * float(wq(w_f).std())
        bq = layer._modules.get("bias_q")
        b_now = layer.bias.detach() if layer.bias is not None else None
        if b_now is not None and bq is not None:
            b_now = bq(b_now)
    params = [{"params": [layer.weight], "lr": lr_w}]
    has_bias = layer.bias is not None and layer.bias.numel() > 1
    if has_bias and b_now is not None:   # has_bias: b_now is the layer's bias
        params.append({"params": [layer.bias], "lr": f * float(b_now.std())})
    opt = torch.optim.Adam(params)
    target = [float_act(o) if float_act is not None else o for o in f_out]

    def local_loss() -> float:
        with torch.no_grad():
            vals = [float(F.mse_loss(_pred(layer, act, x), t)) for x, t in zip(q_in, target)]
        return sum(dist.all_batches(vals) if dist is not None else vals)

    # optimizer steps: one cached batch each; with dist, each rank's batch of the step, the
    # gradients averaged over the ranks (session.dist.steps / average_gradients)
    steps = [[k] for k in range(len(q_in))] if dist is None else dist.steps(len(q_in))
    tuned = [layer.weight] + ([layer.bias] if has_bias else [])

    best, best_state, epochs = local_loss(), copy.deepcopy(layer.state_dict()), 0
    for epochs in range(1, opts.max_epochs + 1):  # noqa: B007 - the count is returned
        layer.weight.requires_grad_(True)
        if layer.bias is not None:
            layer.bias.requires_grad_(True)
        for step in steps:
            opt.zero_grad()
            for k in step:
                x, t = q_in[k], target[k]
                loss = F.mse_loss(_pred(layer, act, x), t) + F.mse_loss(layer.weight, w_f)
                loss.backward()
            if dist is not None:
                dist.average_gradients(tuned, len(step))
            opt.step()
        layer.weight.requires_grad_(False)
        if layer.bias is not None:
            layer.bias.requires_grad_(False)
        cur = local_loss()
        if cur < best:
            best, best_state = cur, copy.deepcopy(layer.state_dict())
            continue
        layer.load_state_dict(best_state)
        for g in opt.param_groups:
            g["lr"] *= 0.5
        if opt.param_groups[0]["lr"] < opts.min_lr:
            break
    layer.load_state_dict(best_state)
    return epochs


def _pred(layer: nn.Module, act: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        y = layer(x)
    return act(y) if act is not None else y


def finetune_method(value: FinetuneMethod | str | None,
                    default: FinetuneMethod = FinetuneMethod.ADAQUANT) -> FinetuneMethod:
    """``value`` as a ``FinetuneMethod`` (None: ``default``); a clear error for a wrong word."""
    if value is None:
        return default
    if isinstance(value, FinetuneMethod):
        return value
    allowed = ", ".join(repr(m.value) for m in FinetuneMethod)
    if isinstance(value, str):
        for m in FinetuneMethod:
            if m.value == value.lower():
                return m
    raise ConfigError(f"fast_finetune_method {value!r} is not an accepted value; allowed: "
                      f"{allowed}", where="fast_finetune(method=...)",
                      hint=f"pass one of {allowed}, or set the config key fast_finetune_method")


def fast_finetune(session: FinetuneSession, run_fn: RunFn, run_args: Iterable[Any],
                  opts: FinetuneOptions = FinetuneOptions(),
                  method: FinetuneMethod | str | None = None) -> None:
    """Run fast finetune on ``session`` (calib mode); writes ``param.pth``.

    ``method``: None runs the config's ``fast_finetune_method`` (default ``adaquant``).

    Exception-safe: when it fails or is interrupted, the model's parameters, modes, quantizer
    parameters, observers and bias correctors are put back as they were before the call."""
    config = getattr(session, "config", None)
    configured = getattr(config, "fast_finetune_method", FinetuneMethod.ADAQUANT)
    chosen = finetune_method(method, configured)
    source = "config file" if method is None else "fast_finetune(method=...)"
    if method is None and getattr(config, "sources", {}).get("fast_finetune_method") != "file":
        source = "default"
    model = session.model
    with model_transaction(model):
        if chosen is FinetuneMethod.ADAQUANT:
            reverted, n_layers = _finetune(session, model, run_fn, run_args, opts)
        else:
            tuner = GptqTuner(opts.gptq, session.dist) if chosen is FinetuneMethod.GPTQ \
                else AdaroundTuner(opts.adaround, session.dist)
            n_layers = run_layerwise(session, model, run_fn, run_args, tuner,
                                     desc=f"fast finetune ({chosen.value})",
                                     float_pass=chosen is FinetuneMethod.ADAROUND
                                     or opts.gptq.float_inputs)
            reverted = 0
    session.fast_finetuned = True
    session.forwards = 0
    state = model.state_dict()
    record = {"method": chosen.value, "source": source, "layers": n_layers,
              "layers_reverted": reverted}

    def write() -> Any:
        _record_method(session, record)
        return atomic_torch_save(state, session.output_dir / PARAM_FILE)
    if session.dist is None:
        path = write()
    else:   # rank 0 writes, once every rank holds the same parameters
        path = session.dist.write_once(write, "writing param.pth", agree=state)
    if chosen is FinetuneMethod.ADAQUANT:
        log.info("=>Exporting quant model parameters.(%s); %d of %d layers kept their float "
                 "weights (tuning did not lower the network loss)", path, reverted, n_layers)
    else:
        log.info("=>Exporting quant model parameters.(%s); %s rounded %d layers", path,
                 chosen.value, n_layers)


def _record_method(session: FinetuneSession, record: dict) -> None:
    """Add what ran to ``resolved_config.json`` (when the session wrote one)."""
    path = session.output_dir / RESOLVED_CONFIG_FILE
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    data["fast_finetune"] = record
    switch = data.get("switches", {}).get("fast_finetune_method")
    if isinstance(switch, dict):
        switch["ran"] = record["method"]
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _finetune(session: FinetuneSession, model: nn.Module, run_fn: RunFn, run_args: Iterable[Any],
              opts: FinetuneOptions) -> tuple[int, int]:
    """The finetune itself (inside ``fast_finetune``'s transaction): (reverted layers, layers)."""
    set_mode(model, QuantMode.FLOAT)
    batches = _capture_inputs(model, run_fn, run_args)
    targets = _outputs(model, batches)
    # the layer targets come from the float model, not from the partly tuned one (step 5)
    pristine = copy.deepcopy(model)
    pristine_of = dict(pristine.named_modules())
    path_of = {id(m): n for n, m in model.named_modules()}
    bcs = detach_bias_correctors(session.graph, model)
    set_mode(model, QuantMode.CALIB)
    _outputs(model, batches)                      # one calibration: all fix positions
    if session.dist is not None:
        session.dist.finalize()                   # every rank's calibration steps merged
    set_mode(model, QuantMode.TEST)
    baseline = _net_loss(model, batches, targets, session.dist)
    layers = [n for n in session.graph.nodes
              if layer_of(model, n)._modules.get("weight_q") is not None]
    batch_size = batches[0][0].shape[0] if isinstance(batches[0][0], torch.Tensor) else 2
    reverted = 0
    for node in progress(layers, desc="fast finetune", total=len(layers)):
        layer = layer_of(model, node)
        users = [u for u in node.users]
        act = float_act = None
        if len(users) == 1 and users[0].kind in _ACTS and node.kind is not OpKind.LINEAR:
            act, float_act = layer_of(model, users[0]), _ACTS[users[0].kind]
        q_in, _ = _layer_io(model, layer, batches, QuantMode.TEST)
        _, f_out = _layer_io(pristine, pristine_of[path_of[id(layer)]], batches,
                             QuantMode.FLOAT)
        set_mode(model, QuantMode.TEST)
        before = copy.deepcopy(layer.state_dict())
        epochs = _tune_layer(layer, act, float_act, q_in, f_out, opts, batch_size,
                             session.dist)
        layer.__dict__.pop("_wcache", None)
        loss = _net_loss(model, batches, targets, session.dist)
        if any(a > b for a, b in zip(loss, baseline)):
            layer.load_state_dict(before)
            layer.__dict__.pop("_wcache", None)
            reverted += 1
        else:
            baseline = loss
        log.debug("fast finetune %s: %d epochs, net loss %s", node.name, epochs, baseline)
    del pristine, pristine_of
    renew_bias_correctors(session.graph, model, bcs)
    for q in quantizers(model).values():
        q.keep_params = True
    set_mode(model, QuantMode.CALIB)
    return reverted, len(layers)
