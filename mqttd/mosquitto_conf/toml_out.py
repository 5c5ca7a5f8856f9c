"""Write a converted configuration as TOML, each key with the mosquitto.conf line it came from.

Only the shapes our config uses: tables, arrays of tables, strings, booleans, numbers
and arrays of strings. Strings are TOML basic strings (JSON's escapes are TOML's too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .reader import Line

__all__ = ["to_toml"]


def to_toml(raw: Mapping[str, Any], origins: Mapping[str, Line], header: list[str]) -> str:
    """The TOML text of document `raw`; `header` lines come first, as comments."""
    out = [f"# {line}".rstrip() for line in header]
    _table(raw, "", "", origins, out)
    return "\n".join(out).strip("\n") + "\n"


def _table(
    table: Mapping[str, Any],
    path: str,
    index_path: str,
    origins: Mapping[str, Line],
    out: list[str],
) -> None:
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        ):
            nested.append((key, value))
            continue
        line = origins.get(f"{index_path}{key}")
        out.append(f"{key} = {_value(value)}{_from(line)}")
    # Tables before arrays of tables: `[bridge.tls]` reads better above the topic rules.
    nested.sort(key=lambda item: not isinstance(item[1], Mapping))
    for key, value in nested:
        name = f"{path}{key}"
        if isinstance(value, Mapping):
            line = origins.get(f"{index_path}{key}")
            out.append("")
            out.append(f"[{name}]{_from(line)}")
            _table(value, name + ".", f"{index_path}{key}.", origins, out)
            continue
        for i, item in enumerate(value):
            where = f"{index_path}{key}[{i}]"
            out.append("")
            out.append(f"[[{name}]]{_from(origins.get(where))}")
            _table(item, name + ".", where + ".", origins, out)


def _from(line: Line | None) -> str:
    if line is None:
        return ""
    text = f"{line.option} {line.value}".strip()
    if len(text) > 60:
        text = text[:57] + "..."
    return f"  # {line.where}: {text}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")
