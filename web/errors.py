"""Errors as a person or a program expects them: JSON under /api/, a plain page elsewhere."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

from .pages import render

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str) -> web.Response:
    """A JSON error body ``{"error": message}`` with the given status."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn 4xx/5xx into JSON for the API and into the site's own plain pages elsewhere."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(request, exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error")
        return _error_response(request, 500, "Internal Server Error")


def _error_response(request: web.Request, status: int, reason: str) -> web.Response:
    if request.path.startswith("/api/"):
        return json_error(status, reason.lower())
    if status == 404:
        # One page for unknown routes and unknown meetings: it reveals nothing.
        return render("not_found.html", status=404)
    return render("error.html", status=status, reason=reason)
