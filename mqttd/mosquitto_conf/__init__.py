"""Run an existing mosquitto.conf: read it, convert it to our typed `Config`, print it as TOML.

    is_mosquitto_conf(path)            by content, not by name
    load_mosquitto_config(path, o)     -> (Config, notes); ConfigError names FILE:LINE
    convert_to_toml(path)              -> (TOML text, errors) for `mqttd convert`

This package is on the config side: it produces `Config` and imports nothing of the
broker. reader.py splits the file (and include_dir), convert.py maps each option,
options.py says which options have no effect and which mqttd cannot honour.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, ConfigError, Overrides, _apply_overrides, config_from_dict
from .convert import Conversion, convert_lines, parse_duration
from .options import KNOWN
from .reader import Line, looks_like_mosquitto, read_lines
from .toml_out import to_toml

__all__ = [
    "Conversion",
    "convert_file",
    "convert_to_toml",
    "is_mosquitto_conf",
    "load_mosquitto_config",
    "locate_errors",
    "parse_duration",
]


def is_mosquitto_conf(path: str | Path) -> bool:
    """True if the file at `path` is a mosquitto.conf (False if unreadable: the TOML
    loader then reports why)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return looks_like_mosquitto(text, KNOWN)


def convert_file(path: str | Path, hostname: str | None = None) -> Conversion:
    """Read and convert `path`; unreadable files are errors of the `Conversion`."""
    errors: list[str] = []
    lines = read_lines(path, errors)
    conversion = convert_lines(lines, hostname)
    conversion.errors[:0] = errors
    return conversion


def load_mosquitto_config(
    path: str | Path, overrides: Overrides | None = None, hostname: str | None = None
) -> tuple[Config, list[str]]:
    """The `Config` of mosquitto.conf `path` and the notes to log once at start.

    Raises `ConfigError` with one `FILE:LINE: option value: why` line per option mqttd
    cannot honour (and per value our own validation refuses).
    """
    conversion = convert_file(path, hostname)
    if conversion.errors:
        raise ConfigError([f"config error: {e}" for e in conversion.errors])
    raw = conversion.raw
    if overrides is not None:
        _apply_overrides(raw, overrides)
        if overrides.db is not None and overrides.db != ":memory:":
            raw["mqtt"]["pubrec_first"] = False  # --db turned persistence on
    try:
        config = config_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError([_locate(e, conversion) for e in exc.lines]) from exc
    return config, conversion.notes


def convert_to_toml(path: str | Path, hostname: str | None = None) -> tuple[str, list[str]]:
    """`mqttd convert`: the TOML text for `path`, and its errors (also comments in the text)."""
    conversion = convert_file(path, hostname)
    errors = list(conversion.errors)
    if not errors:
        try:
            config_from_dict(conversion.raw)
        except ConfigError as exc:
            errors = [_locate(e, conversion).removeprefix("config error: ") for e in exc.lines]
    header = [f"mqttd configuration converted from {path} by `mqttd convert`."]
    header.append("Every key says the mosquitto.conf line it comes from; see")
    header.append("docs/migrating-from-mosquitto.md for what differs.")
    if errors:
        header.append("")
        header.append("NOT CONVERTED (mqttd cannot honour these; `mqttd -c` refuses them):")
        header += [f"  {e}" for e in errors]
    if conversion.notes:
        header.append("")
        header.append("Accepted without effect on behaviour:")
        header += [f"  {n}" for n in conversion.notes]
    header.append("")
    return to_toml(conversion.raw, conversion.origins, header), errors


def locate_errors(path: str | Path, lines: list[str]) -> list[str]:
    """Prefix config errors about the Config of mosquitto.conf `path` (TLS files, password
    file, ...) with the mosquitto.conf line that set the key each one names."""
    conversion = convert_file(path)
    return [_locate(line, conversion) for line in lines]


def _locate(error: str, conversion: Conversion) -> str:
    """Prefix a loader error with the mosquitto.conf line that set the key it names."""
    body = error.removeprefix("config error: ")
    key = body.split(":", 1)[0]
    best: Line | None = None
    best_len = -1
    for path, line in conversion.origins.items():
        if (key == path or key.startswith(path + ".") or key.startswith(path + "[")) and len(
            path
        ) > best_len:
            best, best_len = line, len(path)
    if best is None:
        return error
    return f"config error: {best.where}: {best.option} {best.value}: {body}"


__all__ += ["Line"]
