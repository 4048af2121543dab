"""The ``nndct-lite`` command line (also ``python -m nndct_lite``).

Subcommands (one table, ``COMMANDS``): ``inspect`` (which nodes the DPU runs, which fall back to
the CPU and why), ``explain-config`` (the resolved quantization config, per node with a model),
``show-quant-info`` (a readable ``quant_info.json``), ``report`` (print ``report.md``) and
``xmodel show|run`` (from ``nndct_lite.sim.cli``).

Exit status: 0 ok, 2 user error (one ``error[CODE]: message`` line, then where / hint),
1 internal error (the traceback only with ``--debug``). Only this module configures logging.
See docs/cli.md.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from .errors import InputError, NndctError

if TYPE_CHECKING:   # the command line imports torch and the pipeline lazily
    import torch
    import torch.nn as nn

    from .graph.ir import Node
    from .numerics.params import QuantParams
    from .session import QuantSession

__all__ = ["main", "build_parser", "COMMANDS", "Command", "load_model", "parse_shape",
           "inspect_rows", "InspectRow", "format_inspect"]

PROG = "nndct-lite"

#: torchvision constructors that need extra arguments to build without pretrained weights
_TV_KWARGS = {"googlenet": {"aux_logits": False, "init_weights": False},
              "inception_v3": {"aux_logits": False, "init_weights": False}}


# =============================================================================== model specs
def parse_shape(text: str) -> tuple[int, ...]:
    """``'1,3,224,224'`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``."""
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise InputError(f"bad input shape {text!r}: expected positive integers separated by "
                         "commas", where="--input-shape", hint="e.g. --input-shape 1,3,224,224")
    return shape


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def load_model(spec: str) -> nn.Module:
    """Build the float model a MODEL_SPEC names, in eval mode.

    ``torchvision:NAME`` (``weights=None``), ``path/to/file.py:Name`` (a class instantiated
    without arguments, or a function returning the model) or ``package.module:Name``.
    """
    import torch.nn as nn

    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name:
        raise InputError(f"MODEL_SPEC {spec!r} is not SOURCE:NAME", where="MODEL_SPEC",
                         hint="use torchvision:resnet18 or path/to/model.py:ClassName")
    if source == "torchvision":
        model = _torchvision_model(name)
    else:
        obj = _user_object(source, name, spec)
        model = _instantiate(obj, spec)
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec} gives a {type(model).__name__}, not a torch.nn.Module",
                         where="MODEL_SPEC", hint="name an nn.Module subclass or a function that "
                                                  "returns a model")
    return model.eval()


def _torchvision_model(name: str):
    import torchvision.models as tvm
    known = tvm.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise InputError(f"torchvision has no model {name!r}", where=f"torchvision:{name}",
                         hint=(f"did you mean {', '.join(close)}?" if close else
                               "see torchvision.models.list_models()"))
    return tvm.get_model(name, weights=None, **_TV_KWARGS.get(name, {}))


def _user_object(source: str, name: str, spec: str):
    path = Path(source)
    if source.endswith(".py") or path.is_file():
        if not path.is_file():
            raise InputError(f"model file {source} does not exist", where="MODEL_SPEC",
                             hint="give the path of the .py file that defines the model")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            raise InputError(f"cannot import {source!r}: {exc}", where="MODEL_SPEC",
                             hint="name a .py file (path/to/model.py:Name), an importable "
                                  "module or torchvision:NAME") from exc
    obj = getattr(module, name, None)
    if obj is None:
        public = [k for k in vars(module) if not k.startswith("_")]
        close = difflib.get_close_matches(name, public, n=3)
        raise InputError(f"{source} defines no {name!r}", where=spec,
                         hint=(f"did you mean {', '.join(close)}?" if close else
                               "name a class or function defined in that file"))
    return obj


def _import_file(path: Path):
    """Import the user's model file as a module (its folder on sys.path while it loads)."""
    path = path.resolve()
    mod_name = f"nndct_lite_cli_user_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot load {path} as Python", where="MODEL_SPEC")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise InputError(f"importing {path.name} failed: {type(exc).__name__}: {exc}",
                         where=_user_frame(exc, path),
                         hint="fix the model file; it must import without side effects "
                              "that need arguments") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path.parent))
    return module


def _instantiate(obj, spec: str):
    import inspect
    if not callable(obj):
        return obj
    try:
        inspect.signature(obj).bind()
    except TypeError as exc:
        raise InputError(f"{spec}() cannot be called without arguments: {exc}",
                         where=spec, hint="name a class whose __init__ has defaults for every "
                                          "argument, or write a factory function") from exc
    except ValueError:          # no signature (a builtin): just try the call
        pass
    try:
        return obj()
    except Exception as exc:
        raise InputError(f"{spec}() raised {type(exc).__name__}: {exc}",
                         where=_user_frame(exc, None), hint="fix the model constructor") from exc


def _user_frame(exc: BaseException, path: Path | None) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(__file__)
    user = [f for f in frames if not f.filename.startswith(here)]
    if path is not None:
        user = [f for f in user if Path(f.filename).resolve() == path] or user
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    if not user:
        return str(path) if path else "model constructor"
    f = user[-1]
    return f"{f.filename}:{f.lineno}"


def _example(shapes: Sequence[tuple[int, ...]]) -> tuple[torch.Tensor, ...]:
    import torch
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(s, generator=gen) for s in shapes)


@contextlib.contextmanager
def quant_session(spec: str, shapes: Sequence[tuple[int, ...]], config: str | None,
                  bitwidth: int | None = None) -> Iterator[QuantSession]:
    """A calib-mode ``QuantSession`` of MODEL_SPEC built by ``torch_quantizer`` in a temporary
    folder (deleted afterwards): the same capture, passes, placement and config resolution as a
    real run."""
    from .api import torch_quantizer
    model = load_model(spec)
    if not shapes:
        raise InputError("--input-shape is required with a model", where="--input-shape",
                         hint="e.g. --input-shape 1,3,224,224 (once per forward input)")
    with tempfile.TemporaryDirectory(prefix="nndct-lite-") as tmp:
        quantizer = torch_quantizer("calib", model, _example(shapes), output_dir=tmp,
                                    quant_config_file=config, bitwidth=bitwidth)
        session = quantizer._session
        if session is None:   # calib mode always builds one
            raise RuntimeError("torch_quantizer('calib', ...) built no session")
        yield session


# =============================================================================== inspect
@dataclass(frozen=True)
class InspectRow:
    index: int
    name: str
    normalized: str
    type: str
    kind: str
    shape: tuple[int, ...] | None
    device: str            # DPU | CPU | GPU | - (no deployed op)
    reason: str            # why CPU / why no op; notes for DPU nodes
    quantized: str         # w8 b8 o8 / o@7 / float / -

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "normalized": self.normalized,
                "type": self.type, "kind": self.kind,
                "shape": list(self.shape) if self.shape is not None else None,
                "device": self.device, "reason": self.reason, "quantized": self.quantized}


def _kinds():
    from .graph.ops import OpKind as K
    # the node kinds the XModel export writes as DPU ops (export/xmodel/build.py ``emit``)
    dpu = frozenset({K.INPUT, K.CONV2D, K.DEPTHWISE_CONV2D, K.CONV_TRANSPOSE2D, K.LINEAR,
                     K.RELU, K.RELU6, K.SIGMOID, K.TANH, K.HARDSIGMOID, K.HARDSWISH, K.GELU,
                     K.LEAKY_RELU, K.CAT, K.ADAPTIVE_AVGPOOL2D, K.AVGPOOL2D, K.MAXPOOL2D,
                     K.STRIDED_SLICE, K.PAD, K.FLATTEN, K.RESHAPE})
    binary = frozenset({K.ADD, K.MUL, K.SUB})          # only with two tensor operands
    alias = frozenset({K.DROPOUT, K.IDENTITY, K.CONTIGUOUS})
    return K, dpu, binary, alias


def _quant_text(session: QuantSession, node: Node) -> str:
    from .quant.build import layer_of
    from .quant.fake_quantizer import quantizer_of
    mod = layer_of(session.model, node)
    parts = []
    for attr, tag in (("weight_q", "w"), ("bias_q", "b"), ("out_q", "o")):
        q = quantizer_of(mod, attr)
        if q is not None:
            parts.append(f"{'in' if tag == 'o' and node.kind.value == 'input' else tag}"
                         f"{q.spec.bit_width}")
    if "out_q" not in mod._modules and node.is_tensor:
        src = session.placement.output_quantizer_of(node) \
            if node in session.placement.group_of else None
        if src is not None and src is not node \
                and layer_of(session.model, src)._modules.get("out_q") is not None:
            parts.append(f"o@{src.index}")
    return " ".join(parts) or ("float" if node.is_tensor else "-")


def _device_of(session: QuantSession, node: Node) -> tuple[str, str]:
    from .config.spec import TargetDevice
    from .quant.build import layer_of
    K, dpu, binary, alias = _kinds()
    plan, placement = session.plan, session.placement
    mod = layer_of(session.model, node)
    k = node.kind
    if k is K.CONST:
        return "-", "constant tensor, read by the ops that use it"
    if k is K.SIZE:
        return "-", "tensor shape: a Python value folded into its consumers"
    if not node.is_tensor:
        return "-", "returns a Python value (a tuple, a number): no op of its own"
    if k is K.PYOP:
        return "-", "takes a tensor out of a tuple: no op of its own"
    target = session.config.target_device
    reason = plan.float_reason(node.name) if node.name in plan else None
    if target is not TargetDevice.DPU:
        return target.value, reason or ""
    if k is K.OTHER:
        what = type(node.module).__name__ if node.module is not None else \
            getattr(node.target, "__name__", str(node.target))
        return "CPU", f"{what} is not supported by the DPU: runs in float"
    if reason is not None:
        return "CPU", reason
    if placement.is_carrier(node) and mod._modules.get("out_q") is None:
        ins = node.inputs[0].shape if node.inputs else None
        return "CPU", (f"no DPU form for {k.value} from {_shape_text(ins)} to "
                       f"{_shape_text(node.shape)} (no integer kernel): output stays float")
    if k in alias:
        return "DPU", "no-op on deploy"
    if k in binary:
        operands = [i for i in node.inputs if i.is_tensor]
        if len(operands) == 2:
            return "DPU", _notes(node, mod)
        return "CPU", f"{k.value} with a scalar or constant operand has no DPU op"
    if k in dpu:
        return "DPU", _notes(node, mod)
    if k is K.BATCHNORM:
        return "CPU", "BatchNorm not directly after a single-consumer conv: not folded, " \
                      "no DPU op"
    return "CPU", f"the XModel has no DPU op for {k.value}: it runs in a CPU subgraph"


def _notes(node: Node, mod: nn.Module) -> str:
    notes = []
    if node.meta.get("folded_bn"):
        notes.append(f"BatchNorm {node.meta['folded_bn']} folded in")
    post = getattr(mod, "post", None)
    if post is not None:
        import torch
        notes.append(f"DPU approximation: output x {float(post(torch.ones(1))):.6g}")
    elif getattr(mod, "replace", None) is not None or node.kind.value == "leaky_relu":
        notes.append(f"DPU form of {node.kind.value}")
    return "; ".join(notes)


def inspect_rows(session: QuantSession) -> list[InspectRow]:
    """One row per graph node of a (calib or test) session: device and reason."""
    from .graph.layer_type import layer_type_of
    rows = []
    for node in session.graph.nodes:
        device, reason = _device_of(session, node)
        rows.append(InspectRow(node.index, node.name, node.normalized, layer_type_of(node),
                               node.kind.value, node.shape, device, reason,
                               _quant_text(session, node)))
    return rows


def _shape_text(shape: Sequence[int] | None) -> str:
    return "x".join(str(d) for d in shape) if shape else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_inspect(rows: Sequence[InspectRow], *, model: str, target: str,
                   shapes: Sequence[tuple[int, ...]], rewrites: dict | None = None) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.device] = counts.get(r.device, 0) + 1
    summary = ", ".join(f"{counts[d]} {d}" for d in ("DPU", "CPU", "GPU") if d in counts)
    if counts.get("-"):
        summary += f", {counts['-']} without a deployed op"
    lines = [f"model:   {model}", f"input:   {', '.join(_shape_text(s) for s in shapes)}",
             f"target:  {target}", f"nodes:   {len(rows)} ({summary})"]
    if rewrites:
        folded = rewrites.get("batchnorm_folded") or []
        relu6 = rewrites.get("relu6_to_relu") or []
        cle = rewrites.get("cross_layer_equalization_pairs") or []
        bits = [f"{len(folded)} BatchNorm folded"] if folded else []
        bits += [f"{len(relu6)} ReLU6 -> ReLU"] if relu6 else []
        bits += [f"{len(cle)} CLE pair(s)"] if cle else []
        if bits:
            lines.append(f"rewrites: {', '.join(bits)}")
    lines.append("")
    lines += _table(("#", "node", "type", "output shape", "device", "quant", "notes"),
                    [(str(r.index), r.name, r.type, _shape_text(r.shape), r.device,
                      r.quantized, r.reason) for r in rows])
    cpu = [r for r in rows if r.device == "CPU"]
    lines.append("")
    if target == "DPU":
        if cpu:
            lines.append(f"{len(cpu)} node(s) fall back to the CPU:")
            lines += [f"- {r.name} ({r.type}): {r.reason}" for r in cpu]
        else:
            lines.append("every tensor op runs on the DPU.")
    else:
        lines.append(f"target_device is {target}: nothing is placed on a DPU "
                     "(float-scale quantization for the CPU/GPU).")
    return "\n".join(lines) + "\n"


def _cmd_inspect(args: argparse.Namespace) -> int:
    with quant_session(args.model, args.input_shape, args.config, args.bitwidth) as s:
        rows = inspect_rows(s)
        target = s.config.target_device.value
        rewrites = _rewrites(s)
    if args.json:
        print(json.dumps({"model": args.model, "target_device": target,
                          "input_shapes": [list(x) for x in args.input_shape],
                          "nodes": [r.as_dict() for r in rows]}, indent=2))
    else:
        sys.stdout.write(format_inspect(rows, model=f"{rows[0].name.split('::')[0]} "
                                        f"({args.model})" if rows else args.model,
                                        target=target, shapes=args.input_shape,
                                        rewrites=rewrites))
    return 0


def _rewrites(session: QuantSession) -> dict:
    path = Path(session.output_dir) / "resolved_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("graph_rewrites", {})
    except (OSError, ValueError):
        return {}


# =============================================================================== explain-config
def _cmd_explain(args: argparse.Namespace) -> int:
    from .config import explain, format_explain, load_config
    if args.model is None:
        if args.input_shape:
            raise InputError("--input-shape needs a MODEL_SPEC", where="--input-shape",
                             hint="explain-config [--config F] MODEL_SPEC --input-shape ...")
        config, plan = load_config(args.config, bitwidth=args.bitwidth), None
        _emit_explain(args, config, plan, explain, format_explain)
        return 0
    with quant_session(args.model, args.input_shape, args.config, args.bitwidth) as s:
        _emit_explain(args, s.config, s.plan, explain, format_explain)
    return 0


def _emit_explain(args, config, plan, explain, format_explain) -> None:
    if args.json:
        print(json.dumps(explain(config, plan), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        sys.stdout.write(format_explain(config, plan))


# =============================================================================== show-quant-info
def _quant_info_path(arg: Path) -> Path:
    path = arg / "quant_info.json" if arg.is_dir() else arg
    if not path.is_file():
        raise InputError(f"{path} does not exist", where=str(arg),
                         code="QUANTIZER_TORCH_NO_CALIB_RESULT",
                         hint="give the quantize_result folder written by "
                              "export_quant_config() (calib mode)")
    return path


def _qp_text(p: QuantParams | None) -> tuple[str, str]:
    """(fix position or scale, extra) of one QuantParams."""
    if p is None or not p.is_set:
        return "-", "not calibrated (float)"
    if p.fix_pos is not None:
        if isinstance(p.fix_pos, tuple):
            return (f"{min(p.fix_pos)}..{max(p.fix_pos)}",
                    f"per channel ({len(p.fix_pos)}), step 2^-{max(p.fix_pos)} or coarser")
        lo, hi = -(2 ** (p.bit_width - 1)), 2 ** (p.bit_width - 1) - 1
        step = 2.0 ** -p.fix_pos
        return str(p.fix_pos), f"range [{lo * step:.6g}, {hi * step:.6g}], step 2^{-p.fix_pos}"
    if isinstance(p.scale, tuple):
        return (f"{min(p.scale):.6g}..{max(p.scale):.6g}",
                f"per channel ({len(p.scale)})")
    extra = f"zero_point {p.zero_point}" if p.zero_point else ""
    if p.float_max is not None:
        extra = ", ".join(x for x in (extra, f"float_max {p.float_max:.6g}") if x)
    return f"{p.scale:.6g}", extra


def _cmd_show_quant_info(args: argparse.Namespace) -> int:
    from .graph.ir import Graph
    from .state.quant_info import read_quant_info
    path = _quant_info_path(args.dir)
    if path.name != "quant_info.json":     # read_quant_info reads <dir>/quant_info.json
        raise InputError(f"{path.name} is not quant_info.json", where=str(path),
                         hint="give the folder or its quant_info.json")
    # the graph only maps normalized keys (Model::nndct_relu_2) to long names: none here
    info = read_quant_info(path.parent, Graph(model_name="", nodes=[]))
    rows = []
    for section, entries in (("param", info.param), ("output", info.output),
                             ("input", info.input)):
        for key, p in entries.items():
            if section == "param":
                kind = "bias" if key.rsplit(".", 1)[-1].startswith("bias") else "weights"
            elif "::input_" in key or "::nndct_input_" in key or section == "input":
                kind = "input"
            else:
                kind = "activation"
            value, extra = _qp_text(p)
            rows.append((key, kind, str(p.bit_width), value, extra))
    pof2 = any(p.fix_pos is not None for p in (*info.param.values(), *info.output.values()))
    lines = [f"file:            {path}", f"version:         {info.version or '-'}",
             f"graph_md5:       {info.graph_md5 or '-'}",
             f"bias_corrected:  {'yes' if info.bias_corrected else 'no'}",
             f"fast_finetuned:  {'yes' if info.fast_finetuned else 'no'}",
             f"entries:         {len(info.param)} param, {len(info.output)} output, "
             f"{len(info.input)} input", ""]
    if rows:
        lines += _table(("node / tensor", "kind", "bits", "fix pos" if pof2 else "scale",
                         "notes"), rows)
    else:
        lines.append("(no entries)")
    print("\n".join(lines))
    return 0


# =============================================================================== report
def _cmd_report(args: argparse.Namespace) -> int:
    from .report import CHART_FILE, REPORT_FILE, load_rows, write_chart
    path = args.dir / REPORT_FILE if args.dir.is_dir() else args.dir
    if not path.is_file():
        raise InputError(f"no {REPORT_FILE} in {args.dir}", where=str(path),
                         code="NNDCT_LITE_NO_REPORT",
                         hint="calibrate with torch_quantizer('calib', ...) and call "
                              "export_quant_config(): it writes the report next to "
                              "quant_info.json")
    if args.chart:     # before printing: a missing report.json or matplotlib fails cleanly
        rows, worst = load_rows(path.parent)
        write_chart(rows, path.parent, worst=worst)
    sys.stdout.write(path.read_text(encoding="utf-8"))
    chart = path.with_name(CHART_FILE)
    if chart.is_file():
        print(f"\nchart: {chart}")
    return 0


def _report_args(p):
    _dir_arg(p)
    p.add_argument("--chart", action="store_true",
                   help="also draw DIR/report_chart.png from DIR/report.json (needs matplotlib)")


# =============================================================================== xmodel
def _register_xmodel(subparsers) -> argparse.ArgumentParser:
    from .sim.cli import add_xmodel_parser
    p = add_xmodel_parser(subparsers)
    _add_common(p)
    p.set_defaults(func=_cmd_xmodel)
    return p


def _cmd_xmodel(args: argparse.Namespace) -> int:
    from .sim.cli import main_xmodel
    for attr, flag in (("file", "FILE"), ("input", "--input")):
        f = getattr(args, attr, None)
        if f is not None and not Path(f).is_file():
            raise InputError(f"{f} does not exist", where=flag,
                             hint="give an existing file" + (
                                 " (written by export_xmodel())" if attr == "file" else ""))
    rc = main_xmodel(args)
    # main_xmodel returns 1 only from its handlers of NndctError / OSError / ValueError, i.e.
    # for bad files or inputs: a user error here. Anything else propagates (internal, 1).
    return 2 if rc == 1 else rc


# =============================================================================== the table
@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    run: Callable[[argparse.Namespace], int] | None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    register: Callable | None = None         # register(subparsers) instead (xmodel)
    epilog: str = ""


def _model_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("model", metavar="MODEL_SPEC", nargs=None if required else "?",
                   help="torchvision:NAME, path/to/file.py:ClassName (or :factory_function), "
                        "or package.module:Name")
    p.add_argument("--input-shape", dest="input_shape", metavar="N,C,H,W", type=_shape_arg,
                   action="append", default=[],
                   help="shape of the example input (give it once per forward input)")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="quant_config_file (JSON); default: the built-in configuration")
    p.add_argument("--bitwidth", type=int, default=None,
                   help="torch_quantizer's bitwidth argument (ignored with --config)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _inspect_args(p):
    _model_args(p, required=True)


def _explain_args(p):
    _model_args(p, required=False)


def _dir_arg(p):
    p.add_argument("dir", metavar="DIR", type=Path,
                   help="the quantize_result folder (or the file itself)")


COMMANDS: tuple[Command, ...] = (
    Command("inspect", "which nodes the DPU runs, which fall back to the CPU and why",
            "Capture MODEL_SPEC on a random input of --input-shape, run the same passes, "
            "placement and config resolution as a calibration (in a temporary folder), and "
            "list every node: type, output shape, device (DPU/CPU) and the reason.",
            _cmd_inspect, _inspect_args,
            epilog="example: nndct-lite inspect torchvision:resnet18 --input-shape 1,3,224,224"),
    Command("explain-config", "show the resolved quantization config (per node with a model)",
            "Load --config (or the default configuration) and print every switch and tensor "
            "setting with the config level it came from; with MODEL_SPEC, also every node.",
            _cmd_explain, _explain_args,
            epilog="example: nndct-lite explain-config --config cfg.json model.py:Net "
                   "--input-shape 1,3,32,32"),
    Command("show-quant-info", "print quant_info.json as a readable table",
            "Read DIR/quant_info.json (written by export_quant_config()) and print node, kind, "
            "bit width and fix position (or scale) of every entry, plus bias_corrected and "
            "fast_finetuned.", _cmd_show_quant_info, _dir_arg,
            epilog="example: nndct-lite show-quant-info quantize_result"),
    Command("report", "print the per-layer quantization report (report.md)",
            "Print DIR/report.md, the per-layer SQNR report written at calibration; with "
            "--chart, first draw its bar chart (report_chart.png) from DIR/report.json.",
            _cmd_report, _report_args,
            epilog="example: nndct-lite report quantize_result --chart"),
    Command("xmodel", "inspect (show) or simulate (run) an .xmodel file", "", None,
            register=_register_xmodel),
)


def _add_common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    d = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("output options")
    g.add_argument("-v", "--verbose", action="count", help="more log output (-vv: debug)",
                   **({"default": 0} if top else d))
    g.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr",
                   **({"default": False} if top else d))
    g.add_argument("--debug", action="store_true", help="print tracebacks of internal errors",
                   **({"default": False} if top else d))


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    parser = argparse.ArgumentParser(
        prog=PROG, description="nndct_lite: post-training quantization for PyTorch "
                               "(vai_q_pytorch compatible). See docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in COMMANDS:
        if cmd.register is not None:
            cmd.register(sub)
            continue
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                           epilog=cmd.epilog or None)
        if cmd.arguments is not None:
            cmd.arguments(p)
        _add_common(p)
        p.set_defaults(func=cmd.run)
    return parser


# =============================================================================== main
def _configure_logging(args: argparse.Namespace) -> int:
    if args.quiet:
        level = logging.ERROR
    elif args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return level


def _print_error(exc: NndctError) -> None:
    first, *rest = str(exc.message).strip().splitlines() or [""]
    print(f"error[{exc.code}]: {first}", file=sys.stderr)
    detail = [line for line in rest if line.strip()]
    if detail:
        print("  detail: " + "\n          ".join(detail), file=sys.stderr)
    if exc.where:
        print(f"  where: {exc.where}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {exc.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 1 internal error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:         # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    level = _configure_logging(args)
    pkg = logging.getLogger("nndct_lite")
    old_level = pkg.level
    pkg.setLevel(level)
    try:
        return int(args.func(args) or 0)
    except NndctError as exc:
        _print_error(exc)
        if args.debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        else:
            print("  hint: run again with --debug for the traceback, and report it",
                  file=sys.stderr)
        return 1
    finally:
        pkg.setLevel(old_level)
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
