"""The one place that leans on aiohttp's per-connection request handler.

aiohttp answers some requests itself, below the application: a request line, header or path
that its parser refuses gets a 400 from ``RequestHandler.handle_error``. Such answers skip the
app's ``on_response_prepare`` (so no CSP, no nosniff), name aiohttp's version in ``Server:``,
and are logged with a traceback each. ``EdgeRequestHandler`` answers them with the site's
headers and logs one line. ``request_handlers`` makes one per connection, as ``web.Server``
does, so that the listening socket can be meetnow's own (see ``connections.py``).

What this relies on, each checked by tests/web/test_aiohttp_shim.py, which names what moved:
- ``web.RequestHandler(manager, *, loop, **handler_args)`` is a connection's protocol, for
  the ``web.Server`` that ``AppRunner.server`` returns;
- ``RequestHandler.handle_error(request, status, exc, message)`` makes and returns the
  response to a request the parser refused (and to an exception no middleware caught);
- ``BaseRequest.writer.output_size`` is above 0 once a response has begun;
- ``RequestHandler.log_exception(message, exc_info=exc)`` is how it logs the rest of a body
  it could not read after the response (``peername`` says from whom).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, Callable, Mapping

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from meeting.logfmt import kv

log = logging.getLogger(__name__)


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's request handler, with its own answers to refused requests made like ours."""

    __slots__ = ("_edge_headers",)

    def __init__(self, manager: web.Server, *, headers: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge_headers = dict(headers)

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        """A plain-text error with the site's headers; one log line for a client's mistake."""
        if request.writer.output_size > 0:
            # As aiohttp does: the response has begun, so the connection can only be dropped.
            raise ConnectionError("response already started; cannot send an error response")
        if status >= 500:
            log.error("error handling request %s", kv(remote=request.remote), exc_info=exc)
        else:
            reason = (message or str(exc or "")).strip().split("\n", 1)[0][:200]
            log.info("refused request %s", kv(remote=request.remote, status=status, reason=reason))
        response = web.Response(status=status, text=f"{status} {_phrase(status)}\n",
                                headers=self._edge_headers)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's traceback, except for a body the client broke: one line for that."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, (web.RequestPayloadError, HttpProcessingError, ConnectionError)):
            cause = exc.__cause__ or exc
            text = str(getattr(cause, "message", "") or cause) or type(cause).__name__
            peer = self.peername
            log.info("request body unreadable %s", kv(
                remote=peer[0] if isinstance(peer, tuple) else peer,
                reason=text.strip().split("\n", 1)[0][:200]))
            return
        super().log_exception(*args, **kwargs)


def request_handlers(server: web.Server, headers: Mapping[str, str],
                     **handler_args: Any) -> Callable[[], EdgeRequestHandler]:
    """A protocol factory for ``loop.create_server``: one ``EdgeRequestHandler`` per
    connection, for ``server`` (``AppRunner.server`` after ``setup()``). ``handler_args`` are
    aiohttp's handler arguments (``keepalive_timeout``, ``access_log_class``, ...)."""
    loop = asyncio.get_running_loop()

    def make() -> EdgeRequestHandler:
        return EdgeRequestHandler(server, loop=loop, headers=headers, **handler_args)

    return make


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
