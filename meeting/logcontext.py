"""Which request and which meeting a log line belongs to.

Two context variables carry a short request reference and a short meeting reference
(:func:`meeting.ids.short`, never a whole id) through everything one request does: the
HTTP middleware sets the request's, the websocket adapter and the meeting's session set the
meeting's, and asyncio copies both into every task started from there. :class:`ContextFilter`
puts them on each log record as ``req`` and ``mtg`` for the formatters.
"""

from __future__ import annotations

import contextvars
import logging
import secrets

from meeting import ids

request_ref: contextvars.ContextVar[str] = contextvars.ContextVar("request_ref", default="")
meeting_ref: contextvars.ContextVar[str] = contextvars.ContextVar("meeting_ref", default="")


def new_request_ref() -> str:
    """A fresh reference for one request: short, random, and unrelated to any id."""
    return secrets.token_hex(4)


def bind_request() -> str:
    """Give the current context (one request's task) a fresh request reference."""
    ref = new_request_ref()
    request_ref.set(ref)
    return ref


def bind_meeting(meeting_id: str) -> None:
    """Mark the current context as working on ``meeting_id`` (logged shortened)."""
    meeting_ref.set(ids.short(meeting_id))


class ContextFilter(logging.Filter):
    """A handler filter that adds ``req`` and ``mtg`` to every record (empty when unset), and
    ``proc``, the name of a child process (a media worker) when the log is one's."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.proc = self.process
        if getattr(record, "repeat_summary", False):
            # Counts lines from many requests; the context it is written from is not theirs.
            record.req = record.mtg = ""
            return True
        if not hasattr(record, "req"):
            record.req = request_ref.get()
        if not hasattr(record, "mtg"):
            record.mtg = meeting_ref.get()
        return True
