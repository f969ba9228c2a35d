"""A connection to a meeting, as its session sees it, and the channel its messages leave by."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from meeting.media.peer import Peer
from meeting.ratelimit import TokenBucket
from meeting.session.messages import Join
from meeting.session.room import Participant

# Chat, per participant: a conversation, not a flood.
CHAT_PER_SECOND = 1.0
CHAT_BURST = 5.0
# Reactions and hand raises, per participant: each one is shown to everyone.
GESTURES_PER_SECOND = 1.0
GESTURE_BURST = 6.0
# "Mute all", per host: it sends a message to everyone at once.
MUTE_ALL_PER_SECOND = 0.2
MUTE_ALL_BURST = 2.0

# A watching connection has not joined: it is told the meeting's status until it does.
NEW, WATCHING, WAITING, JOINED, CLOSED = "new", "watching", "waiting", "joined", "closed"


class Channel(Protocol):
    """Where a session's messages to one connection go, in order."""

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message for the connection; never blocks."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection once every queued message has gone."""


@dataclass(eq=False)
class Conn:
    """One connection: where it stands (new, waiting, joined, closed) and what it holds."""

    id: str
    address: str
    channel: Channel
    state: str = NEW
    participant: Participant | None = None
    peer: Peer | None = None
    waiting_id: str | None = None
    pending: Join | None = None  # the join a lobby guest will enter with once admitted
    media_pending: asyncio.Event | None = None  # set once its peer connection is made (or not)
    timer: asyncio.TimerHandle | None = None  # the deadline it must meet next (join, media)
    chat_budget: TokenBucket = field(default_factory=lambda: TokenBucket(CHAT_PER_SECOND, CHAT_BURST))
    gesture_budget: TokenBucket = field(default_factory=lambda: TokenBucket(GESTURES_PER_SECOND, GESTURE_BURST))
    mute_all_budget: TokenBucket = field(default_factory=lambda: TokenBucket(MUTE_ALL_PER_SECOND, MUTE_ALL_BURST))

    def send(self, message: dict[str, Any]) -> None:
        if self.state != CLOSED:
            self.channel.send(message)
