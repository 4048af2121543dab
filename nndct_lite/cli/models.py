"""Model specs of the command line (``file.py:Name``, ``module:Name``, ``torchvision:name``),
example inputs, and a throwaway calib session to inspect."""
from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import importlib.util
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from ..errors import InputError

if TYPE_CHECKING:   # the command line imports torch and the pipeline lazily
    import torch
    import torch.nn as nn

    from ..session import QuantSession

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
    from ..api import torch_quantizer
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
