"""A local stand-in for Discord: the REST API and the gateway websocket, on 127.0.0.1.

It speaks just enough of both for the real, unmodified discord.py to log in, sync commands,
receive interactions and answer them, and for the outbox's REST calls. Everything it is
sent is recorded for the tests to inspect; failures are scripted per request.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

TOKEN = "fake-bot-token"
APP_ID = "1100000000000000001"
BOT_ID = "1100000000000000002"
GUILD_ID = "1200000000000000001"
CHANNEL_ID = "1300000000000000001"
THREAD_ID = "1300000000000000002"
DM_CHANNEL_ID = "1300000000000000003"
USER_ID = "1400000000000000001"

BOT_USER = {"id": BOT_ID, "username": "meetnow", "discriminator": "0000", "avatar": None,
            "bot": True, "global_name": None}
USER = {"id": USER_ID, "username": "ann", "discriminator": "0", "avatar": None,
        "global_name": "Ann Example"}

ERRORS = {
    "missing_access": (403, 50001, "Missing Access"),
    "unknown_channel": (404, 10003, "Unknown Channel"),
    "unknown_message": (404, 10008, "Unknown Message"),
    "server_error": (500, 0, "500: Internal Server Error"),
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)


@dataclass
class Scripted:
    """One scripted answer for the next request matching ``method`` and ``pattern``."""

    method: str
    pattern: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    # When set, the request is carried out and only its answer is replaced (a lost response).
    after_effect: bool = False


@dataclass
class Interaction:
    id: str
    token: str
    channel_id: str
    original: dict[str, Any] | None = None


class FakeGatewayConnection:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send_str(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))


class FakeDiscord:
    """The fake REST API under ``/api/v10`` and the gateway at ``/gateway``."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: list[Request] = []
        self.script: list[Scripted] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.edits: list[tuple[str, dict[str, Any]]] = []  # (message id, body)
        self.followups: list[dict[str, Any]] = []
        self.callbacks_by_interaction: list[tuple[str, dict[str, Any]]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> commands
        self.identifies: list[dict[str, Any]] = []
        self.ready_sent = 0
        self.resumes: list[dict[str, Any]] = []
        self.connections: list[FakeGatewayConnection] = []
        self.interactions: dict[str, Interaction] = {}
        self._nonces: dict[tuple[str, str], str] = {}
        self._ids = itertools.count(1500000000000000001)
        self._server: TestServer | None = None

    # ---- lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()

    async def close(self) -> None:
        for connection in self.connections:
            await connection.ws.close()
        if self._server is not None:
            await self._server.close()

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/gateway"

    # ---- scripting and inspection

    def fail_next(self, method: str, pattern: str, error: str = "", *, status: int = 0,
                  body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                  after_effect: bool = False) -> None:
        """Answer the next ``method`` request whose path matches ``pattern`` with an error."""
        if error:
            status, code, message = ERRORS[error]
            body = {"message": message, "code": code}
        self.script.append(Scripted(method, pattern, status, body or {}, headers or {}, after_effect))

    def rate_limit_next(self, method: str, pattern: str, retry_after: float) -> None:
        """A 429 the way Discord sends it: JSON body, Retry-After, bucket headers, ``Via``."""
        self.fail_next(method, pattern, status=429,
                       body={"message": "You are being rate limited.", "retry_after": retry_after,
                             "global": False},
                       headers={"Retry-After": str(max(1, round(retry_after))), "Via": "1.1 google",
                                "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset-After": str(retry_after),
                                "X-RateLimit-Bucket": "fakebucket", "X-RateLimit-Scope": "user"})

    def posts(self, channel_id: str) -> list[dict[str, Any]]:
        """Messages the bot posted with ``POST /channels/{id}/messages`` (not replies to interactions)."""
        return [m for m in self.messages.values()
                if m["channel_id"] == channel_id and m.get("_source") == "channel"]

    def requests_to(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # ---- gateway

    @property
    def connection(self) -> FakeGatewayConnection:
        return self.connections[-1]

    async def send_interaction(self, data: dict[str, Any]) -> None:
        """Dispatch INTERACTION_CREATE on the current gateway connection."""
        channel = data.get("channel") or {}
        self.interactions[data["id"]] = Interaction(data["id"], data["token"], channel.get("id", ""))
        await self.connection.dispatch("INTERACTION_CREATE", data)

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the gateway connection the way Discord does before asking for a resume."""
        await self.connection.ws.close(code=code, message=b"fake gateway restart")

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = FakeGatewayConnection(ws)
        self.connections.append(connection)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            await self._on_gateway_message(connection, message)
        return ws

    async def _on_gateway_message(self, connection: FakeGatewayConnection, message: dict[str, Any]) -> None:
        op, data = message.get("op"), message.get("d")
        if op == 1:
            await connection.ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
        elif op == 2:
            self.identifies.append(data)
            await connection.dispatch("READY", {
                "v": 10, "user": BOT_USER, "guilds": [], "session_id": "fake-session",
                "resume_gateway_url": self.gateway_url, "application": {"id": APP_ID, "flags": 0},
            })
            self.ready_sent += 1
        elif op == 6:
            self.resumes.append(data)
            connection.seq = data.get("seq") or 0
            await connection.dispatch("RESUMED", {})

    # ---- REST

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await _body(request)
        self.requests.append(Request(request.method, path, dict(request.query), body, dict(request.headers)))
        needs_auth = not path.startswith(("/interactions/", "/webhooks/"))
        if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        scripted = self._scripted(request.method, path)
        if scripted is not None and not scripted.after_effect:
            return _json(scripted.body, scripted.status, scripted.headers)
        response = self._route(request.method, path, body or {})
        if scripted is not None:
            return _json(scripted.body, scripted.status, scripted.headers)
        return response

    def _scripted(self, method: str, path: str) -> Scripted | None:
        for index, scripted in enumerate(self.script):
            if scripted.method == method and re.fullmatch(scripted.pattern, path):
                return self.script.pop(index)
        return None

    def _route(self, method: str, path: str, body: dict[str, Any]) -> web.Response:
        routes = [
            ("GET", r"/users/@me", self._me),
            ("GET", r"/oauth2/applications/@me", self._application),
            ("PUT", r"/applications/(?P<app>\d+)/commands", self._sync_global),
            ("PUT", r"/applications/(?P<app>\d+)/guilds/(?P<guild>\d+)/commands", self._sync_guild),
            ("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._callback),
            ("POST", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)", self._followup),
            ("GET", r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)/messages/@original", self._original),
            ("POST", r"/channels/(?P<channel>\d+)/messages", self._post),
            ("PATCH", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", self._edit),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                return handler(body, **match.groupdict())
        return _json({"message": "404: Not Found", "code": 0}, 404)

    def _me(self, body: dict[str, Any]) -> web.Response:
        return _json(BOT_USER)

    def _application(self, body: dict[str, Any]) -> web.Response:
        return _json({
            "id": APP_ID, "name": "meetnow", "description": "", "icon": None, "bot_public": True,
            "bot_require_code_grant": False, "owner": {**USER}, "verify_key": "00" * 32, "flags": 0,
        })

    def _sync_global(self, body: Any, app: str) -> web.Response:
        self.commands["global"] = body
        return _json(self._command_payloads(body, None))

    def _sync_guild(self, body: Any, app: str, guild: str) -> web.Response:
        self.commands[guild] = body
        return _json(self._command_payloads(body, guild))

    def _command_payloads(self, body: Any, guild: str | None) -> list[dict[str, Any]]:
        out = []
        for command in body:
            payload = {"id": str(next(self._ids)), "application_id": APP_ID, "version": "1",
                       "default_member_permissions": None, **command}
            if guild:
                payload["guild_id"] = guild
            out.append(payload)
        return out

    def _callback(self, body: dict[str, Any], id: str, token: str) -> web.Response:
        interaction = self.interactions.get(id)
        if interaction is None or interaction.token != token:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        if interaction.original is not None:
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, 400)
        self.callbacks_by_interaction.append((id, body))
        data = body.get("data") or {}
        message = self._message(interaction.channel_id, data, "interaction", webhook_id=APP_ID)
        interaction.original = message
        return _json({
            "interaction": {"id": id, "type": 2, "response_message_id": message["id"],
                            "response_message_loading": False,
                            "response_message_ephemeral": bool(data.get("flags", 0) & 64)},
            "resource": {"type": body.get("type"), "message": _public(message)},
        })

    def _followup(self, body: dict[str, Any], app: str, token: str) -> web.Response:
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        if interaction is None or interaction.original is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        self.followups.append(body)
        message = self._message(interaction.channel_id, body, "followup", webhook_id=APP_ID)
        return _json(_public(message))

    def _original(self, body: dict[str, Any], app: str, token: str) -> web.Response:
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        if interaction is None or interaction.original is None:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        return _json(_public(interaction.original))

    def _post(self, body: dict[str, Any], channel: str) -> web.Response:
        # Discord's enforce_nonce: the same author and nonce within minutes get the first message.
        key = (channel, str(body.get("nonce")))
        if body.get("enforce_nonce") and key in self._nonces:
            return _json(_public(self.messages[self._nonces[key]]))
        message = self._message(channel, body, "channel")
        if body.get("enforce_nonce"):
            self._nonces[key] = message["id"]
        return _json(_public(message))

    def _edit(self, body: dict[str, Any], channel: str, message: str) -> web.Response:
        stored = self.messages.get(message)
        if stored is None or stored["channel_id"] != channel:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if stored["author"]["id"] != BOT_ID:
            return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, 403)
        for key in ("content", "embeds", "components"):
            if key in body:
                stored[key] = body[key]
        self.edits.append((message, body))
        return _json(_public(stored))

    def _message(self, channel_id: str, body: dict[str, Any], source: str,
                 webhook_id: str | None = None) -> dict[str, Any]:
        message_id = str(next(self._ids))
        message: dict[str, Any] = {
            "id": message_id, "channel_id": channel_id, "type": 19 if body.get("message_reference") else 0,
            "content": body.get("content", ""), "author": BOT_USER, "embeds": body.get("embeds", []),
            "components": body.get("components", []), "attachments": [], "mentions": [],
            "mention_roles": [], "mention_everyone": False, "pinned": False, "tts": False,
            "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": None,
            "flags": body.get("flags", 0), "_source": source,
        }
        if webhook_id:
            message["webhook_id"] = webhook_id
        if body.get("message_reference"):
            message["message_reference"] = body["message_reference"]
        if body.get("nonce"):
            message["nonce"] = body["nonce"]
        self.messages[message_id] = message
        return message


async def _body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except ValueError:
        return None


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly application/json (no charset).
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


# ---- interaction payloads

_ids = itertools.count(1600000000000000001)


def guild_channel(channel_id: str = CHANNEL_ID, name: str = "general") -> dict[str, Any]:
    return {"id": channel_id, "type": 0, "guild_id": GUILD_ID, "name": name, "position": 0,
            "permission_overwrites": [], "nsfw": False, "parent_id": None, "flags": 0}


def thread_channel(thread_id: str = THREAD_ID) -> dict[str, Any]:
    return {"id": thread_id, "type": 11, "guild_id": GUILD_ID, "name": "planning", "parent_id": CHANNEL_ID,
            "owner_id": USER_ID, "flags": 0, "rate_limit_per_user": 0, "message_count": 1,
            "member_count": 1, "total_message_sent": 1,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                "archive_timestamp": "2026-01-01T00:00:00.000000+00:00", "locked": False}}


def dm_channel() -> dict[str, Any]:
    return {"id": DM_CHANNEL_ID, "type": 1, "recipients": [USER], "flags": 0}


def command_interaction(options: list[dict[str, Any]] | None = None, *, name: str = "meetnow",
                        channel: dict[str, Any] | None = None, dm: bool = False) -> dict[str, Any]:
    """An INTERACTION_CREATE payload for a chat-input command, in a guild channel or a DM."""
    interaction_id = str(next(_ids))
    channel = channel or (dm_channel() if dm else guild_channel())
    data: dict[str, Any] = {
        "id": interaction_id, "application_id": APP_ID, "type": 2, "token": f"itoken-{interaction_id}",
        "version": 1, "attachment_size_limit": 8388608, "locale": "en-US", "app_permissions": "0",
        "entitlements": [], "authorizing_integration_owners": {"0": GUILD_ID} if not dm else {"0": USER_ID},
        "context": 1 if dm else 0, "channel_id": channel["id"], "channel": channel,
        "data": {"id": "1700000000000000001", "name": name, "type": 1, "options": options or []},
    }
    if dm:
        data["user"] = USER
    else:
        data["guild_id"] = GUILD_ID
        data["guild_locale"] = "en-US"
        data["member"] = {"user": USER, "roles": [], "flags": 0, "nick": None, "avatar": None,
                          "joined_at": "2025-01-01T00:00:00.000000+00:00", "deaf": False, "mute": False,
                          "permissions": "2248473465835073"}
    return data


def option(name: str, value: Any, type: int) -> dict[str, Any]:
    """A command option: type 3 string, 4 integer, 5 boolean."""
    return {"name": name, "type": type, "value": value}
