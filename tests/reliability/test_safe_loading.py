"""Loading never runs code: tensors are read with ``torch.load(weights_only=True)`` only, configs
are parsed as JSON data, and files in ``quantize_result/`` are never imported or unpickled as
Python objects.

Static checks read the package source (AST, so aliases and odd spacing do not hide a call);
dynamic checks feed real pickle bombs (whose payload only creates a marker file) to every loader.
"""
from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import nndct_lite
from nndct_lite import ConfigError, NndctError, QuantInfoError, torch_quantizer
from nndct_lite.state.files import safe_torch_load

PKG = Path(nndct_lite.__file__).resolve().parent
SOURCES = sorted(PKG.rglob("*.py"))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        y = F.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Bomb:
    """Unpickling runs ``exec``, which creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",))


def bomb_file(path: Path, marker: Path, wrap=lambda b: {"x": b}) -> Path:
    torch.save(wrap(Bomb(marker)), path)
    return path


# ---------------------------------------------------------------------------- static checks
def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expr>")  # x().eval() is no eval()
    return ".".join(reversed(parts))


def _calls(tree: ast.AST):
    """Every call with the dotted name of its callee, resolving ``import torch as t`` and
    ``from torch import load as l`` style aliases."""
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                    a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            head, _, rest = name.partition(".")
            if head in alias:
                name = alias[head] + ("." + rest if rest else "")
            yield name, node


LOADERS = {"torch.load", "torch.serialization.load"}
FORBIDDEN = {
    "eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec",
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "cPickle.load", "dill.load", "dill.loads", "marshal.load", "marshal.loads", "shelve.open",
    "yaml.load", "yaml.unsafe_load", "ast.literal_eval", "runpy.run_path", "runpy.run_module",
    "torch.jit.load", "importlib.import_module", "importlib.util.spec_from_file_location",
}
# (file, callee) pairs that load code on purpose, with the reason
ALLOWED = {
    ("cli/models.py", "importlib.import_module"):
        "the CLI imports the model the user names (MODEL_SPEC)",
    ("cli/models.py", "importlib.util.spec_from_file_location"):
        "the CLI imports the user's model file",
    ("quant/modules.py", "importlib.import_module"):
        "resolve_function: generated code names torch/operator functions by module path",
    ("quant/build.py", "compile"):
        "load_generated compiles the <Model>.py text this process generated, in memory",
    ("quant/build.py", "exec"):
        "load_generated runs that compiled text (never a file of the output folder)",
}


def test_sources_are_found():
    assert len(SOURCES) > 30 and PKG / "state" / "files.py" in SOURCES


def _torch_loads(tree: ast.AST) -> list[tuple[int, bool]]:
    """(line, safe) of every torch.load call: safe = a literal weights_only=True, no **kw."""
    out = []
    for name, call in _calls(tree):
        if name in LOADERS:
            kw = {k.arg: k.value for k in call.keywords}
            ok = isinstance(kw.get("weights_only"), ast.Constant) and \
                kw["weights_only"].value is True and None not in kw
            out.append((call.lineno, ok))
    return out


def test_the_checker_sees_unsafe_calls():
    src = ("import torch as t\nfrom torch import load as L\nimport torch\n"
           "t.load('a')\nL('b', weights_only=False)\ntorch.load('c', **kw)\n"
           "torch.serialization.load('d', weights_only=flag)\n"
           "torch.load('e', map_location='cpu', weights_only=True)\nm.eval()\n")
    assert _torch_loads(ast.parse(src)) == [(4, False), (5, False), (6, False), (7, False),
                                            (8, True)]


def test_every_torch_load_passes_weights_only_true():
    found, bad = [], []
    for path in SOURCES:
        for line, ok in _torch_loads(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(PKG.parent)}:{line}"
            found.append(where)
            if not ok:
                bad.append(where)
    assert found, "no torch.load call found: the static check no longer sees the loader"
    assert not bad, f"torch.load without a literal weights_only=True: {bad}"


def _code_text(path: Path) -> str:
    """The source without strings and comments (docstrings may quote ``torch.load(...)``)."""
    import tokenize
    with path.open("rb") as f:
        toks = [t.string for t in tokenize.tokenize(f.readline)
                if t.type not in (tokenize.STRING, tokenize.COMMENT, tokenize.ENCODING)]
    return " ".join(toks)


def test_torch_load_text_matches_the_ast():
    """A textual grep agrees with the AST walk (no call hidden behind getattr or strings)."""
    import re
    text_hits = sum(len(re.findall(r"\btorch\s*\.\s*load\s*\(", _code_text(p)))
                    for p in SOURCES)
    ast_hits = sum(1 for p in SOURCES for n, _ in _calls(ast.parse(p.read_text(encoding="utf-8")))
                   if n in LOADERS)
    assert text_hits == ast_hits
    assert "getattr(torch, \"load\")" not in "".join(p.read_text(encoding="utf-8")
                                                    for p in SOURCES)


def test_no_code_executing_loader_in_the_package():
    bad = []
    for path in SOURCES:
        rel = path.relative_to(PKG).as_posix()
        for name, call in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            kw = {k.arg: k.value for k in call.keywords}
            pickled = name in ("numpy.load", "np.load") and not (
                isinstance(kw.get("allow_pickle", ast.Constant(False)), ast.Constant)
                and kw.get("allow_pickle", ast.Constant(False)).value is False)
            if (name in FORBIDDEN and (rel, name) not in ALLOWED) or pickled:
                bad.append(f"nndct_lite/{rel}:{call.lineno} {name}()")
    assert not bad, "code-executing loaders in nndct_lite: " + ", ".join(bad)


def test_the_allowed_dynamic_imports_still_exist():
    """Keep ALLOWED honest: every entry is still used (delete it when the code goes)."""
    used = {(p.relative_to(PKG).as_posix(), n) for p in SOURCES
            for n, _ in _calls(ast.parse(p.read_text(encoding="utf-8")))}
    assert set(ALLOWED) <= used, set(ALLOWED) - used


def test_the_generated_model_is_compiled_from_memory_not_imported():
    """The class comes from the generated text, never from quantize_result/ (a planted .pyc or
    an edited <Model>.py would run): no import machinery touches the written file."""
    src = (PKG / "quant" / "build.py").read_text(encoding="utf-8")
    body = src[src.index("def load_generated"):src.index("def write_and_import")]
    assert "compile(source" in body and "spec_from_file_location" not in src
    assert "spec_from_file_location" not in (PKG / "distributed" / "session.py").read_text()


def test_config_loader_parses_json_only():
    src = "".join(p.read_text(encoding="utf-8") for p in (PKG / "config").rglob("*.py"))
    tree = ast.parse(src)
    names = {n for n, _ in _calls(tree)}
    assert "json.loads" in names
    assert not names & FORBIDDEN


# ---------------------------------------------------------------------------- pickle bombs
@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(4, 3, 8, 8)
    d = tmp_path_factory.mktemp("safe") / "quantize_result"
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(d))
    q.quant_model(x)
    q.export_quant_config()
    return model, x, d


def _copy(calibrated, tmp_path) -> Path:
    import shutil
    d = tmp_path / "quantize_result"
    shutil.copytree(calibrated[2], d)
    return d


def test_the_bomb_is_live(tmp_path):
    """Sanity: without weights_only the payload does run (so the tests below mean something)."""
    marker = tmp_path / "EXECUTED"
    p = bomb_file(tmp_path / "b.pth", marker)
    torch.load(p, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("wrap", [lambda b: b, lambda b: {"x": b}, lambda b: [torch.ones(1), b]],
                         ids=["bare", "in_dict", "in_list"])
def test_safe_torch_load_rejects_bombs(tmp_path, wrap):
    marker = tmp_path / "EXECUTED"
    p = bomb_file(tmp_path / "b.pth", marker, wrap)
    with pytest.raises(QuantInfoError) as err:
        safe_torch_load(p, "test file")
    assert str(p) in str(err.value) and err.value.hint
    assert not marker.exists()


def test_safe_torch_load_still_reads_plain_tensors(tmp_path):
    p = tmp_path / "ok.pth"
    torch.save({"a": torch.arange(3), "b": [1.5, None]}, p)
    got = safe_torch_load(p, "test file")
    assert torch.equal(got["a"], torch.arange(3)) and got["b"] == [1.5, None]


def test_bias_corr_bomb_is_rejected_and_not_run(calibrated, tmp_path):
    model, x, _ = calibrated
    d = _copy(calibrated, tmp_path)
    marker = tmp_path / "EXECUTED"
    bomb_file(d / "bias_corr.pth", marker)
    with pytest.raises(QuantInfoError) as err:
        torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    assert "bias_corr.pth" in str(err.value) and err.value.hint
    assert not marker.exists()


def test_param_bomb_is_rejected_and_not_run(calibrated, tmp_path):
    model, x, _ = calibrated
    d = _copy(calibrated, tmp_path)
    info = json.loads((d / "quant_info.json").read_text())
    info["fast_finetuned"] = True
    (d / "quant_info.json").write_text(json.dumps(info))
    marker = tmp_path / "EXECUTED"
    bomb_file(d / "param.pth", marker)
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    with pytest.raises(QuantInfoError) as err:
        qt.load_ft_param()
    assert "param.pth" in str(err.value) and err.value.hint
    assert not marker.exists()


def test_state_dict_file_bomb_is_rejected_and_not_run(calibrated, tmp_path):
    model, x, _ = calibrated
    marker = tmp_path / "EXECUTED"
    p = bomb_file(tmp_path / "weights.pth", marker)
    with pytest.raises(NndctError) as err:
        torch_quantizer("calib", Net(), (x[:1],), state_dict_file=str(p),
                        output_dir=str(tmp_path / "out"))
    assert "weights.pth" in str(err.value) and err.value.hint
    assert not marker.exists()


def test_every_torch_load_at_runtime_is_weights_only(calibrated, tmp_path, monkeypatch):
    """Dynamic complement of the AST check: every load of a full calib -> test flow."""
    model, x, _ = calibrated
    d = _copy(calibrated, tmp_path)
    info = json.loads((d / "quant_info.json").read_text())
    info["fast_finetuned"] = True
    (d / "quant_info.json").write_text(json.dumps(info))
    torch.save({}, d / "param.pth")
    sd = tmp_path / "sd.pth"
    torch.save(model.state_dict(), sd)
    seen = []
    real = torch.load

    def spy(*a, **kw):
        seen.append(kw.get("weights_only"))
        return real(*a, **kw)
    monkeypatch.setattr(torch, "load", spy)
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d), state_dict_file=str(sd))
    qt.load_ft_param()
    assert len(seen) >= 3 and all(v is True for v in seen), seen


# ---------------------------------------------------------------------------- configs are data
EXPRESSIONS = [
    ("/overall_quantize_config/bit_width", lambda e: {"overall_quantize_config": {"bit_width": e}}),
    ("/overall_quantize_config/method", lambda e: {"overall_quantize_config": {"method": e}}),
    ("/target_device", lambda e: {"target_device": e}),
    ("/layer_quantize_config/0/layer_type",
     lambda e: {"layer_quantize_config": [{"layer_type": e, "overall_quantize_config":
                                           {"bit_width": 8}}]}),
    ("/layer_quantize_config/0/layer_name",
     lambda e: {"layer_quantize_config": [{"layer_name": e, "overall_quantize_config":
                                           {"bit_width": 8}}]}),
]


@pytest.mark.parametrize("pointer,doc", EXPRESSIONS, ids=[p for p, _ in EXPRESSIONS])
def test_config_values_are_never_evaluated(calibrated, tmp_path, pointer, doc, caplog):
    """The value is a string like any other: an error, or (a layer_type that matches no layer)
    a warning naming its JSON pointer; never run."""
    model, x, _ = calibrated
    marker = tmp_path / "EVALUATED"
    expr = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(doc(expr)))
    caplog.set_level("WARNING", logger="nndct_lite")
    try:
        torch_quantizer("calib", model, (x[:1],), quant_config_file=str(cfg),
                        output_dir=str(tmp_path / "out"))
    except ConfigError as err:
        assert str(cfg) in str(err) and err.hint
    else:
        assert any(pointer in r.getMessage() and str(cfg) in r.getMessage()
                   for r in caplog.records), "an expression was accepted without a word"
    assert not marker.exists()


def test_a_python_config_file_is_not_run(calibrated, tmp_path):
    model, x, _ = calibrated
    marker = tmp_path / "EXECUTED"
    cfg = tmp_path / "quant_config.py"
    cfg.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nconfig = {{}}\n")
    with pytest.raises(ConfigError) as err:
        torch_quantizer("calib", model, (x[:1],), quant_config_file=str(cfg),
                        output_dir=str(tmp_path / "out"))
    assert "not valid JSON" in str(err.value) and f"{cfg}:1:1" in str(err.value)
    assert not marker.exists()


def test_a_tampered_generated_model_is_not_run(calibrated, tmp_path):
    """quantize_result/<Model>.py is output, not input: test mode rewrites it before importing."""
    model, x, _ = calibrated
    d = _copy(calibrated, tmp_path)
    marker = tmp_path / "EXECUTED"
    (d / "Net.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    qt.quant_model(x)
    assert not marker.exists()
    assert "pathlib.Path(" not in (d / "Net.py").read_text()


def test_quant_info_is_parsed_as_data(calibrated, tmp_path):
    """Python literals or expressions in quant_info.json are a QuantInfoError, never run."""
    model, x, _ = calibrated
    d = _copy(calibrated, tmp_path)
    marker = tmp_path / "EXECUTED"
    text = (d / "quant_info.json").read_text()
    (d / "quant_info.json").write_text(
        text.replace('"fast_finetuned": false',
                     f'"fast_finetuned": __import__("pathlib").Path({str(marker)!r}).touch()'))
    with pytest.raises(QuantInfoError) as err:
        torch_quantizer("test", model, (x[:1],), output_dir=str(d))
    assert "quant_info.json" in str(err.value) and err.value.hint
    assert not marker.exists()


def test_the_bomb_bytes_are_a_real_torch_file(tmp_path):
    """The bombs are ordinary torch zip files, so rejection comes from weights_only, not from
    a failed parse."""
    buf = io.BytesIO()
    torch.save({"x": Bomb(tmp_path / "never")}, buf)
    assert buf.getvalue()[:2] == b"PK"
