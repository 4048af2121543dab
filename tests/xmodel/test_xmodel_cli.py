"""``xmodel show`` / ``xmodel run`` subcommands."""
import argparse
from pathlib import Path

import numpy as np

from nndct_lite.xmodel import write_xmodel
from nndct_lite.sim import Simulator
from nndct_lite.sim.cli import add_xmodel_parser, main, main_xmodel

from _xmodel_testlib import sample_graph


def test_parser_registration():
    parser = argparse.ArgumentParser(prog="nndct-lite")
    sub = parser.add_subparsers(dest="command")
    add_xmodel_parser(sub)
    args = parser.parse_args(["xmodel", "show", "m.xmodel", "--brief"])
    assert args.func is main_xmodel and args.xmodel_cmd == "show" and args.brief
    args = parser.parse_args(["xmodel", "run", "m.xmodel", "--input", "x.npy", "-o", "y.npy"])
    assert args.xmodel_cmd == "run" and args.output == Path("y.npy")


def test_show(tmp_path, capsys):
    p = write_xmodel(sample_graph(), tmp_path / "s.xmodel")
    assert main(["xmodel", "show", str(p)]) == 0
    out = capsys.readouterr().out
    assert "graph:     sample" in out and "ops:       45" in out
    assert "fix_point=5" in out and "conv2d" in out and "inputs: input=x_fix" in out
    assert "subgraphs:" in out and "root" in out
    assert main(["xmodel", "show", "--brief", str(p)]) == 0
    brief = capsys.readouterr().out
    assert "ops:       45" in brief and "fix_point" not in brief and len(brief) < len(out)


def test_run_writes_simulator_output(tmp_path, capsys):
    g = sample_graph()
    p = write_xmodel(g, tmp_path / "s.xmodel")
    x = np.random.default_rng(1).normal(size=(4, 4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc = main(["xmodel", "run", str(p), "--input", str(tmp_path / "x.npy"),
               "--output", str(tmp_path / "y.npy")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "fc_fix: shape [4, 3] (fix_point 4, bit_width 8)" in out
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(y, Simulator(g)(x))
    rc = main(["xmodel", "run", str(p), "-i", str(tmp_path / "x.npy"), "-o",
               str(tmp_path / "codes.npz"), "--codes"])
    assert rc == 0
    assert np.array_equal(np.load(tmp_path / "codes.npz")["fc_fix"], y * 16)


def test_errors_return_nonzero(tmp_path, capsys):
    assert main(["xmodel", "show", str(tmp_path / "missing.xmodel")]) == 1
    p = write_xmodel(sample_graph(), tmp_path / "s.xmodel")
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 3, 3)))
    assert main(["xmodel", "run", str(p), "--input", str(tmp_path / "bad.npy")]) == 1
    assert "error:" in capsys.readouterr().err
