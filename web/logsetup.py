"""Log references for HTTP work: every line of one request's work carries ``req`` and ``mtg``."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from meeting import ids
from meeting.logcontext import bind_meeting, bind_request


@web.middleware
async def log_context(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Give the request's task a request reference, and the meeting's short reference when
    the path names one, for every line logged while it runs (a websocket's whole life)."""
    bind_request()
    meeting_id = request.match_info.get("meeting_id", "")
    if ids.is_valid_id(meeting_id):
        bind_meeting(meeting_id)
    return await handler(request)
