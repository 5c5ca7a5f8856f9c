"""Logging set-up: readable text lines by default, JSON lines for log collectors.

Text::

    2026-11-29 10:00:00 INFO mqttd: mqttd 0.1.0 listening on mqtt://127.0.0.1:1883

JSON (one object per line, the same fields)::

    {"time": "2026-11-29T10:00:00.123+00:00", "level": "INFO", "logger": "mqttd",
     "message": "mqttd 0.1.0 listening on mqtt://127.0.0.1:1883"}

Everything goes to stderr: stdout stays free for commands that print results.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

__all__ = ["JsonFormatter", "set_log_level", "setup_logging"]

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


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every logger's records at `level` or above to `stream` (stderr) as `fmt`.

    `level` is a name (debug, info, warning, error); `fmt` is "text" or "json". Calling
    it again replaces the previous set-up.
    """
    # A line per CONNECT is on the connection set-up path: skip the thread and process
    # look-ups every record would otherwise make (none of our formats shows them).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
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
