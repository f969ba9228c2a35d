"""A deadline for request bodies: a client that sends one slowly is answered 408.

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
    longer be streamed (nothing in meetnow takes one). Place it inside the error-page middleware:
    its 408, and the 413 for a body over the app's size limit, are rendered there.
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
        return await handler(request)

    return read_body_in_time
