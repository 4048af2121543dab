"""The model name every output is named after (``<Model>.py``, node names, ``<Model>_int.xmodel``)."""
from __future__ import annotations

import keyword
import re

from .._log import get_logger

__all__ = ["model_name_of"]

log = get_logger("graph")


def model_name_of(cls_name: str) -> str:
    """``cls_name`` as a Python identifier that is also a safe file name: every character
    outside ``[A-Za-z0-9_]`` becomes ``_`` (so ``../../x`` cannot leave the output folder and
    ``My-Net`` generates valid code); a leading digit or a keyword gets a ``_`` prefix, a
    leading ``__`` (name-mangled in a class body) an ``M``. A changed name is logged at WARNING.

    >>> model_name_of("ResNet"), model_name_of("My-Net"), model_name_of("../../x")
    ('ResNet', 'My_Net', 'M______x')
    """
    name = re.sub(r"[^0-9A-Za-z_]", "_", cls_name) or "Model"
    if name.startswith("__"):          # Python would mangle it inside the generated class
        name = "M" + name
    elif name[0].isdigit() or keyword.iskeyword(name):
        name = "_" + name
    if name != cls_name:
        log.warning("the model class name %r is not a Python identifier; outputs are named %r "
                    "(%s.py, %s_int.xmodel, node names %s::...)", cls_name, name, name, name,
                    name)
    return name
