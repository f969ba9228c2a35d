"""The HTTP edge of ``meetnow serve``: the listening socket, connection limits and deadlines,
and the application behind them.

``Edge`` puts together what a client meets before a handler runs: ``connections`` counts and
times each connection, ``aiohttp_shim`` makes aiohttp's own error answers look like the
site's, ``bodydeadline`` bounds how long a request body may take.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from meeting.config import Config
from meeting.logfmt import kv

from .accesslog import RedactingAccessLogger
from .aiohttp_shim import request_handlers
from .connections import ConnectionGate, ConnectionLimits, listen
from .security import edge_headers

log = logging.getLogger(__name__)

# Seconds aiohttp keeps reading (and dropping) a body its handler did not read, so the
# client sees the answer before the connection closes; short, as a slow client holds it.
LINGERING_TIME = 2.0
# The automatic total stops here: with a hard open-file limit in the hundreds of thousands
# (systemd's default), half of it would let a flood hold a gigabyte of idle connections.
AUTOMATIC_MAX_CONNECTIONS = 10_000


def connection_limits(config: Config, open_files: int) -> ConnectionLimits:
    """The configured limits. The total is half of ``open_files`` when automatic (at most
    ``AUTOMATIC_MAX_CONNECTIONS``), and never more than three quarters: the rest is for media
    sockets, recordings and the store, and a server out of descriptors fails ``accept()`` in
    a loop instead of refusing politely."""
    server = config.server
    ceiling = max(1, open_files * 3 // 4)
    total = server.max_connections or max(1, min(open_files // 2, AUTOMATIC_MAX_CONNECTIONS))
    if total > ceiling:
        log.warning("connection limit lowered %s", kv(max_connections=total, to=ceiling,
                                                      open_files=open_files))
        total = ceiling
    return ConnectionLimits(total, server.max_connections_per_address, server.header_timeout)


class Edge:
    """``app`` served on the configured address behind the connection gate."""

    def __init__(self, app: web.Application, config: Config, open_files: int) -> None:
        self.config = config
        self.limits = connection_limits(config, open_files)
        self._handler_args = {
            "access_log_class": RedactingAccessLogger,
            # aiohttp closes a connection idle this long, from connecting or from its last
            # response: the header deadline for every request after the first.
            "keepalive_timeout": float(config.server.header_timeout),
            "lingering_time": LINGERING_TIME,
        }
        self.runner = web.AppRunner(app, **self._handler_args)  # type: ignore[arg-type]
        self.gate = ConnectionGate(self.limits, edge_headers(config))
        self._listener: asyncio.Server | None = None

    async def setup(self) -> None:
        """Start the application (its startup hooks run); nothing listens yet."""
        await self.runner.setup()

    async def listen(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Accept connections; raises OSError when the address cannot be listened on."""
        assert self.runner.server is not None, "setup() first"
        handlers = request_handlers(self.runner.server, edge_headers(self.config),
                                    **self._handler_args)
        self._listener = await listen(self.gate, handlers, self.config.server.host,
                                      self.config.server.port, ssl_context=ssl_context)
        log.info("connection limits %s", kv(total=self.limits.total,
                                           per_address=self.limits.per_address or "none",
                                           header_timeout=self.limits.header_timeout,
                                           body_timeout=self.config.server.body_timeout))

    async def close(self) -> None:
        """Stop accepting, close every connection, run the application's shutdown hooks."""
        if self._listener is not None:
            self._listener.close()
        await self.runner.cleanup()
        if self._listener is not None:
            await self._listener.wait_closed()
