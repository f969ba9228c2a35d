"""The Discord end of the outbox: posts, status edits and recording replies over REST.

These calls go through a small client of our own rather than discord.py's, on purpose: the
outbox owns retrying. discord.py sleeps through rate limits (up to its 30 s minimum cap) and
re-sends on 5xx inside one call, which would stall every platform's deliveries behind one
Discord call and, for a post, could send it twice. Here each Discord answer maps to exactly
one outbox outcome: 429 -> Retry(after=retry_after), 5xx and network trouble -> Retry,
other 4xx (Missing Access, Unknown Channel...) -> GiveUp, logged once by the outbox.
Posts carry a nonce with ``enforce_nonce``, so a retry after a lost response is answered with
the message already made instead of a second one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp
import discord

from bot.text import recording_expiring_text, recording_ready_text
from meeting.config import DiscordConfig
from meeting.outbox import (
    ANNOUNCE, RECORDING_EXPIRING, RECORDING_READY, STATUS, ChatPost, Delivered, Delivery, GiveUp,
    OutboxEntry, Retry,
)
from meeting.service import MeetingService

from .discord_render import NO_MENTIONS, escape, meeting_embed, meeting_message

PLATFORM = "discord"
USER_AGENT = f"DiscordBot (https://github.com/Rapptz/discord.py, {discord.__version__}) meetnow"
REQUEST_TIMEOUT_S = 15.0
# 401 may be fixed by a new token and a restart; 408 is a timeout. Other 4xx will not change.
_RETRYABLE_4XX = {401, 408}


class DiscordApiError(Exception):
    """A non-2xx answer from Discord's REST API."""

    def __init__(self, status: int, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """Short, log-safe: Discord's message and JSON error code, e.g. ``Missing Access (50001)``."""
        return f"{self.message} ({self.code})" if self.code else f"HTTP {self.status} {self.message}".strip()


def outcome(error: DiscordApiError) -> Delivery:
    """What the outbox should do after Discord refused a delivery."""
    if error.status == 429:
        return Retry(error.reason, after=error.retry_after)
    if error.status >= 500 or error.status in _RETRYABLE_4XX:
        return Retry(error.reason)
    return GiveUp(error.reason)


class DiscordRest:
    """Just the REST calls the outbox makes, against the configured API base."""

    def __init__(self, config: DiscordConfig) -> None:
        self.base = config.api_url.rstrip("/")
        self._token = config.token
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send ``body`` as JSON; return Discord's JSON answer or raise DiscordApiError."""
        session = self._session_for_loop()
        headers = {"Authorization": f"Bot {self._token}", "User-Agent": USER_AGENT}
        async with session.request(method, self.base + path, json=body, headers=headers) as response:
            text = await response.text()
            data = _json_or_none(text)
            if 200 <= response.status < 300:
                return data if isinstance(data, dict) else {}
            raise _error(response, data, text)

    async def close(self) -> None:
        """Close the HTTP session; a later call opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        return self._session


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _error(response: aiohttp.ClientResponse, data: Any, text: str) -> DiscordApiError:
    body = data if isinstance(data, dict) else {}
    retry_after: float | None = None
    if response.status == 429:
        # The body's retry_after is precise (float seconds); the header is the fallback.
        raw = body.get("retry_after", response.headers.get("Retry-After"))
        try:
            retry_after = max(0.0, float(raw)) if raw is not None else None
        except (TypeError, ValueError):
            retry_after = None
    message = str(body.get("message") or text[:80] or response.reason or "")
    code = body.get("code") if isinstance(body.get("code"), int) else 0
    return DiscordApiError(response.status, code, message, retry_after)


def nonce(event_key: str) -> dict[str, Any]:
    """A stable nonce per outbox entry; Discord returns the earlier message for a repeat."""
    return {"nonce": hashlib.sha256(event_key.encode()).hexdigest()[:25], "enforce_nonce": True}


class DiscordCourier:
    """Says outbox entries in Discord: the meeting's message, its status edits, recording replies."""

    platform = PLATFORM

    def __init__(self, rest: DiscordRest, meetings: MeetingService) -> None:
        self.rest = rest
        self.meetings = meetings

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        """Make one delivery attempt; Discord's refusals become Retry or GiveUp."""
        try:
            if entry.kind == ANNOUNCE:
                return await self._announce(entry)
            if post is None:  # the outbox only hands over edits and replies once a post exists
                return GiveUp("no meeting message to edit or reply to")
            if entry.kind == STATUS:
                return await self._edit_status(entry, post)
            if entry.kind in (RECORDING_READY, RECORDING_EXPIRING):
                return await self._reply_recording(entry, post)
            return GiveUp(f"unknown entry kind {entry.kind}")
        except DiscordApiError as error:
            return outcome(error)

    async def _announce(self, entry: OutboxEntry) -> Delivery:
        payload = entry.payload
        channel_id = str(payload["channel_id"])
        posted = (payload.get("reply") or {}).get("message_id")
        if posted:
            # The interaction reply already is the meeting's message: record it, post nothing.
            return Delivered(ChatPost(entry.meeting_id, PLATFORM, channel_id, str(posted)))
        body = meeting_message(payload["title"], payload["url"]) | nonce(entry.event_key)
        message = await self.rest.call("POST", f"/channels/{channel_id}/messages", body)
        return Delivered(ChatPost(entry.meeting_id, PLATFORM, channel_id, str(message["id"])))

    async def _edit_status(self, entry: OutboxEntry, post: ChatPost) -> Delivery:
        meeting = await self.meetings.get(entry.meeting_id)
        if meeting is None:
            return GiveUp("meeting not found")
        embed = meeting_embed(meeting.title, self.meetings.join_url(meeting.id), entry.payload)
        # Interaction replies are authored by the bot user, so the channel endpoint can edit
        # them (View Channel is all it needs) long after the 15-minute interaction token.
        await self.rest.call("PATCH", f"/channels/{post.channel_id}/messages/{post.message_ref}",
                             {"embeds": [embed], "allowed_mentions": NO_MENTIONS})
        return Delivered()

    async def _reply_recording(self, entry: OutboxEntry, post: ChatPost) -> Delivery:
        payload = entry.payload
        render = recording_ready_text if entry.kind == RECORDING_READY else recording_expiring_text
        body = {
            "content": render(payload["title"], payload["url"], payload["delete_on"], escape=escape),
            # Still said (as a plain message) if the meeting's message was deleted.
            "message_reference": {"message_id": post.message_ref, "channel_id": post.channel_id,
                                  "fail_if_not_exists": False},
            "allowed_mentions": NO_MENTIONS,
        } | nonce(entry.event_key)
        await self.rest.call("POST", f"/channels/{post.channel_id}/messages", body)
        return Delivered()
