"""Read a mosquitto.conf into option lines, following `include_dir` as Mosquitto does.

mosquitto.conf(5): one option per line, `name value...`; a line whose first non-blank
character is `#` is a comment (there are no comments after a value: Mosquitto reads the
rest of the line as the value). Options may repeat (`listener`, `topic`, `address`...).
`include_dir DIR` is honoured in the main file only and reads DIR's `*.conf` files in
"case sensitive alphabetical order, with the upper case of each letter ordered before
the lower case of the same letter" (so A.conf, a.conf, B.conf, b.conf).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Line", "include_order", "looks_like_mosquitto", "read_lines"]


@dataclass(frozen=True, slots=True)
class Line:
    """One option line: where it is, its name and its value (the rest of the line)."""

    file: str
    number: int
    option: str
    value: str

    @property
    def args(self) -> list[str]:
        """The value split on blanks (`listener 8883 0.0.0.0` -> ["8883", "0.0.0.0"])."""
        return self.value.split()

    @property
    def where(self) -> str:
        """`FILE:LINE`, the start of every message about this line."""
        return f"{self.file}:{self.number}"


def include_order(name: str) -> list[tuple[str, bool]]:
    """Sort key of include_dir's files: by letter, an upper case one before its lower case."""
    return [(c.lower(), c.islower()) for c in name]


def parse_text(text: str, file: str) -> list[Line]:
    """The option lines of one file's text (comments and blank lines left out)."""
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        option, _, value = stripped.partition(" ")
        if "\t" in option:  # `option<TAB>value`
            option, _, rest = option.partition("\t")
            value = f"{rest} {value}".strip()
        lines.append(Line(file, number, option, value.strip()))
    return lines


def read_lines(path: str | Path, errors: list[str]) -> list[Line]:
    """Every option line of `path` and of the files its include_dir names, in order.

    Problems (unreadable files) go to `errors` as `FILE:LINE: ...` lines.
    """
    text = _read(path, None, errors)
    if text is None:
        return []
    lines: list[Line] = []
    for line in parse_text(text, str(path)):
        if line.option != "include_dir":
            lines.append(line)
            continue
        lines.append(line)  # kept, so the converter can say it was followed
        directory = Path(line.value)
        try:
            names = [n for n in os.listdir(directory) if n.endswith(".conf")]
        except OSError as exc:
            errors.append(f"{line.where}: include_dir {line.value}: cannot read: {exc.strerror}")
            continue
        for name in sorted(names, key=include_order):
            included = directory / name
            if included.resolve() == Path(path).resolve():
                errors.append(f"{line.where}: include_dir {line.value}: holds the main file itself")
                continue
            sub = _read(included, line, errors)
            if sub is None:
                continue
            for inner in parse_text(sub, str(included)):
                if inner.option == "include_dir":
                    # mosquitto.conf(5): "only processed from the main configuration file".
                    errors.append(
                        f"{inner.where}: include_dir: only allowed in the main configuration "
                        "file (Mosquitto refuses it here too)"
                    )
                    continue
                lines.append(inner)
    return lines


def _read(path: str | Path, by: Line | None, errors: list[str]) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        where = f"{by.where}: include_dir {by.value}: " if by is not None else ""
        errors.append(f"{where}{path}: cannot read: {exc.strerror}")
    except UnicodeDecodeError as exc:
        errors.append(f"{path}: not UTF-8 text: {exc.reason}")
    return None


def looks_like_mosquitto(text: str, known: frozenset[str]) -> bool:
    """True if `text` is a mosquitto.conf rather than TOML, judged by its content.

    Valid TOML is TOML (an empty or comment-only file means the defaults either way);
    otherwise it is Mosquitto's if its first option line starts with an option name
    mosquitto.conf(5) knows and has no `=` (TOML's key/value separator) before its value.
    """
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass
    else:
        return False
    lines = parse_text(text, "")
    if not lines:
        return False
    first = lines[0]
    return first.option in known and "=" not in first.option and not first.value.startswith("=")
