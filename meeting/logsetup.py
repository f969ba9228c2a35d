"""How ``meetnow`` writes its log: key=value text lines (the default) or JSON lines.

Both formats carry the request and meeting references of :mod:`meeting.logcontext`
(``req``, ``mtg``) on every line written while one request's work runs. The JSON one is
the standard library's ``json`` over the record: one object per line, a traceback as one
escaped string, so a log shipper never splits an entry.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from meeting.config import LogConfig
from meeting.logcontext import ContextFilter
from meeting.logfmt import kv

from meeting import logfilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# aioice logs each ICE candidate pair it checks, with both addresses, at INFO: a dozen or
# more lines per participant joining, none an operator acts on, and every participant's
# address in the log. At "info" and above they are left out; "debug" shows them.
CHATTY = ("aioice",)


class KeyValueFormatter(logging.Formatter):
    """The text format with ``req=... mtg=...`` at the end of the first line, when set."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        refs = {key: value for key in ("proc", "req", "mtg") if (value := getattr(record, key, ""))}
        if not refs:
            return text
        # After the first line: a traceback below keeps its shape, and the line stays greppable.
        first, newline, rest = text.partition("\n")
        return f"{first} {kv(**refs)}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, req, mtg, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("proc", "req", "mtg"):
            if value := getattr(record, key, ""):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: control and bidirectional characters leave as \u escapes.
        return json.dumps(entry, ensure_ascii=True)


def formatter_for(format_name: str) -> logging.Formatter:
    """The formatter for ``log.format`` ("kv" or "json")."""
    return JsonFormatter() if format_name == "json" else KeyValueFormatter()


def configure(config: LogConfig, stream: TextIO | None = None, process: str = "") -> logging.Handler:
    """Send the root logger's records to ``stream`` (stderr) in the configured format, with
    request and meeting references and repeated lines rate-limited. Replaces earlier handlers.

    ``process`` names a child process (a media worker) on each of its lines.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(config.format))
    handler.addFilter(ContextFilter(process))
    root.addHandler(handler)
    root.setLevel(config.level.upper())
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
    # A client can make one line repeat without end; a few and a count are enough.
    logfilter.install(root)
    return handler
