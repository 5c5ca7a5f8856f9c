"""Logging set-up: readable text lines by default, JSON lines for log collectors.

Text::

    2026-11-29 10:00:00 INFO mqttd: mqttd 0.1.0 listening on mqtt://127.0.0.1:1883

JSON (one object per line, the same fields)::

    {"time": "2026-11-29T10:00:00.123+00:00", "level": "INFO", "logger": "mqttd",
     "message": "mqttd 0.1.0 listening on mqtt://127.0.0.1:1883"}

Everything goes to stderr (stdout stays free for commands that print results) and,
when `[log]` says so, to a file rotated by size (``file``, ``max_bytes``, ``backups``)
and to syslog (``syslog = "/dev/log"`` or ``"host:514"``).
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["JsonFormatter", "log_options", "set_log_level", "setup_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# Libraries whose DEBUG output would drown ours when mqttd runs with -v.
_CHATTY = ("asyncio", "websockets", "aiosqlite")

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _syslog_handler(address: str) -> logging.Handler:
    """A syslog handler for "/dev/log" (a socket path) or "host:port" (UDP)."""
    target: str | tuple[str, int]
    if address.startswith("/"):
        target = address
    else:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"log.syslog: {address!r} is not a socket path or host:port")
        target = (host.strip("[]"), int(port))
    handler = logging.handlers.SysLogHandler(target)
    # syslog adds its own time and host: the line starts at the logger's name.
    handler.setFormatter(logging.Formatter("mqttd[%(process)d]: %(name)s: %(message)s"))
    return handler


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    stream: TextIO | None = None,
    file: str = "",
    max_bytes: int = 10_485_760,
    backups: int = 5,
    syslog: str = "",
) -> None:
    """Send every logger's records at `level` or above to `stream` (stderr) as `fmt`.

    `level` is a name (debug, info, warning, error); `fmt` is "text" or "json". Calling
    it again replaces the previous set-up.
    """
    # A line per CONNECT is on the connection set-up path: skip the thread and process
    # look-ups every record would otherwise make (none of our formats shows them).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT)
    handlers: list[logging.Handler] = [
        logging.StreamHandler(stream if stream is not None else sys.stderr)
    ]
    if file:
        # Rotation by size in-process: no logrotate needed, nothing lost at a rotation.
        handlers.append(
            logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(formatter)
    if syslog:
        logging.logProcesses = True  # the syslog line carries the pid
        handlers.append(_syslog_handler(syslog))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    set_log_level(level)


def set_log_level(level: str) -> None:
    """Log at `level` (debug, info, warning, error) from now on; handlers stay as they are.

    Used by SIGHUP to apply a new `log.level` without touching where logs go.
    """
    numeric = logging.getLevelNamesMapping()[level.upper()]
    logging.getLogger().setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))


def log_options(config: Config) -> dict[str, Any]:
    """`setup_logging`'s keyword arguments from a config's `[log]` section."""
    log = config.log
    return {
        "level": log.level,
        "fmt": log.format,
        "file": log.file,
        "max_bytes": log.max_bytes,
        "backups": log.backups,
        "syslog": log.syslog,
    }
