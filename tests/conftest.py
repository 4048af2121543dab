import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import logging

import pytest


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
