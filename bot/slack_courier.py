"""Slack's delivery end of the outbox: post, edit, reply in thread, and drive call cards.

The outbox decides when to try; this decides how a Slack answer maps to Delivered, Retry
or GiveUp. The Web API client given here must have no retry handlers of its own: a retry
inside the SDK would hide ``ratelimited`` from the outbox and could post twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from meeting import ids
from meeting.logfmt import kv
from meeting.outbox import (
    ANNOUNCE, RECORDING_EXPIRING, RECORDING_READY, STATUS, ChatPost, Delivered, Delivery, GiveUp,
    OutboxEntry, Retry,
)

from . import text
from .slack_blocks import MessageRef, call_blocks, call_users, escape, fallback_text, meeting_blocks

log = logging.getLogger(__name__)

# Errors worth another try; any other ``ok: false`` will not get better by waiting.
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
    "timeout", "team_added_to_org",
})
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
NOBODY_YET: dict[str, Any] = {"present": [], "ended_minutes": None}


def slack_error(exc: SlackApiError) -> tuple[str, int | None, float | None]:
    """The error code, HTTP status and Retry-After of a failed call, read defensively.

    A proxy's HTML error page or an empty 5xx reaches us as a SlackApiError too.
    """
    response = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    data = getattr(response, "data", None)
    error = data.get("error", "") if isinstance(data, dict) else ""
    headers = getattr(response, "headers", None) or {}
    retry_after = None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                retry_after = max(0.0, float(value))
            except ValueError:
                pass
    return error or f"http_{status}", status, retry_after


def classify(exc: SlackApiError) -> Retry | GiveUp:
    """Map a Slack API failure to what the outbox should do next."""
    error, status, retry_after = slack_error(exc)
    if status == 429 or error == "ratelimited":
        return Retry("ratelimited", after=retry_after)
    if error in TRANSIENT_ERRORS or (status is not None and status >= 500):
        return Retry(error)
    return GiveUp(error)


async def tell_privately(client: AsyncWebClient, response_url: str, message: str) -> bool:
    """An ephemeral answer to the person who typed the command; False when it failed."""
    # The client's own logger: at DEBUG the SDK would print the URL (a bearer URL) and the body.
    webhook = AsyncWebhookClient(response_url, timeout=10, session=client.session, retry_handlers=[],
                                 logger=client.logger)
    try:
        response = await webhook.send(text=message, response_type="ephemeral", replace_original=False)
    except NETWORK_ERRORS:
        return False
    return response.status_code == 200


def external_call_key(event_key: str) -> str:
    """The external_unique_id base of one announcement's calls, stable across retries."""
    return "meetnow-" + hashlib.sha256(event_key.encode()).hexdigest()[:24]


class SlackCourier:
    """Delivers Slack outbox entries through one Web API client."""

    platform = "slack"

    def __init__(self, client: AsyncWebClient, calls: bool = False) -> None:
        self.client = client
        self.calls = calls

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        """Say ``entry`` in Slack; never raises for Slack or network trouble."""
        try:
            return await self._deliver(entry, post)
        except SlackApiError as exc:
            result = classify(exc)
            if isinstance(result, GiveUp) and entry.kind == ANNOUNCE:
                await self._tell_person(entry, result.reason)
            return result
        except NETWORK_ERRORS as exc:
            return Retry(f"network: {type(exc).__name__}")

    async def _deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        if entry.kind == ANNOUNCE:
            return await self._announce(entry)
        if post is None:  # the outbox only hands us these with the meeting's message
            return GiveUp("no meeting message")
        ref = MessageRef.from_json(post.message_ref)
        if entry.kind == STATUS:
            if ref.call_id:
                return await self._call_status(entry, post, ref)
            return await self._status(entry, post, ref)
        if entry.kind in (RECORDING_READY, RECORDING_EXPIRING):
            return await self._thread_reply(entry, post, ref)
        return GiveUp(f"unknown kind {entry.kind}")

    # -- the meeting message ------------------------------------------------------------

    async def _announce(self, entry: OutboxEntry) -> Delivery:
        p = entry.payload
        title, url, channel = p["title"], p["url"], p["channel_id"]
        if self.calls:
            return await self._announce_call(entry, title, url, channel)
        response = await self.client.chat_postMessage(
            channel=channel, text=fallback_text(title, url),
            blocks=meeting_blocks(title, url, NOBODY_YET, p.get("creator", "")),
            unfurl_links=False, unfurl_media=False)
        ref = MessageRef(ts=response["ts"], title=title, url=url, creator=p.get("creator", ""))
        return Delivered(ChatPost(entry.meeting_id, self.platform, response["channel"], ref.to_json()))

    async def _status(self, entry: OutboxEntry, post: ChatPost, ref: MessageRef) -> Delivery:
        await self.client.chat_update(
            channel=post.channel_id, ts=ref.ts, text=fallback_text(ref.title, ref.url),
            blocks=meeting_blocks(ref.title, ref.url, entry.payload, ref.creator))
        return Delivered()

    async def _thread_reply(self, entry: OutboxEntry, post: ChatPost, ref: MessageRef) -> Delivery:
        p = entry.payload
        render = text.recording_ready_text if entry.kind == RECORDING_READY else text.recording_expiring_text
        await self.client.chat_postMessage(
            channel=post.channel_id, thread_ts=ref.ts,
            text=render(p["title"], p["url"], p["delete_on"], escape=escape),
            unfurl_links=False, unfurl_media=False)
        return Delivered()

    async def _tell_person(self, entry: OutboxEntry, reason: str) -> None:
        """Explain privately, through the command's response_url, why nothing was posted."""
        response_url = (entry.payload.get("reply") or {}).get("response_url")
        if not response_url:
            return
        message = (f"{text.cannot_post_text(reason)}\n"
                   f"You can share the join link yourself: {entry.payload.get('url', '')}")
        if not await tell_privately(self.client, response_url, message):
            # response_urls expire after 30 minutes; there is nothing more to try
            log.warning("slack could not explain a failed post %s",
                        kv(meeting=ids.short(entry.meeting_id), reason=reason))

    # -- Calls API mode -----------------------------------------------------------------

    async def _announce_call(self, entry: OutboxEntry, title: str, url: str, channel: str) -> Delivery:
        user_id = (entry.payload.get("reply") or {}).get("user_id", "")
        key = external_call_key(entry.event_key)
        call_id = await self._add_call(key, 1, url, user_id, title)
        try:
            response = await self.client.chat_postMessage(
                channel=channel, text=fallback_text(title, url), blocks=call_blocks(title, url, call_id),
                unfurl_links=False, unfurl_media=False)
        except Exception:
            # The retry will register a fresh call: end this one so no orphan card lingers.
            await self._end_quietly(call_id)
            raise
        ref = MessageRef(ts=response["ts"], title=title, url=url, creator=entry.payload.get("creator", ""),
                         call_id=call_id, user_id=user_id, call_key=key, calls_made=1)
        return Delivered(ChatPost(entry.meeting_id, self.platform, response["channel"], ref.to_json()))

    async def _call_status(self, entry: OutboxEntry, post: ChatPost, ref: MessageRef) -> Delivery:
        """Tell the call card who joined and left, end it when the meeting empties."""
        ended_minutes = entry.payload.get("ended_minutes")
        present = list(entry.payload.get("present") or [])
        if ended_minutes is not None:
            if not ref.call_ended:
                await self.client.calls_end(id=ref.call_id, duration=int(ended_minutes) * 60)
            ref = ref.with_changes(call_ended=True, told=())
        else:
            if ref.call_ended and present:
                ref = await self._restart_call(post, ref)
            ref = await self._sync_participants(ref, present)
        return Delivered(ChatPost(post.meeting_id, post.platform, post.channel_id, ref.to_json()))

    async def _sync_participants(self, ref: MessageRef, present: list[str]) -> MessageRef:
        told = {u["external_id"]: u for u in call_users(list(ref.told))}
        now = {u["external_id"]: u for u in call_users(present)}
        joined = [u for key, u in now.items() if key not in told]
        left = [u for key, u in told.items() if key not in now]
        if joined:
            await self.client.calls_participants_add(id=ref.call_id, users=joined)
        if left:
            await self.client.calls_participants_remove(id=ref.call_id, users=left)
        return ref.with_changes(told=tuple(present))

    async def _restart_call(self, post: ChatPost, ref: MessageRef) -> MessageRef:
        """A permanent meeting outlives its call: people came back, so show a new card."""
        number = ref.calls_made + 1
        call_id = await self._add_call(ref.call_key, number, ref.url, ref.user_id, ref.title)
        try:
            await self.client.chat_update(
                channel=post.channel_id, ts=ref.ts, text=fallback_text(ref.title, ref.url),
                blocks=call_blocks(ref.title, ref.url, call_id))
        except Exception:
            await self._end_quietly(call_id)
            raise
        return ref.with_changes(call_id=call_id, calls_made=number, call_ended=False, told=())

    async def _add_call(self, key: str, number: int, url: str, user_id: str, title: str) -> str:
        # Each calls.add gets an id of its own: a retry after a failed post registers a
        # fresh call (the failed one is ended), and Slack wants ids unique per call.
        # The title is a plain name on the call card, not mrkdwn: it goes as typed.
        response = await self.client.calls_add(
            external_unique_id=f"{key}-{number}-{secrets.token_hex(4)}", join_url=url, created_by=user_id or None,
            title=title, date_start=int(time.time()))
        return str(response["call"]["id"])

    async def _end_quietly(self, call_id: str) -> None:
        try:
            await self.client.calls_end(id=call_id)
        except (SlackApiError, *NETWORK_ERRORS):
            pass  # best effort: an unposted card is invisible anyway
