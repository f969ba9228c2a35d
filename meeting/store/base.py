"""The store's interface: the narrow set of operations the core needs from a database.

Callers depend on ``Store`` only: ``SqliteStore`` (one server) and ``PostgresStore``
(several servers sharing one database) both implement it; ``meeting.store.make_store``
picks one from the configuration.
"""

from __future__ import annotations

from typing import Protocol

from meeting.models import Meeting
from meeting.outbox import OutboxStore
from meeting.recording.model import RecordingStore


class Store(OutboxStore, RecordingStore, Protocol):
    """Persistent state of the service. Every method is a coroutine; none blocks the loop."""

    @property
    def where(self) -> str:
        """The database, as it may be shown or logged (never a password)."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Release the connection."""

    async def schema_version(self) -> int:
        """The migration the database is at."""

    async def add_meeting(self, meeting: Meeting, host_key_hash: str) -> None:
        """Keep a newly minted meeting with its first host key's hash."""

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        """The meeting with this id, or None."""

    async def add_host_key(self, meeting_id: str, key_hash: str) -> None:
        """Give the meeting another host (each host link has its own key)."""

    async def is_host_key(self, meeting_id: str, key_hash: str) -> bool:
        """True when ``key_hash`` belongs to one of the meeting's host keys."""

    async def channel_meeting(self, platform: str, workspace_id: str, channel_id: str) -> str | None:
        """The id of a channel's standing room, if it has one."""

    async def set_channel_meeting(self, platform: str, workspace_id: str, channel_id: str,
                                  meeting_id: str) -> str:
        """Make ``meeting_id`` the channel's standing room unless it has one; return the winner."""
