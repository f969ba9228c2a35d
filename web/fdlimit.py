"""The process's open-file limit, raised as far as it may go before the server starts.

Every connection, media socket, recording file and store handle is a file descriptor. Many
systems start processes with a soft limit of 1024 while allowing far more (the hard limit);
the soft limit is the one that makes ``accept()`` fail.
"""

from __future__ import annotations

import logging
import resource

from meeting.logfmt import kv

log = logging.getLogger(__name__)

# Linux refuses RLIM_INFINITY for open files; with an unlimited hard limit this is asked for.
UNLIMITED_TARGET = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; log and return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        limit = soft if soft != resource.RLIM_INFINITY else target
        log.info("open files %s", kv(limit=limit))
        return limit
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("open files %s", kv(limit=soft, hard=hard, raise_failed=exc))
        return soft
    log.info("open files %s", kv(limit=target, was=soft))
    return target
