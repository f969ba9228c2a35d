"""A small stand-in for Slack on 127.0.0.1 (or ``host``): Web API, response_url, and a Socket Mode websocket.

It speaks just enough of Slack for the real slack-bolt and slack_sdk to run unmodified:
Bearer-token checks, ``{"ok": ...}`` bodies, HTTP 429 with Retry-After, and Socket Mode
envelopes. Everything it receives is recorded for tests to inspect; bench/command.py runs it
as the Slack side of the ``/meetnow`` benchmark.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
SIGNING_SECRET = "fake-signing-secret"
TEAM_ID = "T0FAKE"
BOT_USER_ID = "U0BOT"

APP_TOKEN_METHODS = {"apps.connections.open"}


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived
    ok: bool = True
    error: str = ""


@dataclass
class Failure:
    error: str
    status: int = 200
    retry_after: str | None = None
    times: int = 1
    drop: bool = False  # close the connection without answering (a network error)


@dataclass
class FakeSlack:
    """The fake. ``await start()``, point ``api_url`` at it, ``await close()`` at the end."""

    bot_token: str = BOT_TOKEN
    app_token: str = APP_TOKEN
    calls: list[ApiCall] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # bodies posted to response_urls
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # Socket Mode: envelope_id -> ack
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    host: str = "127.0.0.1"  # the address it listens on (another, for servers in other namespaces)

    def __post_init__(self) -> None:
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> "FakeSlack":
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/stats", self._stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    def response_url(self, name: str = "r1") -> str:
        return f"http://{self.host}:{self.port}/response/{name}"

    # -- scripting and inspection -------------------------------------------------------

    def fail(self, method: str, error: str, status: int = 200, retry_after: str | None = None,
             times: int = 1, drop: bool = False) -> None:
        """Make the next ``times`` calls of ``method`` fail this way."""
        self.failures.setdefault(method, []).append(Failure(error, status, retry_after, times, drop))

    def done(self, method: str) -> list[dict[str, Any]]:
        """Arguments of the successful calls of ``method``, in order."""
        return [c.args for c in self.calls if c.method == method and c.ok]

    def attempts(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    # -- Web API ------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await _read_args(request)
        call = ApiCall(method, args, dict(request.headers), time.monotonic())
        self.calls.append(call)
        failure = self._next_failure(method)
        if failure is not None:
            call.ok, call.error = False, failure.error
            if failure.drop:
                assert request.transport is not None
                request.transport.close()
                raise asyncio.CancelledError()  # the client sees the connection reset
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            if failure.status >= 500:
                return web.Response(status=failure.status, text="<html>bad gateway</html>",
                                    content_type="text/html", headers=headers)
            return web.json_response({"ok": False, "error": failure.error}, status=failure.status,
                                     headers=headers)
        expected = self.app_token if method in APP_TOKEN_METHODS else self.bot_token
        if request.headers.get("Authorization") != f"Bearer {expected}":
            call.ok, call.error = False, "invalid_auth"
            return web.json_response({"ok": False, "error": "invalid_auth"})
        return web.json_response({"ok": True, **self._answer(method, args)})

    def _next_failure(self, method: str) -> Failure | None:
        queue = self.failures.get(method) or []
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"url": "https://fake.slack.test/", "team": "Fake", "user": "meetnow",
                    "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": "B0BOT"}
        if method in ("chat.postMessage", "chat.update"):
            ts = args.get("ts") or f"1700000000.{next(self._ts):06d}"
            return {"channel": args.get("channel", ""), "ts": ts, "message": {"text": args.get("text", "")}}
        if method == "calls.add":
            return {"call": {"id": f"R{next(self._ids):05d}", "join_url": args.get("join_url", "")}}
        if method == "apps.connections.open":
            return {"url": f"ws://{self.host}:{self.port}/socket"}
        return {}

    async def _stats(self, request: web.Request) -> web.Response:
        """Successful calls per method, for a benchmark in another process."""
        counts: dict[str, int] = {}
        for call in self.calls:
            if call.ok:
                counts[call.method] = counts.get(call.method, 0) + 1
        return web.json_response(counts)

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"name": request.match_info["name"], **body})
        return web.Response(text="ok")

    # -- Socket Mode --------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                            "connection_info": {"app_id": "A0FAKE"}})
        self._connected.set()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    data = json.loads(message.data)
                    if "envelope_id" in data:
                        self.acks[data["envelope_id"]] = data.get("payload") or {}
        finally:
            self._sockets.remove(ws)
        return ws

    async def send_envelope(self, payload: dict[str, Any], kind: str = "slash_commands") -> str:
        """Send an envelope over the open Socket Mode connection; returns its id."""
        await asyncio.wait_for(self._connected.wait(), 5)
        envelope_id = f"env-{next(self._ids)}"
        await self._sockets[-1].send_json({"envelope_id": envelope_id, "type": kind,
                                           "accepts_response_payload": True, "payload": payload})
        return envelope_id

    async def send_disconnect(self) -> None:
        """Ask the client to reconnect, as Slack does before it recycles a connection."""
        self._connected.clear()
        await self._sockets[-1].send_json({"type": "disconnect", "reason": "refresh_requested"})

    @property
    def socket_connected(self) -> bool:
        return bool(self._sockets)


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Arguments as the SDK sends them: query string, form body or JSON body."""
    args: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        args.update(await request.json())
    elif request.can_read_body:
        args.update(await request.post())
    for key in ("users", "blocks"):  # form-encoded lists arrive as JSON text
        if isinstance(args.get(key), str):
            args[key] = json.loads(args[key])
    return args


# -- what Slack sends us ----------------------------------------------------------------


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack puts on a request: v0 HMAC-SHA256 over ``v0:{ts}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def command_payload(text: str = "", *, response_url: str, channel_id: str = "C0GENERAL",
                    channel_name: str = "general", user_id: str = "U0ALICE", user_name: str = "alice",
                    trigger_id: str | None = None) -> dict[str, str]:
    """A /meetnow slash command as Slack sends it."""
    return {
        "token": "deprecated-verification-token", "team_id": TEAM_ID, "team_domain": "fake",
        "channel_id": channel_id, "channel_name": channel_name, "user_id": user_id,
        "user_name": user_name, "command": "/meetnow", "text": text, "api_app_id": "A0FAKE",
        "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": trigger_id or f"trig.{time.monotonic_ns()}",
    }


def form(payload: dict[str, str]) -> str:
    return urllib.parse.urlencode(payload)
