"""Peer rows of bench_finetune.py (issue 24): brevitas GPTQ and torch.ao post-training quantization.

Neither package is a dependency of nndct_lite; install them in the bench's own environment
(``pip install brevitas``; torch.ao ships with torch). Every function here takes the float model,
the calibration images and the batch size, and returns the quantized model ready to evaluate.

brevitas (``brevitas_gptq``), through its FX flow: ``preprocess_for_quantize`` (symbolic trace,
functional ops to modules, BN merged into the convolutions, no equalization), ``quantize`` with
the default layer/activation maps except the quantizers named below, activation calibration
(``calibration_mode``) over the calibration images, then ``gptq_mode`` (one pass of the
calibration images per layer; ``act_order=True``, which measured better than the default on
ResNet-20 W4A8: 92.35 against 91.85 % on the first 2,000 test images with 500 calibration images;
brevitas' other defaults). Grids:

  w4a8  weights 4-bit symmetric per-channel float scale (``Int8WeightPerChannelFloat`` with
        ``bit_width=4``; in both grids the weight scale is set once from the weight statistics,
        ``scaling_impl=ParameterFromStatsFromParameterScaling``, as brevitas' PTQ examples do
        before GPTQ), activations 8-bit per-tensor float scale, MSE scale search
        (``Int8ActPerTensorFloatMSE`` / ``Uint8ActPerTensorFloatMSE``), 32-bit bias
  dpu   8-bit power-of-two per-tensor weights and activations (``Int8WeightPerTensorFixedPoint``,
        ``Int8ActPerTensorFixedPoint`` / ``Uint8ActPerTensorFixedPoint``), the nearest brevitas
        grid to the DPU's

The CIFAR ResNet's option-A shortcut (``F.pad(x[:, :, ::2, ::2], ...)``) and ShuffleNetV2's
``chunk`` / channel shuffle trace, but brevitas' quantized graph hands them a QuantTensor, which
has neither (``TypeError: tuple indices must be integers or slices, not tuple``; ``'IntQuantTensor'
object has no attribute 'chunk'``). ``_traceable`` swaps each such block for an equivalent one
with those ops as modules, traced as leaves, that apply the op to the QuantTensor's value and keep
its scale (slicing, zero padding, splitting and permuting channels leave the values on their
grid), before brevitas sees the model.

torch.ao (``torchao``), as bench/compare_peers.py runs it:

  w4a8  ``prepare_qat_fx`` with FakeQuantize (weights qint8 per-channel symmetric, range -8..7;
        activations quint8 0..255 HistogramObserver), observers on / fake quant off over the
        calibration images, then observers frozen, fake quant on, evaluated in eval mode (the
        QAT modules carry the weight fake quant; 4-bit has no CPU kernel, so this is simulation)
  dpu   the reference for the DPU-default rows: ``prepare_fx`` / ``convert_fx`` with the x86
        default qconfig mapping (int8 per-channel symmetric weights, HistogramObserver activations,
        ``reduce_range``), run on the int8 kernels
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_models as cm  # noqa: E402

PEER_METHODS = ("brevitas_gptq", "torchao")


# --------------------------------------------------------------------------- brevitas
def _on_value(fn, x):
    """``fn`` on a tensor, or on a brevitas QuantTensor's value, keeping its scale, zero point and
    bit width (the ops used here only move, drop or zero-pad elements: the values stay on the
    same grid)."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    return x.set(value=fn(x.value))


class _OptionAShortcut(nn.Module):
    """``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))`` as a module."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        p = self.pad // 2
        return _on_value(lambda v: F.pad(v[:, :, ::2, ::2], (0, 0, 0, 0, p, p)), x)


class _ChannelShuffle(nn.Module):
    def forward(self, x):
        return _on_value(lambda v: cm.channel_shuffle(v, 2), x)


class _ChannelHalf(nn.Module):
    """One half of ``x.chunk(2, dim=1)``."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        return _on_value(lambda v: v.chunk(2, dim=1)[self.index], x)


_LEAVES = (_OptionAShortcut, _ChannelShuffle, _ChannelHalf)


class _TraceableBlock(nn.Module):
    """A CIFAR ResNet basic block with the same parameters, the shortcut a module."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.shortcut = _OptionAShortcut(block.pad) if block.pad else nn.Identity()
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class _TraceableUnit(nn.Module):
    """A ShuffleNetV2 unit with the same parameters, split and shuffle as modules."""

    def __init__(self, unit: nn.Module):
        super().__init__()
        self.stride, self.branch1, self.branch2 = unit.stride, unit.branch1, unit.branch2
        self.first, self.second, self.shuffle = _ChannelHalf(0), _ChannelHalf(1), _ChannelShuffle()

    def forward(self, x):
        if self.stride == 1:
            out = torch.cat((self.first(x), self.branch2(self.second(x))), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def _traceable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every option-A block and ShuffleNetV2 unit replaced by the
    equivalent ``_TraceableBlock`` / ``_TraceableUnit``."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, cm.InvertedResidual):
                setattr(parent, name, _TraceableUnit(child))
            elif hasattr(child, "pad") and hasattr(child, "conv2") and hasattr(child, "bn2"):
                setattr(parent, name, _TraceableBlock(child))
    return model


def _brevitas_trace(model: nn.Module):
    """brevitas' FX trace (what ``preprocess_for_quantize`` runs), the ``_LEAVES`` kept whole."""
    from brevitas.fx import Tracer
    from brevitas.fx.brevitas_tracer import _symbolic_trace

    class _Tracer(Tracer):
        def is_leaf_module(self, m, qualified_name):
            return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualified_name)

    return _symbolic_trace(_Tracer(), model, None)


def _brevitas_maps(grid: str):
    from brevitas.core.scaling.standalone import ParameterFromStatsFromParameterScaling
    from brevitas.graph.quantize import COMPUTE_LAYER_MAP, QUANT_ACT_MAP, QUANT_IDENTITY_MAP
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloatMSE,
                                Int8WeightPerChannelFloat, Int8WeightPerTensorFixedPoint,
                                Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloatMSE)
    if grid == "w4a8":
        wq, sact, uact = (Int8WeightPerChannelFloat.let(bit_width=4), Int8ActPerTensorFloatMSE,
                          Uint8ActPerTensorFloatMSE)
    elif grid == "dpu":
        wq, sact, uact = (Int8WeightPerTensorFixedPoint, Int8ActPerTensorFixedPoint,
                          Uint8ActPerTensorFixedPoint)
    else:
        raise KeyError(grid)
    # the weight scale a parameter set once from the weight's statistics: brevitas' GPTQ quantizes
    # one column at a time, and a scale taken from the statistics of that column alone (the
    # default, runtime statistics) makes every column nearly exact, i.e. GPTQ a no-op
    wq = wq.let(scaling_impl=ParameterFromStatsFromParameterScaling)
    layers = copy.copy(COMPUTE_LAYER_MAP)
    for cls in (nn.Conv2d, nn.Linear):
        qcls, kw = layers[cls]
        layers[cls] = (qcls, {**kw, "weight_quant": wq})
    acts = {k: (v[0], {**v[1], "act_quant": uact}) if v is not None else None
            for k, v in QUANT_ACT_MAP.items()}
    idents = {"signed": (QUANT_IDENTITY_MAP["signed"][0],
                         {**QUANT_IDENTITY_MAP["signed"][1], "act_quant": sact}),
              "unsigned": (QUANT_IDENTITY_MAP["unsigned"][0],
                           {**QUANT_IDENTITY_MAP["unsigned"][1], "act_quant": uact})}
    return layers, acts, idents


def brevitas_gptq(model: nn.Module, xc: torch.Tensor, bs: int, grid: str) -> nn.Module:
    from brevitas.graph.calibrate import calibration_mode
    from brevitas.graph.gptq import gptq_mode
    from brevitas.graph.quantize import preprocess_for_quantize, quantize
    layers, acts, idents = _brevitas_maps(grid)
    g = preprocess_for_quantize(_brevitas_trace(_traceable(model).eval()), trace_model=False,
                                equalize_iters=0, merge_bn=True)
    qm = quantize(g, quant_identity_map=idents, compute_layer_map=layers, quant_act_map=acts)
    qm.eval()
    with torch.no_grad():
        with calibration_mode(qm):
            cm.forward_all(qm, xc, bs)
        qm(xc[:bs])   # initialises the weight scales (quantization is off while calibrating)
        with gptq_mode(qm, act_order=True) as gptq:
            for _ in range(gptq.num_layers):
                cm.forward_all(gptq.model, xc, bs)
                gptq.update()
    return qm.eval()


# --------------------------------------------------------------------------- torch.ao
def torchao(model: nn.Module, xc: torch.Tensor, bs: int, grid: str) -> nn.Module:
    import compare_peers
    return compare_peers.calibrate_ao({"w4a8": "ao_w4a8", "dpu": "ao_pc"}[grid], model, xc, bs)


def calibrate_peer(method: str, model: nn.Module, xc: torch.Tensor, bs: int,
                   grid: str) -> nn.Module:
    if method == "brevitas_gptq":
        return brevitas_gptq(model, xc, bs, grid)
    if method == "torchao":
        return torchao(model, xc, bs, grid)
    raise KeyError(method)
