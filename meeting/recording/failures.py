"""What a recording failure looks like to logs and to the store: never the full recording id.

A recording's id is the only credential for its file, and it is also its folder's name, so
it turns up in file errors (``[Errno 28] No space left on device: '.../<id>/t01-mic.webm'``).
Everything said about a failure goes through :func:`describe` (or :func:`traceback_text`),
which shortens every id-shaped token the way ``meeting.ids.short`` does.
"""

from __future__ import annotations

import errno
import os
import re
import traceback

from meeting import ids

# Errors that mean "no room on the disk": worth retrying once space returns, not a fault.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

# A token as long as a minted id (22 base64url characters), standing on its own.
_ID_SHAPED = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])")


def redact(text: str) -> str:
    """``text`` with every meeting or recording id in it cut to its short form."""
    return _ID_SHAPED.sub(lambda m: ids.short(m.group()) if ids.is_valid_id(m.group()) else m.group(), text)


def describe(exc: BaseException, limit: int = 300) -> str:
    """One line for a log or a row: the error's type and message, ids shortened."""
    message = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)[:limit]


def traceback_text(exc: BaseException) -> str:
    """The full traceback, ids shortened (for failures that look like bugs)."""
    return redact("".join(traceback.format_exception(exc)).rstrip())


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is the disk or quota running out."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def mentions_disk_full(text: str) -> bool:
    """Whether an error as stored (``describe``'s text, or an older version's) says the disk was full."""
    return any(os.strerror(code) in text for code in DISK_FULL_ERRNOS)
