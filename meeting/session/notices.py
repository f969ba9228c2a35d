"""What the people in a meeting, and the chat bots, are told when its room changes.

Pure functions: room events and states in, server messages and bus events out. The session
sends them; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meeting.events import PresenceChanged
from meeting.recording.service import E2EE_MESSAGE, RecordingStatus
from meeting.session.messages import reply
from meeting.session.room import (
    Ended, Joined, Knocked, Left, LockChanged, Participant, Room, RoomEvent, Unknocked, Updated, Waiting,
)

EVERYONE, HOSTS = "everyone", "hosts"


@dataclass(frozen=True)
class Notice:
    """One message for everyone in the meeting (but ``skip``), or for its hosts only."""

    audience: str
    message: dict[str, Any]
    skip: str | None = None


def notices(events: list[RoomEvent]) -> list[Notice]:
    """The messages that tell the room about these events, in order.

    Hosts hear about the lobby one arrival or departure at a time: a flood of knocks costs
    them one small message each, never the whole list again.
    """
    out = []
    for event in events:
        if isinstance(event, Joined):
            out.append(Notice(EVERYONE, reply("participant-joined", participant=event.participant.public()),
                              skip=event.participant.id))
        elif isinstance(event, Left):
            out.append(Notice(EVERYONE, reply("participant-left", id=event.participant.id)))
        elif isinstance(event, Updated):
            out.append(Notice(EVERYONE, reply("participant-updated", participant=event.participant.public())))
        elif isinstance(event, LockChanged):
            out.append(Notice(EVERYONE, reply("locked", locked=event.locked)))
        elif isinstance(event, Knocked):
            out.append(Notice(HOSTS, reply("lobby-added", waiting=_waiting(event.waiting))))
        elif isinstance(event, Unknocked):
            out.append(Notice(HOSTS, reply("lobby-removed", id=event.waiting_id)))
    return out


def _waiting(waiting: Waiting) -> dict[str, str]:
    return {"id": waiting.id, "name": waiting.name}


def welcome_message(
    participant: Participant, room: Room, resume: str, ice_servers: list[dict[str, Any]], e2ee: bool,
    recording: RecordingStatus | None, recording_links: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """What a participant who just entered is told: who is here, how to connect, how to come back.

    ``recording`` is None on a server that does not record; ``recording_links`` go to hosts only.
    """
    welcome: dict[str, Any] = {
        "you": participant.public(),
        "participants": [p.public() for p in room.others(participant.id)],
        "ice_servers": ice_servers,
        "resume": resume,
        "locked": room.locked,
        "e2ee": e2ee,
    }
    if recording is not None:
        # Everyone is told on arrival whether the meeting is being recorded.
        welcome["recording"] = recording_message(recording, with_reason=False)
    if recording_links is not None:
        welcome["recordings"] = recording_links
    return reply("welcome", **welcome)


def waiting_message(hosts_present: bool) -> dict[str, Any]:
    """What a guest in a locked meeting's lobby is told: whether anyone can let them in."""
    text = ("This meeting is locked. A host will let you in shortly." if hosts_present else
            "This meeting is locked and no host is in it right now. You will be let in when a host arrives.")
    return reply("waiting", message=text, hosts_present=hosts_present)


def lobby_message(room: Room) -> dict[str, Any]:
    """Everyone waiting in the lobby, for a host who just arrived."""
    return reply("lobby", waiting=[_waiting(w) for w in room.lobby.values()])


def status_message(room: Room, recording: RecordingStatus) -> dict[str, Any]:
    """What someone deciding whether to join (pre-join, lobby) is told, and told again on change.

    No names and no head count: people who have not been let in learn only what bears on
    joining (they will be recorded, they will wait, somebody can let them in).
    """
    return reply("status", recording=recording.active, locked=room.locked, hosts_present=room.hosts_present())


def knocking_message(count: int) -> dict[str, Any]:
    """How many people wait in the lobby with no host present to let them in (0: none)."""
    return reply("knocking", count=count)


def recording_message(status: RecordingStatus, with_reason: bool = True) -> dict[str, Any]:
    """Whether the meeting is being recorded (every participant is told, for consent)."""
    fields: dict[str, Any] = {"active": status.active, "available": status.available}
    if status.since is not None:
        fields["since"] = status.since.isoformat(timespec="seconds")
    if status.reason and with_reason:
        fields["reason"] = status.reason
    if not status.available:
        fields["message"] = E2EE_MESSAGE
    return reply("recording", **fields)


def presence(meeting_id: str, room: Room, events: list[RoomEvent]) -> PresenceChanged | None:
    """What the chat bots' live status should show after these events, if it changed."""
    for event in events:
        if isinstance(event, Ended):
            return PresenceChanged(meeting_id, (), max(1, round(event.duration.total_seconds() / 60)))
    if any(isinstance(e, (Joined, Left)) for e in events):
        return PresenceChanged(meeting_id, tuple(p.name for p in room.participants.values()))
    return None
