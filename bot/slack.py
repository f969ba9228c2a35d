"""Slack adapter: ``/meetnow`` over HTTP or Socket Mode, delivered through the outbox.

Thin by design: ``slack_requests`` verifies each HTTP request, bolt parses and routes,
``meeting`` mints and decides what the channel hears, and ``slack_courier`` says it in Slack.
Only the person who typed the command ever sees a host link: it travels in the command's
ephemeral answer, never in a channel post.
"""

from __future__ import annotations

import asyncio
import html
import logging
import urllib.parse
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from meeting import ids
from meeting.announcer import Announcer
from meeting.config import SlackConfig
from meeting.logfmt import kv
from meeting.models import Origin
from meeting.outbox import Outbox
from meeting.service import MeetingService, MintedMeeting, cut_title

from . import text
from . import slack_blocks as blocks
from .slack_blocks import JOIN_ACTION
from .slack_courier import NETWORK_ERRORS, TRANSIENT_ERRORS, SlackCourier, slack_error, tell_privately
from .slack_requests import MemorySeenSignatures, SeenSignatures, SlackRequestCheck

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
COMMAND = "/meetnow"
API_TIMEOUT_S = 10  # the outbox delivers one entry at a time: a hung call must not stall it
CONNECT_WAIT_S = 5.0  # how long start() waits for Socket Mode before letting the server go on
RECENT_INVOCATIONS = 256
# Slack names these conversations generically; a standing room there gets a plain title.
GENERIC_CHANNEL_NAMES = ("directmessage", "privategroup")

Ack = Callable[..., Awaitable[Any]]


def quiet_logger(name: str) -> logging.Logger:
    """A logger for the Slack libraries that never emits DEBUG.

    At DEBUG, bolt and the Socket Mode client print whole response bodies, and the
    command's answer carries a host link; the Web API client formats every request for
    DEBUG unless its logger's own level says otherwise.
    """
    logger = log.getChild(name)
    logger.setLevel(logging.INFO)
    return logger


def api_base_url(url: str) -> str:
    """The Web API base URL as the SDK needs it: it appends method names, so end with "/"."""
    return url if url.endswith("/") else url + "/"


def make_client(config: SlackConfig, token: str | None) -> AsyncWebClient:
    """A Web API client on the configured base URL.

    ``retry_handlers=[]`` turns off the SDK's own retry on connection errors: the outbox
    retries, and a second try inside the SDK could post a message twice.
    """
    return AsyncWebClient(token=token, base_url=api_base_url(config.api_url), timeout=API_TIMEOUT_S,
                          retry_handlers=[], logger=quiet_logger("web"))


def is_ssl_check(body: bytes) -> bool:
    """Slack's ``ssl_check=1`` probe (form-encoded, as bolt recognises it)."""
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return False
    return fields.get("ssl_check") == ["1"]


def standing_room_title(channel_name: str) -> str:
    """The title a channel's standing room gets when it is first made."""
    if not channel_name or channel_name in GENERIC_CHANNEL_NAMES or channel_name.startswith("mpdm-"):
        return "Channel meeting"
    return cut_title(f"#{channel_name}")


class SlackBot:
    """The Slack side of meetnow: slash command in, channel messages out."""

    platform = "slack"

    def __init__(self, config: SlackConfig, meetings: MeetingService, announcer: Announcer,
                 outbox: Outbox, seen: SeenSignatures | None = None) -> None:
        self.config = config
        self.meetings = meetings
        self.announcer = announcer
        # ``seen`` is where used request signatures are remembered; pass a shared store when
        # several processes serve the same endpoint.
        self.requests = SlackRequestCheck(config.signing_secret, seen or MemorySeenSignatures())
        self.client = make_client(config, config.bot_token)
        self.courier = SlackCourier(self.client, calls=config.calls)
        outbox.register(self.courier)
        self.app = self._make_app()
        self.socket: AsyncSocketModeHandler | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._owns_session = False
        self._identity: dict[str, str] = {}  # the bot's user and bot ids, from auth.test
        self._announcing: set[asyncio.Task[None]] = set()
        # Socket Mode may hand us the same envelope again if our answer was slow; the same
        # invocation then gets the same meeting rather than a second one nobody announced.
        self._recent: OrderedDict[str, MintedMeeting] = OrderedDict()

    def _make_app(self) -> AsyncApp:
        """Bolt, verifying signatures with the signing secret and routing our listeners."""

        async def authorize(enterprise_id: str | None, team_id: str | None,
                            user_id: str | None) -> AuthorizeResult:
            # bolt passes arguments by parameter name, which a bound method's "self" confuses.
            return self._authorize(enterprise_id, team_id, user_id)

        # process_before_response: the answer leaves when the listener returns. The listener
        # only mints in the local store (about a millisecond) and hands the channel post to a
        # task; this spares bolt's 10 ms ack() polling on every command.
        # request_verification_enabled=False: handle_http has checked signature, age and
        # replay before bolt sees a request (bolt's own check would log a refused request's
        # whole body, response_url included). Socket Mode has no signatures to check.
        app = AsyncApp(client=make_client(self.config, None), authorize=authorize,
                       signing_secret=self.config.signing_secret, process_before_response=True,
                       request_verification_enabled=False, name="meetnow", logger=quiet_logger("bolt"))
        app.command(COMMAND)(self._on_command)
        app.action(JOIN_ACTION)(self._on_join_click)
        return app

    # -- lifecycle ----------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        """Mount bolt at POST /slack/events, unless Socket Mode carries the commands."""
        if self.config.socket_mode:
            return
        if not self.config.signing_secret:
            # With an empty secret anyone could sign requests: refuse to listen at all.
            log.error("slack http endpoint not mounted %s",
                      kv(reason="slack.signing_secret is empty", path=EVENTS_PATH))
            return
        app.router.add_post(EVENTS_PATH, self.handle_http)

    async def start(self) -> None:
        """Check the bot token and connect Socket Mode if configured; never raises."""
        if self.client.session is None or self.client.session.closed:
            # One pooled session for every API call instead of a new connection per call.
            self.client.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S))
            self._owns_session = True
        try:
            await self._check_bot_token()
            if self.config.socket_mode:
                await self._start_socket_mode()
        except Exception:  # a bug here must not take the web server down with it
            log.exception("slack start failed")

    async def stop(self) -> None:
        """Finish queueing announcements, disconnect Socket Mode, close the HTTP session."""
        if self._announcing:
            await asyncio.gather(*self._announcing, return_exceptions=True)
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        if self.socket is not None:
            try:
                await self.socket.close_async()
            except Exception:
                log.exception("slack socket mode close failed")
            self.socket = None
        if self._owns_session and self.client.session is not None:
            await self.client.session.close()
            self.client.session = None
            self._owns_session = False

    async def handle_http(self, request: web.Request) -> web.Response:
        """POST /slack/events: 401 unless signed by Slack, fresh and new; then bolt dispatches."""
        body = await request.read()
        if is_ssl_check(body):
            # Slack's certificate probe for the command URL: it carries no command, and
            # bolt answers it the same way, before any signature check.
            return web.Response(status=200)
        if await self.requests.refusal(request.headers, body) is not None:
            return web.json_response({"error": "invalid request"}, status=401)
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _check_bot_token(self) -> None:
        """auth.test once at start, so a wrong token is one clear line, not silence later.

        Commands keep working either way: people get their links, and each post that
        fails tells its person why through the command's response_url.
        """
        try:
            found = await self.client.auth_test()
            self._identity = {"bot_user_id": found.get("user_id") or "", "bot_id": found.get("bot_id") or ""}
            return
        except SlackApiError as exc:
            error = slack_error(exc)[0]
            if error not in TRANSIENT_ERRORS:
                log.error("slack bot token was refused; channel posts will fail %s",
                          kv(error=error, hint="check slack.bot_token (xoxb-...)"))
                return
        except NETWORK_ERRORS as exc:
            error = type(exc).__name__
        log.warning("slack not reachable at start; posts wait in the outbox %s", kv(error=error))

    def _authorize(self, enterprise_id: str | None, team_id: str | None,
                   user_id: str | None) -> AuthorizeResult:
        """Bolt's per-request authorization, answered locally.

        This is a single-workspace app with one bot token, so there is nothing to look up:
        without this bolt calls auth.test before its first command, and while Slack's API
        is unreachable every command would fail. Here commands keep working (the person
        gets their link) and the outbox posts once Slack answers again.
        """
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id,
                               bot_token=self.config.bot_token,
                               bot_user_id=self._identity.get("bot_user_id") or None,
                               bot_id=self._identity.get("bot_id") or None)

    async def _start_socket_mode(self) -> None:
        if not self.config.app_token:
            log.error("slack socket mode not started %s",
                      kv(reason="slack.app_token is empty", hint="an xapp-... app-level token"))
            return
        self.socket = AsyncSocketModeHandler(self.app, self.config.app_token, web_client=self.client,
                                             logger=quiet_logger("socket_mode"))
        self._connecting = asyncio.create_task(self._connect_socket_mode(), name="slack-socket-mode")
        # Wait a little so a healthy start is connected when start() returns; a slow or
        # unreachable Slack keeps trying in the background while the server serves.
        await asyncio.wait([self._connecting], timeout=CONNECT_WAIT_S)

    async def _connect_socket_mode(self) -> None:
        """Open a Socket Mode URL ourselves, then connect.

        The SDK's own connect() retries forever on any error, a revoked token included,
        logging a traceback each time; asking for the URL first turns a bad app token
        into one clear log line.
        """
        assert self.socket is not None
        delay = 1.0
        warned = False
        while True:
            try:
                opened = await self.client.apps_connections_open(app_token=self.config.app_token)
                self.socket.client.wss_uri = opened["url"]
                await self.socket.connect_async()
                log.info("slack socket mode connected")
                return
            except SlackApiError as exc:
                error, _, retry_after = slack_error(exc)
                if error not in TRANSIENT_ERRORS:
                    log.error("slack socket mode not started: the app token was refused %s",
                              kv(error=error, hint="check slack.app_token (xapp-..., connections:write)"))
                    return
                delay = max(delay, retry_after or 0.0)
                reason = error
            except NETWORK_ERRORS as exc:
                reason = type(exc).__name__
            if not warned:
                log.warning("slack socket mode cannot connect yet; retrying %s", kv(error=reason))
                warned = True
            await asyncio.sleep(delay)
            delay = min(60.0, delay * 2)

    # -- the slash command --------------------------------------------------------------

    async def _on_command(self, ack: Ack, command: dict[str, Any]) -> None:
        """``/meetnow [help | channel | <title>]``: answer privately, then announce."""
        # Slack sends command text with &, < and > escaped; the title is stored as typed.
        words = " ".join(html.unescape(command.get("text") or "").split())
        if words.lower() == "help":
            await ack(text=text.HELP, response_type="ephemeral")
            return
        invocation = self._invocation_id(command)
        try:
            minted = await self._mint(command, words, invocation)
        except Exception:
            log.exception("slack command failed %s", kv(team=command.get("team_id", "")))
            await ack(text="Sorry, I could not start a meeting just now. Please try again.",
                      response_type="ephemeral")
            return
        # The answer to the command is ephemeral: the host link is seen by this person only.
        await ack(text=text.host_link_text(minted.host_url), response_type="ephemeral")
        reply = {"response_url": command.get("response_url", ""), "user_id": command.get("user_id", "")}
        if minted.meeting.e2ee:
            # The link carries the meeting's key: posted straight away, never stored anywhere.
            task = asyncio.create_task(self._post_e2ee(minted, command))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
            return
        # Ack first, work after: the answer leaves when this listener returns, and the
        # channel post is queued right behind it (stop() waits for what is queued here).
        task = asyncio.create_task(self._announce(minted, invocation, reply))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self, minted: MintedMeeting, invocation: str, reply: dict[str, str]) -> None:
        try:
            await self.announcer.announce(minted, invocation, reply)
        except Exception:
            log.exception("slack announce failed %s", kv(meeting=ids.short(minted.meeting.id)))

    async def _post_e2ee(self, minted: MintedMeeting, command: dict[str, Any]) -> None:
        title, channel = minted.meeting.title, command.get("channel_id", "")
        try:
            await self.client.chat_postMessage(
                channel=channel, text=blocks.fallback_text(title, minted.url),
                blocks=blocks.meeting_blocks(title, minted.url, text.E2EE_STATUS,
                                             command.get("user_name", "")),
                unfurl_links=False, unfurl_media=False)
        except (SlackApiError, *NETWORK_ERRORS) as exc:
            reason = slack_error(exc)[0] if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning("slack e2ee post failed %s", kv(meeting=ids.short(minted.meeting.id), reason=reason))
            await tell_privately(self.client, command.get("response_url", ""),
                                 f"{text.cannot_post_text(reason)}\nShare this link yourself: {minted.url}")

    async def _mint(self, command: dict[str, Any], words: str, invocation: str) -> MintedMeeting:
        if invocation in self._recent:
            return self._recent[invocation]
        origin = Origin("slack", workspace_id=command.get("team_id", ""),
                        channel_id=command.get("channel_id", ""),
                        creator_name=command.get("user_name", ""))
        first, _, rest = words.partition(" ")
        if first.lower() == "e2ee":
            minted = MeetingService.with_media_key(
                await self.meetings.mint(cut_title(rest) or None, origin, e2ee=True))
        elif words.lower() == "channel":
            minted = await self.meetings.channel_room(
                origin, standing_room_title(command.get("channel_name", "")))
        else:
            minted = await self.meetings.mint(cut_title(words) or None, origin)
        self._recent[invocation] = minted
        while len(self._recent) > RECENT_INVOCATIONS:
            self._recent.popitem(last=False)
        return minted

    @staticmethod
    def _invocation_id(command: dict[str, Any]) -> str:
        """One id per typed command: Slack's trigger_id, unique to each invocation."""
        return f"slack:{command.get('trigger_id') or command.get('response_url') or ids.new_id()}"

    async def _on_join_click(self, ack: Ack) -> None:
        """The Join button opens the link in the browser; Slack still wants an ack."""
        await ack()
