"""The store's interface: the narrow set of operations the core needs from a database.

Callers depend on ``Store`` only, so a PostgreSQL implementation can sit beside
``SqliteStore`` without touching them.
"""

from __future__ import annotations

from typing import Protocol

from .models import Meeting


class Store(Protocol):
    """Persistent state of the service. Every method is a coroutine; none blocks the loop."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Release the connection."""

    async def add_meeting(self, meeting: Meeting) -> None:
        """Keep a newly minted meeting."""

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        """The meeting with this id, or None."""

    async def schema_version(self) -> int:
        """The migration the database is at."""
