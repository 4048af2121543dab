"""The examples in the docstrings of numerics/ and calib/ run and print what they show."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import nndct_lite.calib
import nndct_lite.numerics

MODULES = sorted(
    f"{pkg.__name__}.{info.name}"
    for pkg in (nndct_lite.numerics, nndct_lite.calib)
    for info in pkgutil.iter_modules(pkg.__path__))


@pytest.mark.parametrize("name", MODULES + ["nndct_lite.numerics", "nndct_lite.calib"])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_exist():
    attempted = sum(doctest.testmod(importlib.import_module(n)).attempted for n in MODULES)
    assert attempted >= 10
