"""Graph IR + placement + specs -> the quantized model (an instance of the generated class)."""
from __future__ import annotations

import copy
import hashlib
import linecache
import sys
import types
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..calib.bias_correction import BiasCorrector
from ..calib.base import Scratch
from ..calib import Role
from ..codegen.python import generate_source
from ..config.spec import QuantSpec, TensorKind
from ..errors import TraceError
from ..graph.ir import Graph, Node
from ..graph.ops import CONV_LIKE, OpKind
from ..numerics import dpu
from ..state.files import atomic_write_text
from ..state.modes import QuantMode
from .fake_quantizer import FakeQuantizer
from .modules import Opaque, QuantOp
from .placement import Placement

__all__ = ["write_and_import", "load_generated", "build_quant_model", "set_mode", "quantizers",
           "cast_quantizers", "cast_datatypes", "layer_of"]

SpecOf = Callable[[Node, TensorKind], QuantSpec]


def load_generated(source: str, model_name: str, path: Path) -> type:
    """The model class defined by ``source`` (text this process generated itself).

    The text is compiled in memory: nothing in the output folder is executed or imported (no
    ``.pyc`` from ``__pycache__``, no edited ``<Model>.py``). ``path`` only names the file in
    tracebacks, whose lines come from ``source``."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    mod_name = f"nndct_lite_generated_{model_name}_{digest}"
    filename = f"<nndct_lite generated {path}>"
    module = types.ModuleType(mod_name)
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    sys.modules[mod_name] = module
    exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # noqa: S102 - our own text
    return getattr(module, model_name)


def write_and_import(graph: Graph, output_dir: Path) -> tuple[type, Path]:
    """Write ``<output_dir>/<Model>.py`` atomically (for the user to read) and return the class
    compiled from the generated text in memory (never from the folder)."""
    source = generate_source(graph)
    path = atomic_write_text(Path(output_dir) / f"{graph.model_name}.py", source)
    return load_generated(source, graph.model_name, path), path


def layer_of(model: nn.Module, node: Node) -> nn.Module:
    return getattr(model, f"module_{node.index}")


def _load_params(mod: nn.Module, node: Node) -> None:
    if node.kind is OpKind.CONST:
        value = node.params["value"]
        if isinstance(value, torch.Tensor):
            mod.value = value.clone()
        return
    if isinstance(mod, Opaque):
        assert node.module is not None      # codegen writes Opaque only for a module node
        mod.inner = copy.deepcopy(node.module)
        return
    for key, tensor in node.params.items():
        target: torch.Tensor | None = mod._parameters.get(key)
        if target is None:
            target = mod._buffers.get(key)
        if target is None:
            continue
        if target.shape != tensor.shape:
            raise TraceError(f"generated module for {node.name} expects {key} of shape "
                             f"{tuple(target.shape)}, the model has {tuple(tensor.shape)}")
        with torch.no_grad():
            target.copy_(tensor)


def _weight_axis(node: Node) -> int:
    return 1 if node.kind is OpKind.CONV_TRANSPOSE2D else 0


def _approximations(mod: QuantOp, node: Node) -> bool:
    """Install the DPU approximation of ``node``; False when its output must stay float."""
    k = node.kind
    if k in (OpKind.ADAPTIVE_AVGPOOL2D, OpKind.AVGPOOL2D):
        in_shape = node.inputs[0].shape if node.inputs else None
        out_shape = node.shape
        if not in_shape or not out_shape or len(in_shape) != 4:
            return True
        if k is OpKind.ADAPTIVE_AVGPOOL2D:
            if in_shape[2] % out_shape[2] or in_shape[3] % out_shape[3]:
                return True     # no DPU pool (a CPU op, no DPU factor); output still quantized
            kh, kw = in_shape[2] // out_shape[2], in_shape[3] // out_shape[3]
        else:
            if node.module is not None:
                assert isinstance(node.module, nn.AvgPool2d)    # kind_of_module's AVGPOOL2D
                ks = node.module.kernel_size
            else:
                ks = node.args[1] if len(node.args) > 1 else node.kwargs["kernel_size"]
            kh, kw = (ks, ks) if isinstance(ks, int) else tuple(ks)
        factor = dpu.avgpool_factor(kh, kw)
        if factor != 1.0:
            mod.post = lambda y, f=factor: y * f
        return True
    if k is OpKind.MEAN and node.inputs and node.shape is not None:
        n_in = 1
        for d in node.inputs[0].shape or ():
            n_in *= d
        n_out = 1
        for d in node.shape:
            n_out *= d
        n = n_in // max(n_out, 1)
        factor = dpu.mean_factor(n) if n > 0 else 1.0
        if factor != 1.0:
            mod.post = lambda y, f=factor: y * f
        return True
    if k is OpKind.LEAKY_RELU:
        # only while quantization is on (calib/test): float mode keeps the model's own slope
        mod.replace = lambda x, *a, **kw: torch.nn.functional.leaky_relu(x, dpu.LEAKY_SLOPE)
        return True
    if k is OpKind.HARDSIGMOID:
        mod.replace = lambda x, *a, **kw: dpu.dpu_hardsigmoid(x)
    if k is OpKind.HARDSWISH:
        mod.replace = lambda x, *a, **kw: dpu.dpu_hardswish(x)
    return True


_FRESH = CONV_LIKE | {OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.DIV, OpKind.CAT,
                      OpKind.MAXPOOL2D, OpKind.AVGPOOL2D, OpKind.ADAPTIVE_AVGPOOL2D, OpKind.MEAN,
                      OpKind.PAD, OpKind.INTERPOLATE}


def _fast_path(mod: QuantOp, node: Node, placement: Placement) -> None:
    """Mark test-mode shortcuts: in-place quantization of tensors the op created itself, and a
    ReLU folded into its quantizer's clamp when its input is only read by that ReLU."""
    q = mod.out_q
    if node.kind in _FRESH and node.op in ("call_module", "call_function", "call_method"):
        q.inplace = node.kind is not OpKind.CAT or node.op != "call_method"
    if node.kind is OpKind.RELU and len(node.inputs) == 1:
        src = node.inputs[0]
        if src.kind in _FRESH and len(src.users) == 1 and placement.group_of.get(src) is \
                placement.group_of.get(node):
            mod.relu_fused = True
            q.relu_fused = True
            q.inplace = True


def build_quant_model(cls: type, graph: Graph, placement: Placement, spec_of: SpecOf, *,
                      dpu_approx: bool, bias_correction: bool, device: torch.device,
                      target=None) -> nn.Module:
    """Instantiate the generated class, load the (folded) parameters, attach quantizers."""
    model = cls()
    prefix = graph.model_name + "::"
    scratch = Scratch()
    for node in graph.nodes:
        mod = layer_of(model, node)
        assert isinstance(mod, QuantOp)     # codegen writes nndct_lite.nn layers only
        mod.node_name = node.name
        _load_params(mod, node)
        in_float_group = node in placement.float_heads or \
            placement.group_of.get(node) in placement.float_heads
        # a group kept float runs on the CPU: no DPU approximation there
        keep_output = _approximations(mod, node) if dpu_approx and not in_float_group else True
        if placement.is_carrier(node) and keep_output:
            role = Role.MODEL_INPUT if node.kind is OpKind.INPUT else Role.ACTIVATION
            mod.out_q = FakeQuantizer(node.name, spec_of(node, TensorKind.ACTIVATION), role,
                                      target=target)
            mod.out_q.scratch = scratch
            _fast_path(mod, node, placement)
        if node.kind in CONV_LIKE and node in placement.group_of \
                and placement.group_of[node] not in placement.float_heads:
            ws = spec_of(node, TensorKind.WEIGHTS)
            mod.weight_q = FakeQuantizer(prefix + node.param_names["weight"], ws, Role.PARAM,
                                         _weight_axis(node) if ws.per_channel else None, target)
            if "bias" in node.params:
                bs = spec_of(node, TensorKind.BIAS)
                mod.bias_q = FakeQuantizer(prefix + node.param_names["bias"], bs, Role.PARAM,
                                           0 if bs.per_channel else None, target)
                if bias_correction and ws.is_int and bs.is_int:
                    mod.bias_corrector = BiasCorrector()
    return model.to(device)


def set_mode(model: nn.Module, mode: QuantMode) -> None:
    for m in model.modules():
        if isinstance(m, FakeQuantizer):
            m.set_mode(mode)
        elif isinstance(m, QuantOp):
            m.qmode = mode
            m.__dict__.pop("_wcache", None)


def quantizers(model: nn.Module) -> dict[str, FakeQuantizer]:
    """Every integer FakeQuantizer by key, in module order (the ones calibration sets)."""
    return {m.key: m for m in model.modules() if isinstance(m, FakeQuantizer) and m.cast is None}


def cast_datatypes(model: nn.Module) -> dict[str, dict[str, str]]:
    """quant_info.json's ``dtype`` section: section -> key -> datatype of the cast points."""
    out: dict[str, dict[str, str]] = {}
    for key, q in cast_quantizers(model).items():
        section = "param" if q.role is Role.PARAM else "output"
        out.setdefault(section, {})[key] = q.spec.datatype.value
    return out


def cast_quantizers(model: nn.Module) -> dict[str, FakeQuantizer]:
    """The quantization points a float ``datatype`` turned into casts, by key."""
    return {m.key: m for m in model.modules()
            if isinstance(m, FakeQuantizer) and m.cast is not None}
