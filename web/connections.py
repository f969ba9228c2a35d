"""Connection accounting at the listening socket: caps per client address and in all, and a
deadline for each new connection's first request headers.

Every accepted connection passes ``ConnectionGate`` before aiohttp sees it. Admitted, it is
handed to aiohttp's protocol unchanged; refused, it gets a short HTTP answer (429 for an
address over its share, 503 when the server is full) and is closed, so its file descriptor
is free again at once. A connection that has not sent a complete header block within
``header_timeout`` of connecting is closed (slowloris). When every place is taken, the
oldest connection still waiting for its first headers makes room for the new one: real
clients send their headers within milliseconds, so the ones waiting longest are the slow.
Later requests on a kept-alive connection are timed by aiohttp's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Mapping

from meeting.logfmt import kv

log = logging.getLogger(__name__)

ProtocolFactory = Callable[[], asyncio.Protocol]


@dataclass(frozen=True)
class ConnectionLimits:
    """``total`` open connections; ``per_address`` from one client (0: no such limit);
    seconds a new connection has to send its first request's headers."""

    total: int
    per_address: int
    header_timeout: float


class ConnectionGate:
    """Admits, counts and times connections; ``protocol_factory`` puts it in front of a
    protocol factory such as aiohttp's. ``headers`` go on its refusals (CSP, nosniff, ...)."""

    def __init__(self, limits: ConnectionLimits, headers: Mapping[str, str]) -> None:
        self.limits = limits
        self._open = 0
        self._by_address: dict[str, int] = {}
        # Admitted connections that have not yet sent a complete header block, oldest first.
        self._waiting: dict[_GatedConnection, None] = {}
        self._too_many = _refusal(429, "Too many connections from your address.\n", headers)
        self._full = _refusal(503, "The server is busy; try again in a moment.\n", headers)

    @property
    def open(self) -> int:
        """Connections admitted and not yet closed."""
        return self._open

    def protocol_factory(self, inner: ProtocolFactory) -> ProtocolFactory:
        """A factory for ``loop.create_server`` that admits each connection before ``inner``
        gets it (``inner`` is called only for admitted ones)."""
        return lambda: _GatedConnection(self, inner)

    def _admit(self, conn: _GatedConnection) -> bytes | None:
        """None when ``conn`` is admitted (and counted); otherwise the answer it gets."""
        address = conn.address
        held = self._by_address.get(address, 0)
        if self.limits.per_address and held >= self.limits.per_address:
            log.warning("connection refused %s", kv(remote=address, reason="per-address limit",
                                                    limit=self.limits.per_address))
            return self._too_many
        if self._open >= self.limits.total and not self._evict_oldest_waiting():
            log.warning("connection refused %s", kv(remote=address, reason="connection limit",
                                                    limit=self.limits.total))
            return self._full
        self._open += 1
        self._by_address[address] = held + 1
        self._waiting[conn] = None
        conn.counted = True
        return None

    def _evict_oldest_waiting(self) -> bool:
        victim = next(iter(self._waiting), None)
        if victim is None:
            return False
        log.info("connection closed to make room %s", kv(remote=victim.address,
                                                          reason="no request yet"))
        self._release(victim)
        victim.abort()
        return True

    def _started(self, conn: _GatedConnection) -> None:
        self._waiting.pop(conn, None)

    def _release(self, conn: _GatedConnection) -> None:
        if not conn.counted:
            return
        conn.counted = False
        self._waiting.pop(conn, None)
        self._open -= 1
        left = self._by_address[conn.address] - 1
        if left:
            self._by_address[conn.address] = left
        else:
            del self._by_address[conn.address]


async def listen(gate: ConnectionGate, inner: ProtocolFactory, host: str, port: int, *,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 128) -> asyncio.Server:
    """Listen on ``host:port`` with ``gate`` in front of ``inner``; a TLS handshake gets the
    header timeout too. Close the returned server to stop accepting."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        gate.protocol_factory(inner), host, port, ssl=ssl_context, backlog=backlog,
        ssl_handshake_timeout=gate.limits.header_timeout if ssl_context else None)


def client_key(peername: Any) -> str:
    """What a client is counted as: its IPv4 address, or its IPv6 /64 (one host usually
    has a whole /64 to pick addresses from)."""
    if not isinstance(peername, tuple) or not peername:
        return "local"
    host = str(peername[0]).split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _GatedConnection(asyncio.Protocol):
    """One connection: admitted or refused by the gate, then passed through to ``inner``."""

    def __init__(self, gate: ConnectionGate, inner: ProtocolFactory) -> None:
        self._gate = gate
        self._inner_factory = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        self.address = ""
        self.counted = False
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.address = client_key(transport.get_extra_info("peername"))
        refusal = self._gate._admit(self)
        if refusal is not None:
            self._transport.write(refusal)  # type: ignore[union-attr]
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._gate.limits.header_timeout, self._headers_late)
        self._inner = self._inner_factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if not self.started:
            self._look_for_end_of_headers(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._gate._release(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _look_for_end_of_headers(self, data: bytes) -> None:
        # A blank line ends the first header block; three bytes are kept in case it is split.
        seen = self._tail + data
        if b"\r\n\r\n" in seen or b"\n\n" in seen:
            self.started = True
            self._tail = b""
            if self._deadline is not None:
                self._deadline.cancel()
            self._gate._started(self)
        else:
            self._tail = seen[-3:]

    def _headers_late(self) -> None:
        if self.started:
            return
        log.info("connection closed %s", kv(remote=self.address, reason="request headers too slow",
                                            seconds=self._gate.limits.header_timeout))
        self.abort()


def _refusal(status: int, text: str, headers: Mapping[str, str]) -> bytes:
    body = text.encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}",
             "Connection: close", "Retry-After: 5",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
