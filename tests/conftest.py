import logging
import os
from pathlib import Path

import pytest

import nndct_lite


def pytest_addoption(parser):
    parser.addoption("--zoo", choices=("core", "all"), default=os.environ.get("NNDCT_LITE_ZOO", "core"),
                     help="zoo suite (tests/zoo): 'core' (default) takes the models of "
                          "zoo_models.CORE through every stage, 'all' every model of the table "
                          "(about 20 minutes more on two cores); env NNDCT_LITE_ZOO sets the default")


def pytest_report_header(config):
    return [f"nndct_lite from {Path(nndct_lite.__file__).parent}", f"zoo: {config.getoption('zoo')}"]


def pytest_collection_modifyitems(config, items):
    if config.getoption("zoo") == "all":
        return
    full = [it for it in items if it.get_closest_marker("zoo_full") is not None]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [it for it in items if it.get_closest_marker("zoo_full") is None]


if os.environ.get("NNDCT_LITE_EXPECT_INSTALLED"):
    # CI runs the suite against the installed wheel: the source tree must not shadow it, and
    # the wheel must carry what the source tree has (the fused kernels' C source)
    _pkg = Path(nndct_lite.__file__).resolve().parent
    _repo = Path(__file__).resolve().parents[1]
    if _repo in _pkg.parents:
        raise RuntimeError(f"NNDCT_LITE_EXPECT_INSTALLED is set but nndct_lite was imported "
                           f"from the source tree {_pkg}")
    if not (_pkg / "numerics" / "fused.c").is_file():
        raise RuntimeError(f"the installed package {_pkg} lacks numerics/fused.c")


@pytest.fixture(autouse=True)
def _restore_logging():
    """Scripts under test (benchmarks, the CLI) configure logging; undo it after each test."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith("nndct_lite")]
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate,
                 logging.getLogger(n).disabled) for n in names + ["nndct_lite"]}
    root_level = logging.root.level
    root_handlers = list(logging.root.handlers)
    import warnings
    filters = list(warnings.filters)
    yield
    warnings.filters[:] = filters
    warnings._filters_mutated()
    logging.root.handlers[:] = root_handlers
    for n, (level, prop, disabled) in saved.items():
        lg = logging.getLogger(n)
        lg.setLevel(level)
        lg.propagate = prop
        lg.disabled = disabled
    for n in logging.root.manager.loggerDict:
        if n.startswith("nndct_lite") and n not in saved:
            logging.getLogger(n).setLevel(logging.NOTSET)
    logging.root.setLevel(root_level)
