"""``nndct-lite xmodel show FILE`` and ``nndct-lite xmodel run FILE --input X.npy``.

Wire into an argparse-based CLI with :func:`add_xmodel_parser` (it sets ``func`` to
:func:`main_xmodel` on the parser); ``python -m nndct_lite.sim.cli xmodel ...`` works standalone.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

from nndct_lite.errors import NndctError
from .values import Fixed

__all__ = ["add_xmodel_parser", "main_xmodel", "format_graph", "main"]

_KEY_ATTRS = {
    "fix": ("fix_point", "bit_width", "round_mode", "if_signed"),
    "conv2d": ("kernel", "stride", "pad", "pad_mode", "dilation", "group"),
    "depthwise-conv2d": ("kernel", "stride", "pad", "pad_mode", "dilation"),
    "transposed-conv2d": ("kernel", "stride", "pad", "pad_mode", "dilation"),
    "avgpool2d": ("kernel", "stride", "pad", "global", "count_include_pad"),
    "maxpool2d": ("kernel", "stride", "pad", "global"),
}


def add_xmodel_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xmodel`` (with ``show`` and ``run``) on an argparse subparsers object."""
    p = subparsers.add_parser("xmodel", help="inspect or simulate an .xmodel file",
                              description="Inspect (show) or run the integer simulator on (run) "
                                          "an XIR .xmodel file.")
    sub = p.add_subparsers(dest="xmodel_cmd", metavar="{show,run}")
    sub.required = True
    s = sub.add_parser("show", help="print a readable summary of an .xmodel")
    s.add_argument("file", type=Path, help=".xmodel file")
    s.add_argument("--brief", action="store_true", help="summary only, no per-op listing")
    r = sub.add_parser("run", help="run the integer simulator on inputs from a .npy/.npz file")
    r.add_argument("file", type=Path, help=".xmodel file")
    r.add_argument("--input", "-i", type=Path, required=True,
                   help=".npy (single input) or .npz (one array per data-op name) of float inputs")
    r.add_argument("--output", "-o", type=Path, default=None,
                   help="write the float outputs: .npy for one output, else .npz by op name")
    r.add_argument("--layout", choices=["auto", "NCHW", "NHWC"], default="auto",
                   help="layout of 4-D inputs (default: decide from the stored NHWC shape)")
    r.add_argument("--batch-size", type=int, default=100, help="images per simulator batch")
    r.add_argument("--codes", action="store_true",
                   help="save integer codes instead of float values (with --output)")
    p.set_defaults(func=main_xmodel)
    return p


def _attr_text(op, names=None, limit=6) -> str:
    keys = names if names is not None else [k for k in op.attrs if k != "data"]
    parts = []
    for k in keys:
        if k in op.attrs:
            parts.append(f"{k}={op.attrs[k].short_str(limit)}")
    if "data" in op.attrs and names is None:
        parts.append(f"data=<{len(op.attrs['data'].value)} bytes>")
    return ", ".join(parts)


def format_graph(graph, brief: bool = False, path: str | None = None) -> str:
    """The text of ``xmodel show``."""
    lines = []
    if path:
        lines.append(f"file:      {path}")
    lines.append(f"graph:     {graph.name}")
    lines.append(f"ops:       {len(graph)}")
    hist = collections.Counter(op.type for op in graph)
    lines.append("op types:  " + ", ".join(f"{t} x{n}" for t, n in sorted(hist.items())))
    ins = graph.input_ops()
    outs = graph.output_ops()
    lines.append("inputs:    " + (", ".join(f"{o.name} {list(o.shape)} {o.output.dtype_name}"
                                            for o in ins) or "-"))
    lines.append("outputs:   " + (", ".join(f"{o.name} {list(o.shape)}" for o in outs) or "-"))
    if graph.attrs:
        lines.append("graph attrs: " + ", ".join(f"{k}={a.short_str()}" for k, a in graph.attrs.items()))
    lines.append(f"op_defs:   {len(graph.op_defs)}")
    if not brief:
        lines.append("")
        w = len(str(len(graph)))
        for i, op in enumerate(graph.ops):
            t = op.output
            out = f"{list(t.shape)} {t.dtype_name}" if t is not None else "-"
            lines.append(f"[{i:>{w}}] {op.type:<16} {op.name}  -> {out}")
            if op.inputs:
                lines.append(" " * (w + 3) + "inputs: " + "; ".join(
                    f"{a}={names}" if len(names) != 1 else f"{a}={names[0]}"
                    for a, names in op.inputs.items()))
            at = _attr_text(op, _KEY_ATTRS.get(op.type))
            if at:
                lines.append(" " * (w + 3) + "attrs:  " + at)
            if t is not None and t.attrs:
                lines.append(" " * (w + 3) + "tensor: " + ", ".join(
                    f"{k}={a.short_str()}" for k, a in t.attrs.items()))
    lines.append("")
    lines.append("subgraphs:")
    if graph.root is None:
        lines.append(f"  root (implicit leaf, {len(graph)} ops)")
    else:
        for depth, sg in graph.root.walk():
            kind = ("root, " if depth == 0 else "") + ("leaf" if sg.is_leaf else "branch")
            n = len(sg.all_ops()) if depth else len(graph)
            attrs = ", ".join(f"{k}={a.short_str()}" for k, a in sg.attrs.items())
            lines.append("  " * (depth + 1) + f"{sg.name} ({kind}, {n} ops)"
                         + (f" [{attrs}]" if attrs else ""))
    return "\n".join(lines)


def _load_inputs(path: Path, names):
    if path.suffix == ".npz":
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
        if len(names) == 1 and len(data) == 1 and names[0] not in data:
            return next(iter(data.values()))
        return data
    return np.load(path)


def main_xmodel(args) -> int:
    """Run ``xmodel show`` / ``xmodel run`` from parsed ``args``; returns the exit status."""
    from nndct_lite.xmodel import read_xmodel
    cmd = getattr(args, "xmodel_cmd", None)
    try:
        graph = read_xmodel(args.file)
        if cmd == "show":
            print(format_graph(graph, brief=args.brief, path=str(args.file)))
            return 0
        if cmd == "run":
            from . import Simulator
            sim = Simulator(graph)
            x = _load_inputs(args.input, sim.inputs)
            t0 = time.perf_counter()
            vals = sim.run_values(x, layout=args.layout, batch_size=args.batch_size)
            dt = time.perf_counter() - t0
            arrays: dict[str, np.ndarray] = {}
            for name, v in vals.items():
                if args.codes and isinstance(v, Fixed):
                    arrays[name] = v.codes
                else:
                    arrays[name] = v.values()
            for name, v in vals.items():
                fix = sim.output_fix(name)
                desc = f"fix_point {fix[1]}, bit_width {fix[0]}" if fix else \
                    ("float" if not isinstance(v, Fixed) else f"fp {v.fp}")
                a = arrays[name]
                print(f"{name}: shape {list(a.shape)} ({desc})")
                if a.ndim >= 1 and a.shape[0]:
                    first = np.asarray(a[0]).reshape(-1)
                    more = " ..." if first.size > 10 else ""
                    print("  first: " + " ".join(f"{float(e):g}" for e in first[:10]) + more)
            if sim.float_ops:
                print(f"note: {len(sim.float_ops)} op(s) ran in float (not fixed-point): "
                      + ", ".join(sim.float_ops[:5]) + (" ..." if len(sim.float_ops) > 5 else ""))
            n = next(iter(arrays.values())).shape[0] if arrays else 0
            print(f"simulated {n} sample(s) in {dt:.2f} s")
            if args.output is not None:
                out = Path(args.output)
                out.parent.mkdir(parents=True, exist_ok=True)
                if len(arrays) == 1 and out.suffix != ".npz":
                    np.save(out, next(iter(arrays.values())))
                else:
                    # numpy's stubs read **arrays as its keyword allow_pickle: bool
                    np.savez(out, **arrays)  # type: ignore[arg-type]
                print(f"wrote {out}")
            return 0
        print("usage: xmodel {show,run} FILE ...", file=sys.stderr)
        return 2
    except NndctError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nndct-lite")
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    add_xmodel_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
