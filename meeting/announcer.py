"""What a chat channel hears about its meetings, decided here and delivered by the outbox.

Only meetings made from chat have a channel to tell. The announcer turns commands and the
bus's events (presence, recordings) into outbox entries; each platform's courier renders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meeting.events import Bus, PresenceChanged, RecordingExpiring, RecordingReady
from meeting.models import CHAT_ORIGINS
from meeting.outbox import ANNOUNCE, RECORDING_EXPIRING, RECORDING_READY, Outbox
from meeting.service import MeetingService, MintedMeeting


@dataclass(frozen=True)
class StatusPayload:
    """A meeting's live status as the channel message shows it."""

    present: list[str]
    ended_minutes: int | None = None  # set once the meeting has emptied

    def as_dict(self) -> dict[str, Any]:
        return {"present": self.present, "ended_minutes": self.ended_minutes}


class Announcer:
    """Turns what happens to chat-made meetings into outbox entries."""

    def __init__(self, meetings: MeetingService, outbox: Outbox, bus: Bus) -> None:
        self.meetings = meetings
        self.outbox = outbox
        bus.subscribe(PresenceChanged, self.presence_changed)
        bus.subscribe(RecordingReady, self.recording_ready)
        bus.subscribe(RecordingExpiring, self.recording_expiring)

    async def announce(self, minted: MintedMeeting, invocation_id: str, reply: dict[str, Any]) -> None:
        """Post the meeting's link in its channel, once per command invocation.

        ``reply`` is what the platform needs to answer the person who asked (a Slack
        response_url, a Discord interaction token) if the post cannot be made.
        """
        meeting = minted.meeting
        await self.outbox.put(
            f"announce:{invocation_id}", meeting.id, meeting.origin.kind, ANNOUNCE,
            {"title": meeting.title, "url": minted.url, "channel_id": meeting.origin.channel_id,
             "creator": meeting.origin.creator_name, "reply": reply},
        )

    async def presence_changed(self, event: PresenceChanged) -> None:
        """Joins, leaves and the end update the channel's message."""
        meeting = await self.meetings.get(event.meeting_id)
        # An E2EE meeting's message holds its key: it is posted once and never rewritten.
        if meeting is None or meeting.origin.kind not in CHAT_ORIGINS or meeting.e2ee:
            return
        status = StatusPayload(present=list(event.present), ended_minutes=event.ended_minutes)
        await self.outbox.put_status(event.meeting_id, meeting.origin.kind, status.as_dict())

    async def recording_ready(self, event: RecordingReady) -> None:
        """Reply to the meeting's message with its recording's link and deletion date."""
        await self._recording(RECORDING_READY, event.meeting_id, event.recording_id, event.url, event.delete_on)

    async def recording_expiring(self, event: RecordingExpiring) -> None:
        """Remind the channel, once, that a recording will soon be deleted."""
        await self._recording(RECORDING_EXPIRING, event.meeting_id, event.recording_id, event.url,
                              event.delete_on)

    async def _recording(self, kind: str, meeting_id: str, recording_id: str, url: str,
                         delete_on: str) -> None:
        meeting = await self.meetings.get(meeting_id)
        if meeting is None or meeting.origin.kind not in CHAT_ORIGINS:
            return
        await self.outbox.put(f"{kind}:{recording_id}", meeting_id, meeting.origin.kind, kind,
                              {"title": meeting.title, "url": url, "delete_on": delete_on})
