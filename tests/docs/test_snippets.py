"""Docs that cannot drift: every code block of README.md and docs/*.md runs here.

Which blocks are collected (one test case each, id ``file:line`` of the opening fence):

* fences tagged ``python``/``py`` (run as a script; a block whose first line is ``>>>`` is pycon),
  ``pycon`` (checked with doctest), ``bash``/``sh``/``shell``/``console`` (shell commands);
* untagged or ``text`` fences that are clearly code: the first line is a ``$ `` command, a ``>>>``
  prompt, or a Python ``import``/``from ... import`` line.

Other fences (``json``, ``text`` data or output, untagged math and diagrams) are not code and are
not collected. A collected block must run; one that cannot run in CI is marked in the Markdown,
on the line(s) right before its fence, with an HTML comment (invisible on the rendered page):

``<!-- snippet: skip — REASON -->``
    reported as skipped with REASON (needs ../shared, a GPU, several torchrun processes, ...).
``<!-- snippet: file NAME -->``
    the block is the file NAME: it is written into the working folder of every block of its page
    (a Python file block also runs as a test of its own).
``<!-- snippet: setup`` + lines of Python + ``-->``
    hidden setup of the next block only: prepended to a Python block, put in a doctest's globals,
    or run as a script in the working folder before a shell block's commands.
``<!-- snippet: exit N -->``
    every command of the next shell block must exit with N (default 0).
``<!-- snippet: slow — REASON -->``
    the block runs, marked ``@pytest.mark.slow`` (it is long but worth running: CI runs it).

The state rule: blocks never share state. Each block runs in its own fresh temporary folder (the
repository's top-level files and folders linked in, except the package, the tests and build
outputs; the page's file blocks written), in a fresh interpreter (``sys.executable``): a Python
block runs as a script, a pycon block through doctest (the shown output must match, ELLIPSIS
on), a shell block one command at a time with ``bash -c`` (``python`` and ``nndct-lite`` are the
ones of this interpreter). In a console block (lines starting with ``$ ``), the lines after a
command up to the next command are its shown output: stdout and stderr together must match them,
``...`` matching any text. A bash/sh block without ``$ `` lines runs each command line (with ``\\``
continuations) and checks the exit status only.
"""
from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# blocks of pages other engineers own that are known to fail, {file:line: reason}: xfail(strict=False)
# until their owners apply the fix (the fixed block moves down by its setup comment and then runs
# as an ordinary test case)
KNOWN_FAILING: dict[str, str] = {
}
# top-level entries of the repository that a block's working folder does not link to
NOT_LINKED = {"nndct_lite", "tests", "build", "quantize_result", "bench", "dist"}
TIMEOUT = 300

PY_TAGS = {"python", "py", "python3"}
SHELL_TAGS = {"bash", "sh", "shell", "console", "shell-session"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<tag>[\w+-]*)")
MARKER = re.compile(r"<!--\s*snippet:\s*(?P<kind>skip|file|setup|exit|slow)\b(?P<rest>.*?)-->", re.S)
PY_START = re.compile(r"^(import \w|from [\w.]+ import )")


@dataclass
class Block:
    page: Path
    line: int                       # 1-based line of the opening fence
    tag: str
    text: str
    kind: str = ""                  # python | pycon | shell | console | "" (not code)
    skip: str | None = None
    slow: str | None = None
    file: str | None = None
    setup: str = ""
    exit: int = 0
    markers: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}"


def _markers_before(lines: list[str], i: int) -> list[tuple[str, str]]:
    """The snippet markers in the HTML comments directly above line i (blank lines allowed)."""
    j = i - 1
    found = []
    while j >= 0:
        if not lines[j].strip():
            j -= 1
            continue
        if not lines[j].rstrip().endswith("-->"):
            break
        k = j
        while k >= 0 and "<!--" not in lines[k]:
            k -= 1
        if k < 0:
            break
        comment = "\n".join(lines[k:j + 1])
        m = MARKER.search(comment)
        if m:
            found.append((m.group("kind"), m.group("rest")))
        j = k - 1
    return found[::-1]


def _classify(tag: str, text: str) -> str:
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if tag in PY_TAGS:
        return "pycon" if first.startswith(">>>") else "python"
    if tag == "pycon":
        return "pycon"
    if tag in SHELL_TAGS:
        return "console" if any(ln.startswith("$ ") for ln in text.splitlines()) else "shell"
    if tag in ("", "text"):
        if first.startswith("$ "):
            return "console"
        if first.startswith(">>>"):
            return "pycon"
        if PY_START.match(first):
            return "python"
    return ""


def parse_page(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        j = i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$",
                                              lines[j]):
            j += 1
        body = textwrap.dedent("\n".join(ln[indent:] if ln[:indent].isspace() else ln
                                         for ln in lines[i + 1:j]))
        b = Block(page, i + 1, m.group("tag").lower(), body + "\n")
        b.kind = _classify(b.tag, body)
        for kind, rest in _markers_before(lines, i):
            b.markers.append(kind)
            if kind == "skip":
                b.skip = rest.strip().lstrip("—–-:").strip() or "marked skip"
            elif kind == "slow":
                b.slow = rest.strip().lstrip("—–-:").strip() or "slow"
            elif kind == "file":
                b.file = rest.strip()
            elif kind == "setup":
                b.setup += textwrap.dedent(rest.strip("\n")) + "\n"
            elif kind == "exit":
                b.exit = int(rest.strip())
        blocks.append(b)
        i = j + 1
    return blocks


ALL = [b for page in PAGES for b in parse_page(page)]
CODE = [b for b in ALL if b.kind]
FILES = {page: [b for b in ALL if b.page == page and b.file] for page in PAGES}


def _params():
    out = []
    for b in CODE:
        marks = []
        if b.skip:
            marks.append(pytest.mark.skip(reason=b.skip))
        elif b.id in KNOWN_FAILING:
            marks.append(pytest.mark.xfail(reason=KNOWN_FAILING[b.id], strict=False))
        if b.slow:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(b, id=b.id, marks=marks))
    return out


# ------------------------------------------------------------------------------ environment
@pytest.fixture(scope="module")
def bindir(tmp_path_factory) -> Path:
    """`python` and `nndct-lite` of this interpreter, first on PATH."""
    d = tmp_path_factory.mktemp("bin")
    for name in ("python", "python3"):
        (d / name).symlink_to(sys.executable)
    cli = d / "nndct-lite"
    cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nndct_lite "$@"\n')
    cli.chmod(0o755)
    return d


def _env(bindir: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), str(Path(sys.executable).parent), env["PATH"]])
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("NNDCT_LITE_REPORT_CHART", None)
    return env


def _workdir(block: Block, tmp_path: Path) -> Path:
    wd = tmp_path / "work"
    wd.mkdir()
    for entry in REPO.iterdir():
        if entry.name.startswith(".") or entry.name in NOT_LINKED or entry.name.endswith(".egg-info"):
            continue
        (wd / entry.name).symlink_to(entry)
    for fb in FILES[block.page]:
        (wd / fb.file).write_text(fb.text, encoding="utf-8")
    return wd


def _run(cmd, wd: Path, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT, **kw)


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


# ------------------------------------------------------------------------------ runners
def _python(block: Block, wd: Path, env: dict):
    script = wd / f"_snippet_{block.line}.py"
    script.write_text(block.setup + block.text, encoding="utf-8")
    p = _run([sys.executable, script.name], wd, env)
    if p.returncode != 0:
        pytest.fail(f"{block.id} exited with {p.returncode}:\n{_tail(p.stdout)}", pytrace=False)


DOCTEST_DRIVER = r"""
import doctest, sys
setup, text, name = (open(p, encoding="utf-8").read() for p in sys.argv[1:4])
globs = {"__name__": "__main__"}
exec(compile(setup, "<snippet setup>", "exec"), globs)
test = doctest.DocTestParser().get_doctest(text, globs, name, name, 0)
runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
runner.run(test)
sys.exit(1 if runner.failures else 0)
"""


def _pycon(block: Block, wd: Path, env: dict):
    (wd / "_setup.py").write_text(block.setup, encoding="utf-8")
    (wd / "_block.txt").write_text(block.text, encoding="utf-8")
    (wd / "_name.txt").write_text(block.id, encoding="utf-8")
    (wd / "_driver.py").write_text(DOCTEST_DRIVER, encoding="utf-8")
    p = _run([sys.executable, "_driver.py", "_setup.py", "_block.txt", "_name.txt"], wd, env)
    if p.returncode != 0:
        pytest.fail(f"{block.id}: doctest failed:\n{_tail(p.stdout)}", pytrace=False)


def _commands(block: Block) -> list[tuple[str, str]]:
    """(command, shown output) pairs; continuation lines ending in a backslash are joined."""
    lines = block.text.splitlines()
    out: list[tuple[str, list[str]]] = []
    console = block.kind == "console"
    i = 0
    while i < len(lines):
        ln = lines[i]
        if console and not ln.startswith("$ "):
            if out:
                out[-1][1].append(ln)
            i += 1
            continue
        cmd = ln[2:] if console else ln
        while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        if not console and (not cmd.strip() or cmd.lstrip().startswith("#")):
            continue
        out.append((cmd, []))
    return [(c, "\n".join(o)) for c, o in out]


_CHECKER = doctest.OutputChecker()


def _normalize(text: str) -> str:
    return "\n".join(ln.rstrip() for ln in text.strip("\n").splitlines()) + "\n"


def _shell(block: Block, wd: Path, env: dict):
    if block.setup:
        (wd / "_setup.py").write_text(block.setup, encoding="utf-8")
        p = _run([sys.executable, "_setup.py"], wd, env)
        if p.returncode != 0:
            pytest.fail(f"{block.id}: the hidden setup failed:\n{_tail(p.stdout)}", pytrace=False)
    commands = _commands(block)
    assert commands, f"{block.id}: no command in the block"
    for cmd, want in commands:
        p = _run(["bash", "-c", cmd], wd, env)
        got = p.stdout
        if p.returncode != block.exit:
            pytest.fail(f"{block.id}: `{cmd}` exited with {p.returncode}, the page says "
                        f"{block.exit}:\n{_tail(got)}", pytrace=False)
        if want.strip():
            want_n, got_n = _normalize(want), _normalize(got)
            if want_n.startswith("..."):     # a leading ellipsis may also stand for blank lines
                got_n = "\n" + got_n
            if not _CHECKER.check_output(want_n, got_n, doctest.ELLIPSIS):
                diff = _CHECKER.output_difference(doctest.Example(cmd, want_n), got_n,
                                                  doctest.ELLIPSIS)
                pytest.fail(f"{block.id}: the output of `{cmd}` differs from the page:\n{diff}",
                            pytrace=False)


RUNNERS = {"python": _python, "pycon": _pycon, "shell": _shell, "console": _shell}


@pytest.mark.parametrize("block", _params())
def test_snippet(block: Block, tmp_path, bindir):
    wd = _workdir(block, tmp_path)
    RUNNERS[block.kind](block, wd, _env(bindir))


# ------------------------------------------------------------------------------ the collector
def test_collector_finds_the_pages_and_their_blocks():
    """The runner covers README.md and docs/*.md, including the pages other engineers own."""
    covered = {b.page.name for b in CODE}
    assert {"README.md", "getting_started.md", "config.md", "cli.md", "xmodel.md",
            "exports.md"} <= covered
    assert len(CODE) >= 20


def test_markers_belong_to_code_blocks():
    """A snippet marker above a block that is not collected is a mistake (it would do nothing)."""
    stray = [b.id for b in ALL if b.markers and not b.kind]
    assert not stray, f"snippet markers above non-code blocks: {stray}"


def test_parser_on_a_sample(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent("""\
        text
        <!-- snippet: skip — needs a GPU -->
        ```python
        import torch
        ```

        ```
        $ echo hi
        hi
        ```

        ```
        a = b + c
        ```
        <!-- snippet: setup
        x = 1
        -->
        <!-- snippet: exit 2 -->
        ```console
        $ false \\
            --flag
        ```
        """), encoding="utf-8")
    blocks = parse_page(page)
    assert [(b.line, b.kind) for b in blocks] == [(3, "python"), (7, "console"), (12, ""),
                                                  (19, "console")]
    assert blocks[0].skip == "needs a GPU"
    assert blocks[3].setup == "x = 1\n" and blocks[3].exit == 2
    assert _commands(blocks[3]) == [("false  --flag", "")]
    assert _commands(blocks[1]) == [("echo hi", "hi")]
