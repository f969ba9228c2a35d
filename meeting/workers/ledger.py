"""The chat bots' view of live meetings, kept by the front across media worker deaths.

Workers tell the front who is present; a worker that dies cannot say its meetings ended.
The ledger remembers when each meeting began. When a worker dies, its meetings are
orphaned: if people come back (on another worker) within a grace period, the meeting goes
on as one; if nobody does, the front says it ended. Either way the channel hears "Ended"
exactly once, with the length from its real start. Pure: time comes in as an argument.
"""

from __future__ import annotations

from dataclasses import replace

from meeting.events import PresenceChanged


def _minutes(seconds: float) -> int:
    return max(1, round(seconds / 60))


class PresenceLedger:
    """When each live meeting began, and which ones lost their worker."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}  # meeting id -> when it began (monotonic seconds)
        self._orphans: dict[str, float] = {}  # meeting id -> when its worker died

    def passed(self, event: PresenceChanged, now: float) -> PresenceChanged:
        """A worker's presence event, as the bus should carry it (its length from the real start)."""
        meeting_id = event.meeting_id
        self._orphans.pop(meeting_id, None)
        if event.ended_minutes is None:
            self._since.setdefault(meeting_id, now)
            return event
        since = self._since.pop(meeting_id, None)
        return event if since is None else replace(event, ended_minutes=_minutes(now - since))

    def orphan(self, meeting_id: str, now: float) -> None:
        """The meeting's worker died while people were in it."""
        if meeting_id in self._since:
            self._orphans[meeting_id] = now

    def expired(self, grace: float, now: float) -> list[PresenceChanged]:
        """The orphans nobody came back to within ``grace`` seconds: they ended."""
        ended = []
        for meeting_id, since_death in list(self._orphans.items()):
            if now - since_death >= grace:
                del self._orphans[meeting_id]
                began = self._since.pop(meeting_id, since_death)
                ended.append(PresenceChanged(meeting_id, (), _minutes(since_death - began)))
        return ended

    def live(self) -> int:
        return len(self._since)

    def orphans(self) -> int:
        return len(self._orphans)
