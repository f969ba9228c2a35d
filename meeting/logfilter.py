"""Repeated log lines, rate-limited: a flood of one error becomes a few lines and a count.

A client can make the server log the same line over and over (a bad request per connection,
``accept()`` failing while file descriptors run out, each with a traceback). ``RepeatFilter``
lets each distinct message through ``burst`` times per ``interval`` and drops the rest of
that interval; when the interval is over it writes one line saying how many were dropped.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

# A few copies of a message per minute tell an operator what is happening.
BURST = 5
INTERVAL = 60.0
# Distinct messages tracked at once; more than this and the oldest is forgotten (its
# count is still reported).
MAX_TRACKED = 1024
# Messages are told apart by their first line, up to this long; summaries quote as much.
SUMMARY_CHARS = 200


@dataclass
class _Window:
    start: float
    passed: int
    dropped: int
    # What the summary needs, not the record: a record may hold a traceback and its frames.
    name: str
    levelno: int
    levelname: str
    text: str


class RepeatFilter(logging.Filter):
    """A handler filter: ``burst`` copies of each message per ``interval``, then a count.

    Messages are told apart by logger, level and the first line of their text (arguments
    filled in), so access log lines for different requests are different messages, while
    asyncio's reports, whose later lines name each task, are one. Summaries go to ``handler``.
    """

    def __init__(self, handler: logging.Handler, burst: int = BURST, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.handler = handler
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._next_sweep = 0.0
        # Records come from the loop and from worker threads alike.
        self._lock = threading.RLock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        with self._lock:
            return self._admit(record)

    def flush(self) -> None:
        """Write the counts of everything dropped so far (at exit, say)."""
        with self._lock:
            now = self.clock()
            for window in list(self._windows.values()):
                self._summarize(window, now)
            self._windows.clear()

    def _admit(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        key = (record.name, record.levelno, _first_line(record))
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            if window is not None:
                self._summarize(window, now)
            if len(self._windows) >= MAX_TRACKED and key not in self._windows:
                self._summarize(self._windows.pop(next(iter(self._windows))), now)
            self._windows[key] = _Window(now, 1, 0, record.name, record.levelno, record.levelname,
                                         key[2])
            return True
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.dropped += 1
        return False

    def _sweep(self, now: float) -> None:
        # Summaries of windows that ended: once a second at most, on the next record.
        self._next_sweep = now + 1.0
        ended = [key for key, w in self._windows.items() if now - w.start >= self.interval]
        for key in ended:
            self._summarize(self._windows.pop(key), now)

    def _summarize(self, window: _Window, now: float) -> None:
        if not window.dropped:
            return
        seconds = max(1, round(min(now - window.start, self.interval)))
        summary = logging.makeLogRecord({
            "name": window.name, "levelno": window.levelno, "levelname": window.levelname,
            "msg": "%s ... repeated %d more times in %d s",
            "args": (window.text, window.dropped, seconds), "repeat_summary": True,
        })
        window.dropped = 0
        self.handler.handle(summary)


def install(logger: logging.Logger | None = None, **options: float) -> list[RepeatFilter]:
    """Put a ``RepeatFilter`` on each of ``logger``'s handlers (the root logger's by default);
    whatever was dropped is counted in the log at exit."""
    filters = []
    for handler in (logger or logging.getLogger()).handlers:
        if any(isinstance(f, RepeatFilter) for f in handler.filters):
            continue
        repeat = RepeatFilter(handler, **options)  # type: ignore[arg-type]
        handler.addFilter(repeat)
        atexit.register(repeat.flush)
        filters.append(repeat)
    return filters


def _first_line(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a bad format string is still a message; logging reports it later
        text = str(record.msg)
    return text.split("\n", 1)[0][:SUMMARY_CHARS]
