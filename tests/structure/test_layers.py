"""The package is a one-way pipeline: every import goes to a lower layer (or stays inside its
own package), and no two modules import each other at import time.

The layer order is written once, here, and shown in docs/architecture.md (a test below keeps the
two equal). Every import counts: module level, inside functions, and under TYPE_CHECKING.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nndct_lite

PKG = Path(nndct_lite.__file__).resolve().parent     # the package under test (maybe installed)
ROOT = PKG.parent
DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"

#: lowest first; a package may import from its own layer's packages only if they are itself
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_log", "_version", "_text"),
    ("numerics",),
    ("graph",),
    ("state",),
    ("config",),
    ("xmodel",),
    ("calib", "codegen"),
    ("result", "tensor_quant"),
    ("quant",),
    ("nn",),
    ("algorithms", "report", "sim"),
    ("distributed",),
    ("export",),
    ("session",),
    ("api",),
    ("cli", "qat"),
    ("apis", "__main__", "__init__"),
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(mod: str, path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not top_level_only:
                    visit(child, False)
                continue
            if isinstance(child, ast.If) and top_level_only and \
                    "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("nndct_lite"):
                    if child.module:
                        found.add(target)
                    found.update(f"{target}.{a.name}" for a in child.names)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("nndct_lite"))
            visit(child, top)

    visit(tree, True)
    return found


def _package(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    packages = {_package(m) for m in _modules()}
    assert packages - set(RANK) == set(), "add the new package to LAYERS (and architecture.md)"


def test_no_backward_imports():
    bad = []
    for mod, path in _modules().items():
        src = _package(mod)
        for target in _imports(mod, path, top_level_only=False):
            dst = _package(target)
            if dst != src and RANK.get(dst, -1) >= RANK[src]:
                bad.append(f"{mod} -> {target} ({src} is layer {RANK[src]}, {dst} layer "
                           f"{RANK.get(dst)})")
    assert bad == [], "imports that go up or sideways:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {t for t in _imports(m, p, top_level_only=True) if t in mods and t != m}
             for m, p in mods.items()}
    # a package's __init__ imported by its own submodules is part of loading it, not a cycle
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                dfs(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_the_check_can_fail(tmp_path):
    """The walker sees relative, absolute, function-level and TYPE_CHECKING imports."""
    src = tmp_path / "x.py"
    src.write_text("from typing import TYPE_CHECKING\nfrom ..api import a\n"
                   "if TYPE_CHECKING:\n    from nndct_lite.session import b\n"
                   "def f():\n    from ..cli import c\n")
    every = _imports("nndct_lite.numerics.x", src, top_level_only=False)
    assert {"nndct_lite.api", "nndct_lite.session", "nndct_lite.cli"} <= every
    assert _imports("nndct_lite.numerics.x", src, top_level_only=True) == \
        {"nndct_lite.api", "nndct_lite.api.a"}


def test_architecture_doc_lists_the_layers():
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md needs the layer block"
    rows = [tuple(r.split(":", 1)[1].split()) for r in block.group(1).strip().splitlines()]
    assert rows == [tuple(p for p in layer) for layer in LAYERS]


def test_importing_the_package_does_not_import_optional_libraries():
    """timm, matplotlib, onnxruntime and scikit-learn are optional: the package never imports
    them when imported (a timm import alone took half of a 12 s start-up under load)."""
    import subprocess
    import sys
    code = ("import sys, nndct_lite, nndct_lite.session, nndct_lite.cli, nndct_lite.apis\n"
            "print(sorted(m for m in ('timm', 'matplotlib', 'onnxruntime', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == "[]"
