"""The embedded store: SQLite in WAL mode through aiosqlite (its own thread, never the loop)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import aiosqlite

from .logfmt import kv
from .migrations import MIGRATIONS
from .models import Meeting, Origin

log = logging.getLogger(__name__)


class SqliteStore:
    """``Store`` on one SQLite file. Open it before use; close it at shutdown."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        # Another process (``meetnow new`` beside a running server) may hold the write lock briefly.
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def schema_version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def add_meeting(self, meeting: Meeting) -> None:
        o = meeting.origin
        await self.db.execute(
            "INSERT INTO meetings (id, title, created_at, origin_kind, origin_workspace,"
            " origin_channel, origin_creator, host_key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (meeting.id, meeting.title, meeting.created_at.isoformat(), o.kind,
             o.workspace_id, o.channel_id, o.creator_name, meeting.host_key_hash),
        )
        await self.db.commit()

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        async with self.db.execute(
            "SELECT id, title, created_at, origin_kind, origin_workspace, origin_channel,"
            " origin_creator, host_key_hash FROM meetings WHERE id = ?",
            (meeting_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return Meeting(
            id=row[0], title=row[1], created_at=datetime.fromisoformat(row[2]),
            origin=Origin(kind=row[3], workspace_id=row[4], channel_id=row[5], creator_name=row[6]),
            host_key_hash=row[7],
        )

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def _migrate(self) -> None:
        current = await self.schema_version()
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"database {self.path} is at schema {current}, newer than this meetnow knows"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            # executescript commits first; wrap the step so it lands whole or not at all.
            await self.db.executescript(
                f"BEGIN; {MIGRATIONS[version - 1]} PRAGMA user_version = {version}; COMMIT;"
            )
            log.info("store migrated %s", kv(path=self.path, version=version))
