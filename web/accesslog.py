"""An access log that never writes a meeting or recording id whole."""

from __future__ import annotations

import re

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from meeting.logfmt import kv

# Any path segment long enough to be an id or key is cut to a prefix.
_LONG_SEGMENT = re.compile(r"(?<=/)([A-Za-z0-9_-]{4})[A-Za-z0-9_-]{12,}")


def redact_path(path: str) -> str:
    """The request path with id-like segments shortened and the query dropped (the site's
    own static files are named, not secret, and stay whole)."""
    path = path.split("?", 1)[0]
    if path.startswith("/static/") and ".." not in path:
        return path
    return _LONG_SEGMENT.sub(r"\1…", path)


class RedactingAccessLogger(AbstractAccessLogger):
    """One key=value line per request: method, redacted path, status, time taken."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "http %s",
            kv(
                method=request.method,
                path=redact_path(request.path),
                status=response.status,
                ms=round(time * 1000, 1),
            ),
        )
