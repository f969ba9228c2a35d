"""What web/aiohttp_shim.py relies on in aiohttp, so an upgrade that moves it fails here,
naming the attribute, rather than as a lost header or a traceback in production."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter

from web.aiohttp_shim import EdgeRequestHandler, request_handlers

HEADERS = {"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff",
           "Server": "meetnow"}


def _parameters(function: object, where: str) -> set[str]:
    assert callable(function), f"aiohttp changed: {where} is gone (see web/aiohttp_shim.py)"
    return set(inspect.signature(function).parameters)


def test_request_handler_takes_what_the_shim_passes() -> None:
    assert isinstance(getattr(web, "RequestHandler", None), type), (
        "aiohttp changed: aiohttp.web.RequestHandler is gone (see web/aiohttp_shim.py)")
    names = _parameters(web.RequestHandler.__init__, "RequestHandler.__init__")
    for name in ("manager", "loop", "keepalive_timeout", "lingering_time", "access_log_class"):
        assert name in names, (
            f"aiohttp changed: RequestHandler.__init__ has no '{name}' (see web/aiohttp_shim.py)")


def test_handle_error_has_the_overridden_signature() -> None:
    names = _parameters(getattr(web.RequestHandler, "handle_error", None),
                        "RequestHandler.handle_error")
    assert {"request", "status", "exc", "message"} <= names, (
        f"aiohttp changed: RequestHandler.handle_error takes {sorted(names)} "
        "(see web/aiohttp_shim.py)")


def test_log_exception_and_peername_are_there() -> None:
    names = _parameters(getattr(web.RequestHandler, "log_exception", None),
                        "RequestHandler.log_exception")
    assert any(inspect.signature(web.RequestHandler.log_exception).parameters[n].kind
               is inspect.Parameter.VAR_KEYWORD for n in names), (
        "aiohttp changed: RequestHandler.log_exception takes no exc_info (see web/aiohttp_shim.py)")
    assert hasattr(web.RequestHandler, "peername"), (
        "aiohttp changed: RequestHandler.peername is gone (see web/aiohttp_shim.py)")


def test_writer_reports_output_size() -> None:
    assert isinstance(getattr(web.BaseRequest, "writer", None), property), (
        "aiohttp changed: BaseRequest.writer is gone (see web/aiohttp_shim.py)")
    assert isinstance(getattr(StreamWriter, "output_size", None), int), (
        "aiohttp changed: StreamWriter.output_size is gone (see web/aiohttp_shim.py)")


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\x00x HTTP/1.1\r\nHost: a\r\n\r\n",  # NUL in the path
        b"BAD\x01 / HTTP/1.1\r\n\r\n",  # not a request line
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",  # header too long
    ],
)
async def test_parser_errors_reach_the_override(request_bytes: bytes,
                                                caplog: pytest.LogCaptureFixture) -> None:
    async def never(request: web.Request) -> web.Response:
        raise AssertionError("the application must not see a refused request")

    app = web.Application()
    app.router.add_get("/", never)
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    listener = await asyncio.get_running_loop().create_server(
        request_handlers(runner.server, HEADERS), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.INFO):
            answer = await _raw(port, request_bytes)
    finally:
        listener.close()
        await runner.cleanup()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], (
        "aiohttp changed: its parser errors no longer come through RequestHandler.handle_error "
        "(see web/aiohttp_shim.py)")
    lines = head.decode("latin-1").split("\r\n")
    assert "Content-Security-Policy: default-src 'self'" in lines
    assert "X-Content-Type-Options: nosniff" in lines
    assert "Server: meetnow" in lines
    assert b"aiohttp" not in answer.lower()
    assert body == b"400 Bad Request\n"
    assert not [r for r in caplog.records if r.exc_info]
    assert any(r.getMessage().startswith("refused request remote=127.0.0.1 status=400")
               for r in caplog.records)


def test_edge_handler_is_a_request_handler() -> None:
    assert issubclass(EdgeRequestHandler, web.RequestHandler)
