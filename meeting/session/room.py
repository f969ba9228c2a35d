"""Who is in a meeting right now: a plain state machine, events out, no I/O.

The media plane (:mod:`meeting.media`) decides how bytes move; this decides who is present,
what each one publishes and shows, who waits in the lobby, and when a meeting starts and
ends. The meeting's session drives it and tells everyone the events it returns.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Union

NAME_MAX = 60
# Control characters, and the marks, embeddings, overrides and isolates that change text's
# direction. Not joiners: emoji sequences need them.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
SOURCES = ("mic", "camera", "screen")


class RoomFull(Exception):
    """The meeting already holds its capacity."""


class LobbyFull(Exception):
    """The lobby already holds its capacity of people waiting."""


class NotInRoom(KeyError):
    """An action named a participant who is not (or no longer) in the room."""


@dataclass(frozen=True)
class Participant:
    """One person in the room, as everyone else sees them."""

    id: str
    name: str
    joined_at: datetime
    publishes: frozenset[str] = frozenset()
    audio_muted: bool = False
    video_muted: bool = False
    is_host: bool = False
    hand: int | None = None  # raised: the room's count of raises when it went up (its order)
    key_check: str | None = None  # end-to-end encrypted meetings: which key the page holds

    def public(self) -> dict[str, object]:
        """What other participants are told about this one."""
        return {
            "id": self.id,
            "name": self.name,
            "publishes": sorted(self.publishes),
            "audio_muted": self.audio_muted,
            "video_muted": self.video_muted,
            "host": self.is_host,
            "hand": self.hand,
            "key_check": self.key_check,
        }


@dataclass(frozen=True)
class Waiting:
    """Someone in the lobby of a locked meeting: only hosts see them, by name."""

    id: str
    name: str


@dataclass(frozen=True)
class Joined:
    participant: Participant


@dataclass(frozen=True)
class Left:
    participant: Participant


@dataclass(frozen=True)
class Updated:
    participant: Participant


@dataclass(frozen=True)
class Started:
    at: datetime


@dataclass(frozen=True)
class Ended:
    started_at: datetime
    ended_at: datetime

    @property
    def duration(self) -> timedelta:
        return self.ended_at - self.started_at


@dataclass(frozen=True)
class LockChanged:
    locked: bool


@dataclass(frozen=True)
class Knocked:
    """Someone arrived in the lobby."""

    waiting: Waiting


@dataclass(frozen=True)
class Unknocked:
    """Someone left the lobby (admitted, denied, or gone)."""

    waiting_id: str


RoomEvent = Union[Joined, Left, Updated, Started, Ended, LockChanged, Knocked, Unknocked]


def clean_name(name: str) -> str:
    """A display name: whitespace collapsed, control and text-direction characters removed
    (a name could otherwise show reversed, posing as another), cut to NAME_MAX, "Guest"
    when empty."""
    name = _HIDDEN.sub("", " ".join(name.split())).strip()[:NAME_MAX]
    return name or "Guest"


@dataclass
class Room:
    """The live state of one meeting. Every change returns the events it caused."""

    meeting_id: str
    capacity: int
    clock: Callable[[], datetime]
    lobby_capacity: int = 50
    participants: dict[str, Participant] = field(default_factory=dict)
    started_at: datetime | None = None
    locked: bool = False
    lobby: dict[str, Waiting] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # joined, media not connected yet
    raises: int = 0  # hands raised so far: each raise takes the next number, so hands keep their order

    def join(self, name: str, publishes: frozenset[str] = frozenset(), is_host: bool = False,
             audio_muted: bool = False, video_muted: bool = False,
             key_check: str | None = None, hand: int | None = None) -> tuple[Participant, list[RoomEvent]]:
        """Admit a participant; raises RoomFull at capacity. ``hand``: the place in the queue of
        raised hands of someone coming back from a blip.

        Until :meth:`media_connected`, a participant is pending: pending people do not take
        the places of connected ones (squatters that never connect media cannot fill a
        meeting), and at most twice ``capacity`` of them wait at once (a bound on memory).
        """
        if self._connected() >= self.capacity or len(self.pending) >= self.max_pending:
            raise RoomFull(self.meeting_id)
        now = self.clock()
        participant = Participant(
            id=secrets.token_urlsafe(9), name=clean_name(name), joined_at=now,
            publishes=publishes & frozenset(SOURCES), is_host=is_host,
            audio_muted=audio_muted, video_muted=video_muted, key_check=key_check, hand=hand,
        )
        self.participants[participant.id] = participant
        self.pending.add(participant.id)
        events: list[RoomEvent] = []
        if self.started_at is None:
            self.started_at = now
            events.append(Started(now))
        events.append(Joined(participant))
        return participant, events

    def leave(self, participant_id: str) -> list[RoomEvent]:
        """Remove a participant; the last one out ends the meeting. Unknown ids change nothing."""
        participant = self.participants.pop(participant_id, None)
        if participant is None:
            return []
        self.pending.discard(participant_id)
        events: list[RoomEvent] = [Left(participant)]
        if not self.participants and self.started_at is not None:
            events.append(Ended(self.started_at, self.clock()))
            self.started_at = None
        return events

    @property
    def max_pending(self) -> int:
        """People who may be setting up their media at once."""
        return 2 * self.capacity

    def _connected(self) -> int:
        return len(self.participants) - len(self.pending)

    def displaced(self) -> str | None:
        """Who makes way for a newcomer: when a place is free but as many people as may be
        setting up at once are, the one who has been setting up longest.

        Sockets that join and never connect media then cannot keep real people out for the
        length of the media deadline: each newcomer pushes the oldest of them out.
        """
        if len(self.pending) < self.max_pending or self._connected() >= self.capacity:
            return None
        return next(pid for pid in self.participants if pid in self.pending)

    def media_connected(self, participant_id: str) -> None:
        """The participant's media is flowing: they count against the capacity now."""
        self.pending.discard(participant_id)

    def hosts_present(self) -> bool:
        """Whether anyone in the meeting can let people in from the lobby."""
        return any(p.is_host for p in self.participants.values())

    def update(self, participant_id: str, **changes: object) -> list[RoomEvent]:
        """Change what a participant shows (mute flags, publications)."""
        current = self.participants.get(participant_id)
        if current is None:
            raise NotInRoom(participant_id)
        updated = replace(current, **changes)  # type: ignore[arg-type]
        if updated == current:
            return []
        self.participants[participant_id] = updated
        return [Updated(updated)]

    def raise_hand(self, participant_id: str, raised: bool) -> list[RoomEvent]:
        """Raise a hand (it goes after every hand up now) or lower it; no change, no event."""
        current = self.participants.get(participant_id)
        if current is None:
            raise NotInRoom(participant_id)
        if raised == (current.hand is not None):
            return []
        if raised:
            self.raises += 1
        return self.update(participant_id, hand=self.raises if raised else None)

    def hands(self) -> list[Participant]:
        """Everyone with a hand up, in the order they raised it."""
        return sorted((p for p in self.participants.values() if p.hand is not None), key=lambda p: p.hand or 0)

    def hand_over(self, from_id: str, to_id: str) -> list[RoomEvent]:
        """The host ``from_id`` makes ``to_id`` host in their place (they become a guest)."""
        if from_id not in self.participants:
            raise NotInRoom(from_id)
        if to_id not in self.participants:
            raise NotInRoom(to_id)
        # The new host first: the meeting is never without one on the way.
        return self.update(to_id, is_host=True) + self.update(from_id, is_host=False)

    def unattended(self) -> int:
        """People waiting in the lobby whom nobody present can let in."""
        return 0 if self.hosts_present() else len(self.lobby)

    def lock(self, locked: bool) -> list[RoomEvent]:
        """Lock (newcomers wait in the lobby) or unlock the meeting."""
        if locked == self.locked:
            return []
        self.locked = locked
        return [LockChanged(locked)]

    def knock(self, name: str) -> tuple[Waiting, list[RoomEvent]]:
        """Put a newcomer in the lobby of a locked meeting; raises LobbyFull at its capacity."""
        if len(self.lobby) >= self.lobby_capacity:
            raise LobbyFull(self.meeting_id)
        waiting = Waiting(secrets.token_urlsafe(9), clean_name(name))
        self.lobby[waiting.id] = waiting
        return waiting, [Knocked(waiting)]

    def unknock(self, waiting_id: str) -> list[RoomEvent]:
        """Take someone out of the lobby (admitted, denied or gone); unknown ids change nothing."""
        if self.lobby.pop(waiting_id, None) is None:
            return []
        return [Unknocked(waiting_id)]

    def others(self, participant_id: str) -> list[Participant]:
        """Everyone but the given participant, in order of arrival."""
        return [p for p in self.participants.values() if p.id != participant_id]

    def receives(self, participant_id: str) -> list[tuple[str, str]]:
        """What a participant receives: every other participant's publications."""
        return [(p.id, source) for p in self.others(participant_id) for source in sorted(p.publishes)]

    @property
    def empty(self) -> bool:
        """Nobody in the meeting and nobody waiting: the room can be forgotten."""
        return not self.participants and not self.lobby
