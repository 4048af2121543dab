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
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import NndctError
from .commands import _cmd_explain, _cmd_report, _cmd_show_quant_info, _cmd_xmodel
from .inspect_cmd import InspectRow, _cmd_inspect, format_inspect, inspect_rows
from .models import PROG, _shape_arg, load_model, parse_shape

__all__ = ["main", "build_parser", "COMMANDS", "Command", "load_model", "parse_shape",
           "inspect_rows", "InspectRow", "format_inspect"]

def _report_args(p):
    _dir_arg(p)
    p.add_argument("--chart", action="store_true",
                   help="also draw DIR/report_chart.png from DIR/report.json (needs matplotlib)")


# =============================================================================== xmodel
def _register_xmodel(subparsers) -> argparse.ArgumentParser:
    from ..sim.cli import add_xmodel_parser
    p = add_xmodel_parser(subparsers)
    _add_common(p)
    p.set_defaults(func=_cmd_xmodel)
    return p


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
    from .._version import __version__
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
