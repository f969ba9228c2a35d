"""The connection gate on a real loopback socket, in front of a real aiohttp application."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

import pytest
from aiohttp import web

from tests.conftest import wait_for
from web.aiohttp_shim import request_handlers
from web.connections import ConnectionGate, ConnectionLimits, client_key, listen

HEADERS = {"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff",
           "Server": "meetnow"}
PARTIAL = b"GET / HTTP/1.1\r\nHost: a\r\n"  # headers begun, never finished
REQUEST = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., object]]:
    """Start the gate and a one-route application; yields a starter taking the limits."""
    cleanups = []

    async def start(limits: ConnectionLimits, keepalive: float = 60.0) -> tuple[ConnectionGate, int]:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        assert runner.server is not None
        gate = ConnectionGate(limits, HEADERS)
        handlers = request_handlers(runner.server, HEADERS, keepalive_timeout=keepalive)
        listener = await listen(gate, handlers, "127.0.0.1", 0)

        async def stop() -> None:
            listener.close()
            await runner.cleanup()

        cleanups.append(stop)
        return gate, listener.sockets[0].getsockname()[1]

    yield start
    for stop in cleanups:
        await stop()


class Client:
    """One raw connection from a chosen loopback address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> bytes:
        """One response head and body (small bodies), or what came before the close."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        return head + await asyncio.wait_for(self.reader.readexactly(length), 10)

    async def closed_by_server(self, timeout: float = 15) -> bytes:
        """Everything the server sent until it closed the connection."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionResetError:
            return b""

    def close(self) -> None:
        self.writer.close()


async def test_one_address_gets_its_share_and_the_next_is_refused(serve) -> None:
    gate, port = await serve(ConnectionLimits(total=100, per_address=3, header_timeout=60))
    held = [await Client.open(port) for _ in range(3)]
    await wait_for(lambda: gate.open == 3)
    refused = await Client.open(port)
    answer = await refused.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert b"\r\nContent-Security-Policy: default-src 'self'\r\n" in answer
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in answer
    assert b"\r\nRetry-After: 5\r\n" in answer and b"\r\nConnection: close\r\n" in answer
    assert gate.open == 3
    # Another address is not affected, and the held connections still work.
    other = await Client.open(port, "127.0.0.2")
    await other.send(REQUEST)
    assert (await other.response()).endswith(b"hello")
    await held[0].send(REQUEST)
    assert (await held[0].response()).endswith(b"hello")
    # A closed connection frees its place.
    held[1].close()
    await wait_for(lambda: gate.open == 3)  # two held, one from 127.0.0.2
    again = await Client.open(port)
    await again.send(REQUEST)
    assert (await again.response()).endswith(b"hello")
    for client in (*held, other, again):
        client.close()
    await wait_for(lambda: gate.open == 0)


async def test_headers_not_finished_in_time_are_cut(serve) -> None:
    gate, port = await serve(ConnectionLimits(total=100, per_address=0, header_timeout=1))
    slow = await Client.open(port)
    await slow.send(PARTIAL)
    silent = await Client.open(port)
    prompt = await Client.open(port)
    await prompt.send(REQUEST)
    assert (await prompt.response()).endswith(b"hello")

    async def trickle() -> None:
        # One header line at a time: the deadline is for the whole block, not for each read.
        for _ in range(100):
            await asyncio.sleep(0.2)
            await slow.send(b"X-Slow: 1\r\n")

    trickling = asyncio.create_task(trickle())
    assert await slow.closed_by_server() == b""
    assert await silent.closed_by_server() == b""
    trickling.cancel()
    await asyncio.gather(trickling, return_exceptions=True)
    # The prompt client is past its first request: its idle time is aiohttp's keep-alive.
    await prompt.send(REQUEST)
    assert (await prompt.response()).endswith(b"hello")
    prompt.close()
    await wait_for(lambda: gate.open == 0)


async def test_when_full_the_oldest_waiting_connection_makes_room(serve) -> None:
    gate, port = await serve(ConnectionLimits(total=3, per_address=0, header_timeout=60))
    slow = []
    for _ in range(3):
        client = await Client.open(port)
        await client.send(PARTIAL)
        slow.append(client)
    await wait_for(lambda: gate.open == 3)
    newcomer = await Client.open(port, "127.0.0.2")
    await newcomer.send(REQUEST)
    assert (await newcomer.response()).endswith(b"hello")
    assert await slow[0].closed_by_server() == b""  # the oldest of the slow ones
    # The other two are still open: they take a request once they finish their headers.
    for client in slow[1:]:
        await client.send(b"\r\n")
        assert (await client.response()).endswith(b"hello")
    # Now every place holds a connection that has made a request: nobody gives way.
    refused = await Client.open(port, "127.0.0.3")
    answer = await refused.closed_by_server()
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nServer: meetnow\r\n" in answer
    for client in (*slow, newcomer):
        client.close()
    await wait_for(lambda: gate.open == 0)


@pytest.mark.parametrize(
    ("peername", "key"),
    [
        (("203.0.113.7", 50000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 443, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 443, 0, 0), "2001:db8:1:2::/64"),  # same /64, same client
        (("::ffff:198.51.100.4", 1, 0, 0), "198.51.100.4"),
        (("fe80::1%eth0", 1, 0, 2), "fe80::/64"),
        ("", "local"),
        (None, "local"),
    ],
)
def test_client_key(peername: object, key: str) -> None:
    assert client_key(peername) == key
