"""Request bodies read before the handler: within a deadline (408 past it), and a body
that cannot be read (cut off, or a Content-Encoding that does not decode) is a 400.

aiohttp has a timeout for idle connections but none for a body trickling in a byte at a
time, which would hold its handler, and its connection, for as long as the client likes.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from meeting.logfmt import kv

log = logging.getLogger(__name__)


def body_deadline(seconds: float) -> Middleware:
    """A middleware that reads any request body within ``seconds`` before the handler runs.

    aiohttp keeps what it read, so ``request.read()``, ``.text()``, ``.json()`` and
    ``.post()`` (form-encoded) in the handler return at once; a multipart body could no
    longer be streamed (nothing in meetnow takes one). Place it inside the error-page
    middleware: its 408 and 400, and the 413 for a body over the app's size limit, are
    rendered there.
    """

    @web.middleware
    async def read_body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(seconds):
                    await request.read()
            except TimeoutError:
                log.info("request body too slow %s", kv(remote=request.remote, seconds=seconds))
                raise web.HTTPRequestTimeout() from None
            except (ConnectionError, web.RequestPayloadError) as exc:
                # The client went away mid-body, or sent one that does not decode: its
                # mistake, not a server error to trace.
                log.info("request body unreadable %s", kv(remote=request.remote,
                                                          reason=_first_line(exc)))
                raise web.HTTPBadRequest() from None
        return await handler(request)

    return read_body_in_time


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "message", "") or cause) or type(cause).__name__
    return text.strip().split("\n", 1)[0][:200]
