"""Reading a config file: only a regular file of at most ``MAX_CONFIG_BYTES``, UTF-8 JSON with
no duplicate keys and no NaN/Infinity, every error a ``ConfigError`` with file, line and column."""
from __future__ import annotations

import json
import os
import stat
from typing import Any, NoReturn

from ..errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "read_json", "json_pointer_escape", "show_value"]


def json_pointer_escape(key: str) -> str:
    """``key`` as one JSON-pointer segment (RFC 6901: ``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def show_value(value: Any) -> str:
    """``value`` as JSON text, cut to 80 characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class _Obj(dict):
    """A JSON object that remembers keys given twice (json keeps only the last)."""
    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj, seen = _Obj(), []
    for key, value in pairs:
        if key in obj and key not in seen:
            seen.append(key)
        obj[key] = value
    obj.duplicates = tuple(seen)
    return obj


def _no_constant(word: str) -> NoReturn:
    raise ValueError(f"{word} is not valid JSON")


#: the largest config file read (a real one is a few KiB; /dev/zero or a huge file is refused)
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def _read_config_bytes(name: str) -> bytes:
    """The file's bytes; only a regular file (a FIFO would block, /dev/zero never ends)."""
    st = os.stat(name)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"the config path is {kind}", where=name,
                          hint="quant_config_file must name a JSON file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config file is {st.st_size} bytes, more than the "
                          f"{MAX_CONFIG_BYTES} a config can have", where=name,
                          hint="quant_config_file must name a JSON config file")
    with open(name, "rb") as f:
        return f.read(MAX_CONFIG_BYTES + 1)


def read_json(name: str) -> Any:
    """The parsed JSON document of the config file ``name``."""
    try:
        raw = _read_config_bytes(name)
    except FileNotFoundError:
        raise ConfigError("config file not found", where=name,
                          hint="check the path, or pass quant_config_file=None for the default "
                               "configuration") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror or exc}", where=name,
                          hint="quant_config_file must name a readable JSON file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the config file is not UTF-8 text (byte {exc.start})", where=name,
                          hint="save the file as UTF-8 JSON") from None
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        line = lines[exc.lineno - 1] if text.strip() and exc.lineno <= len(lines) else ""
        caret = f"\n    {line.rstrip()}\n    {' ' * (exc.colno - 1)}^" if line else ""
        raise ConfigError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                          where=f"{name}:{exc.lineno}:{exc.colno}",
                          hint="fix the JSON syntax here (JSON has no comments, no trailing "
                               f"commas, and uses double quotes){caret}") from None
    except ValueError as exc:  # NaN / Infinity
        raise ConfigError(f"not valid JSON: {exc}", where=name,
                          hint="use a finite number") from None
    except RecursionError:
        raise ConfigError("the config is nested too deeply", where=name) from None
    _check_duplicates(data, "", name)
    return data


def _check_duplicates(node: Any, pointer: str, name: str) -> None:
    if isinstance(node, _Obj) and node.duplicates:
        dup = node.duplicates[0]
        raise ConfigError(f"key {dup!r} is given twice in one object; JSON would keep only the "
                          f"last value {show_value(node[dup])}",
                          where=f"{name}, at {pointer}/{json_pointer_escape(dup)}",
                          hint="keep one of the two entries")
    children = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in children:
        _check_duplicates(child, f"{pointer}/{json_pointer_escape(str(key))}", name)
