"""Is this HTTP request really from Slack, and new? Checked before bolt sees it.

Slack signs each request: ``v0=`` + HMAC-SHA256(signing secret, ``v0:{timestamp}:{body}``).
A valid signature only proves Slack sent those bytes once, so a request is also refused
when its timestamp is outside Slack's five minutes, when it lies in the future beyond a
little clock skew, or when its signature was already used: a captured slash command replayed
within the window would otherwise mint again and hand the replayer a host link.

Used signatures are remembered through ``SeenSignatures``, a one-method interface, so several
server processes can share one store (Redis ``SET NX EXAT`` fits it); the in-memory one here
serves a single process. Socket Mode has no signatures: its envelopes arrive over a
websocket we opened with the app token, so nothing outside can replay into it.

Nothing of a request is logged but the reason it was refused: bodies carry ``response_url``,
which lets whoever holds it post into the channel for half an hour.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from typing import Callable, Mapping, Protocol

from meeting.logfmt import kv

log = logging.getLogger(__name__)

MAX_AGE_S = 300  # Slack's own window for a request's timestamp
FUTURE_SKEW_S = 60  # how far ahead of our clock Slack's may run before a request is refused
REMEMBERED_MAX = 10_000  # used signatures kept in memory; only genuine requests are counted

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")

# Reasons a request is refused (what the log line says).
MISSING = "missing_signature"
MALFORMED = "malformed_signature"
BAD_SIGNATURE = "bad_signature"
STALE = "stale_timestamp"
FUTURE = "future_timestamp"
REPLAYED = "replayed"


class SeenSignatures(Protocol):
    """Where used signatures are remembered, for as long as their request could be replayed."""

    async def first_use(self, signature: str, until: float) -> bool:
        """Note ``signature`` as used until ``until`` (unix time); False if it already was."""


class MemorySeenSignatures:
    """Used signatures of one process, oldest dropped beyond ``limit``.

    Only requests with a valid signature are remembered, so filling this takes that many
    genuine Slack requests inside five minutes; an attacker's garbage never enters it.
    """

    def __init__(self, limit: int = REMEMBERED_MAX, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self.clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    async def first_use(self, signature: str, until: float) -> bool:
        """Note ``signature`` as used until ``until``; False if it already was."""
        now = self.clock()
        # Expiries follow arrival order closely (timestamps are Slack's "now"), so dropping
        # from the front keeps the map small; anything left behind goes once over the limit.
        while self._until and next(iter(self._until.values())) <= now:
            self._until.popitem(last=False)
        known = self._until.get(signature)
        if known is not None and known > now:
            return False
        self._until[signature] = until
        self._until.move_to_end(signature)
        while len(self._until) > self.limit:
            self._until.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._until)


class SlackRequestCheck:
    """Verifies signature, freshness and novelty of one request to the Slack endpoint."""

    def __init__(self, signing_secret: str, seen: SeenSignatures,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = signing_secret.encode()
        self.seen = seen
        self.clock = clock

    async def refusal(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """None when the request is Slack's and new; otherwise why it is refused (also logged)."""
        reason, ahead = await self._judge(headers, body)
        if reason is None:
            return None
        if reason in (STALE, FUTURE, REPLAYED):
            # Signed by Slack, so not noise: a replay, or this server's clock is off.
            log.warning("slack request refused %s", kv(reason=reason, ahead_s=ahead))
        else:
            log.info("slack request refused %s", kv(reason=reason))
        return reason

    async def _judge(self, headers: Mapping[str, str], body: bytes) -> tuple[str | None, int]:
        timestamp = headers.get("X-Slack-Request-Timestamp")
        signature = headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            return MISSING, 0
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return MALFORMED, 0
        # The HMAC first: every later verdict is then about a request Slack really sent.
        expected = "v0=" + hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return BAD_SIGNATURE, 0
        sent = int(timestamp)
        ahead = sent - self.clock()
        if ahead < -MAX_AGE_S:
            return STALE, round(ahead)
        if ahead > FUTURE_SKEW_S:
            return FUTURE, round(ahead)
        # Remembered until the timestamp itself goes stale: after that the age check refuses it.
        if not await self.seen.first_use(signature, until=sent + MAX_AGE_S + 1):
            return REPLAYED, round(ahead)
        return None, round(ahead)
