"""What the fast finetune methods share: capturing the user's batches, the activation fused after
a layer, and the one-pass driver of the rounding methods (GPTQ, AdaRound).

The driver tunes every layer in one forward of the quantized model (test mode, fix positions
frozen) over all cached batches at once: a forward pre-hook on each conv/linear receives the
layer's input as the quantized model computes it (the layers before it already tuned), tunes the
layer's weights there, and the forward goes on with the tuned layer. There is no model forward
per layer or per optimisation step; the layer's work runs on its cached input only.

Methods that reconstruct the float model's output (AdaRound) need the float output of the same
layer: a second thread runs the float model over the same inputs and stops after each layer
until the quantized pass asks for the next one, so both passes stay in step and only the current
activations of each are held. The two threads never compute at the same time, so the numbers are
those of a single thread (deterministic)."""
from __future__ import annotations

import copy
import queue
import threading
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._log import get_logger, progress
from ..calib.bias_correction import BiasCorrector
from ..errors import CalibrationError
from ..graph.ir import Graph, Node
from ..graph.ops import OpKind
from ..quant.build import layer_of, quantizers, set_mode
from ..state.modes import QuantMode
from .grid import WeightGrid, weight_grid
from .protocols import FinetuneSession

__all__ = ["RunFn", "ACTS", "capture_inputs", "fused_activation", "set_bias_corrector",
           "detach_bias_correctors", "renew_bias_correctors",
           "concat_batches", "LayerTuner", "run_layerwise"]

log = get_logger("algorithms")
RunFn = Callable[..., object]
ACTS = {OpKind.RELU: F.relu, OpKind.RELU6: F.relu6, OpKind.HARDSIGMOID: F.hardsigmoid,
        OpKind.HARDSWISH: F.hardswish}
FloatAct = Callable[[torch.Tensor], torch.Tensor]


def capture_inputs(model: nn.Module, run_fn: RunFn, run_args: Iterable[Any]) -> list[tuple]:
    """The model inputs of every forward ``run_fn(*run_args)`` makes (detached)."""
    batches: list[tuple] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        batches.append(tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
    h = model.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            run_fn(*run_args)
    finally:
        h.remove()
    if not batches:
        raise CalibrationError("fast_finetune: run_fn never called quant_model",
                               hint="run_fn(*run_args) must forward quantizer.quant_model")
    return batches


def fused_activation(model: nn.Module, node: Node) -> tuple[nn.Module | None, FloatAct | None]:
    """The activation right after a conv (its only user: ReLU, ReLU6, hard-sigmoid/-swish) as
    (quantized module, float function); (None, None) for linear layers and anything else."""
    users = list(node.users)
    if len(users) == 1 and users[0].kind in ACTS and node.kind is not OpKind.LINEAR:
        return layer_of(model, users[0]), ACTS[users[0].kind]
    return None, None


def set_bias_corrector(mod: nn.Module, bc: BiasCorrector | None) -> None:
    # torch's stubs type Module.__setattr__'s value as Tensor | Module; any value works
    mod.bias_corrector = bc  # type: ignore[assignment]


def detach_bias_correctors(graph: Graph, model: nn.Module) -> dict[str, BiasCorrector]:
    """Take every layer's bias corrector off (tuning must not move it); returns them by node."""
    bcs: dict[str, BiasCorrector] = {}
    for node in graph.nodes:
        mod = layer_of(model, node)
        bc = getattr(mod, "bias_corrector", None)
        if bc is not None:
            bcs[node.name] = bc
            set_bias_corrector(mod, None)
    return bcs


def renew_bias_correctors(graph: Graph, model: nn.Module, bcs: dict[str, BiasCorrector]) -> None:
    """Give each layer of ``bcs`` a fresh corrector of the same rate (calibration measures the
    tuned weights' bias error anew)."""
    for node_name, old in bcs.items():
        set_bias_corrector(layer_of(model, graph.by_name(node_name)), type(old)(old.rate))


def concat_batches(batches: list[tuple]) -> tuple:
    """All cached batches as one batch: tensors concatenated along dim 0, other arguments equal
    in every batch. Raises ``CalibrationError`` when the batches cannot be stacked."""
    first = batches[0]
    out: list[Any] = []
    for i, arg in enumerate(first):
        column: list[Any] = [b[i] if i < len(b) else None for b in batches]
        if any(len(b) != len(first) for b in batches):
            raise CalibrationError("fast_finetune: run_fn forwards batches with different "
                                   "numbers of arguments; gptq and adaround stack them",
                                   hint="forward the same arguments in every batch, or use "
                                        "fast_finetune_method adaquant")
        if isinstance(arg, torch.Tensor):
            if not all(isinstance(c, torch.Tensor) and c.dim() == arg.dim() and c.dim() > 0
                       and c.shape[1:] == arg.shape[1:] and c.dtype == arg.dtype for c in column):
                raise CalibrationError(
                    f"fast_finetune: argument {i} of the cached batches differs in shape or "
                    "dtype beyond the batch dimension; gptq and adaround stack the batches",
                    hint="forward batches of one shape, or use fast_finetune_method adaquant")
            out.append(torch.cat(column, 0) if len(column) > 1 else arg)
        elif all(c is arg or c == arg for c in column):
            out.append(arg)
        else:
            raise CalibrationError(f"fast_finetune: argument {i} differs between the cached "
                                   "batches and is not a tensor, so they cannot be stacked",
                                   hint="use fast_finetune_method adaquant for such models")
    return tuple(out)


class LayerTuner(Protocol):
    """One method's per-layer work: tune ``layer.weight`` in place on its input ``x`` (and, with
    the float pass, the float model's output of the layer after its activation, ``target``, and
    the float model's input of the layer, ``x_float``)."""

    def __call__(self, index: int, name: str, layer: nn.Module, grid: WeightGrid,
                 act: nn.Module | None, x: torch.Tensor, target: torch.Tensor | None,
                 x_float: torch.Tensor | None = None) -> None: ...


class _Stopped(Exception):
    """Unwinds the float pass when the quantized pass ends early."""


class _FloatStream:
    """The float model's forward in a second thread, paused after each listed layer."""

    def __init__(self, model: nn.Module, layers: list[nn.Module], inputs: tuple):
        self._out: queue.Queue = queue.Queue()
        self._go = threading.Semaphore(0)
        self._stop = False
        self._waiting = True   # the float pass starts when the first output is asked for
        self._hooks = [m.register_forward_hook(self._hook) for m in layers]
        self._thread = threading.Thread(target=self._run, args=(model, inputs), daemon=True,
                                        name="nndct-float-stream")
        self._thread.start()

    def _hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self._out.put((module, (args[0].detach(), out.detach())))
        self._go.acquire()
        if self._stop:
            raise _Stopped

    def _run(self, model: nn.Module, inputs: tuple) -> None:
        self._go.acquire()
        if self._stop:
            return
        try:
            with torch.no_grad():
                model(*inputs)
            self._out.put((None, None))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the quantized pass
            self._out.put((None, exc))

    def next(self, expect: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The float input and output of ``expect`` (the float pass runs until it has them)."""
        if self._waiting:
            self._go.release()
        module, out = self._out.get()
        self._waiting = module is not None
        if isinstance(out, BaseException):
            raise CalibrationError(f"fast_finetune: the float model failed: {out}") from out
        if module is not expect:
            raise CalibrationError("fast_finetune: the float and the quantized model ran their "
                                   "layers in different orders")
        return out

    def close(self) -> None:
        self._stop = True
        self._go.release()
        self._thread.join()
        for h in self._hooks:
            h.remove()


def run_layerwise(session: FinetuneSession, model: nn.Module, run_fn: RunFn,
                  run_args: Iterable[Any], tune: LayerTuner, *, desc: str,
                  float_pass: bool) -> int:
    """Calibrate once, then tune every quantized conv/linear in one quantized forward over all
    cached batches; returns the number of layers tuned. Runs inside ``fast_finetune``'s
    transaction; leaves the model in calib mode with the fix positions kept."""
    set_mode(model, QuantMode.FLOAT)
    batches = capture_inputs(model, run_fn, run_args)
    stacked = concat_batches(batches)
    pristine = None
    if float_pass:
        pristine = copy.deepcopy(model)   # float weights: the targets of every layer
    bcs = detach_bias_correctors(session.graph, model)
    set_mode(model, QuantMode.CALIB)
    with torch.no_grad():
        for b in batches:                          # one calibration: all fix positions
            model(*b)
    if session.dist is not None:
        session.dist.finalize()                    # every rank's calibration steps merged
    del batches
    set_mode(model, QuantMode.TEST)
    work = []
    for node in session.graph.nodes:
        layer = layer_of(model, node)
        grid = weight_grid(layer)
        if grid is not None:
            work.append((node, layer, grid))
    bar = iter(progress(work, desc=desc, total=len(work)))
    path_of = {id(m): n for n, m in model.named_modules()}
    stream = None
    if pristine is not None:
        pristine_of = dict(pristine.named_modules())
        twins = {id(layer): pristine_of[path_of[id(layer)]] for _, layer, _ in work}
        stream = _FloatStream(pristine, [twins[id(layer)] for _, layer, _ in work], stacked)
    done = [0]

    def make_hook(index: int, node: Node, grid: WeightGrid) -> Callable:
        act, float_act = fused_activation(model, node)

        def hook(layer: nn.Module, args: tuple) -> None:
            next(bar, None)
            if stream is None:
                tune(index, node.name, layer, grid, act, args[0].detach(), None)
            else:
                x_float, target = stream.next(twins[id(layer)])
                if float_act is not None:
                    target = float_act(target)
                tune(index, node.name, layer, grid, act, args[0].detach(), target,
                     x_float=x_float)
            layer.__dict__.pop("_wcache", None)
            done[0] += 1
        return hook

    hooks = [layer.register_forward_pre_hook(make_hook(i, node, grid))
             for i, (node, layer, grid) in enumerate(work)]
    try:
        with torch.no_grad():
            model(*stacked)
    finally:
        for h in hooks:
            h.remove()
        if stream is not None:
            stream.close()
    for _ in bar:
        pass
    del pristine, stacked
    renew_bias_correctors(session.graph, model, bcs)
    for q in quantizers(model).values():
        q.keep_params = True
    set_mode(model, QuantMode.CALIB)
    if done[0] != len(work):
        log.warning("fast finetune: %d of %d layers were not reached by the model's forward "
                    "and keep their calibrated rounding", len(work) - done[0], len(work))
    return done[0]
