"""The embedded store: SQLite in WAL mode through aiosqlite (its own thread, never the loop)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from .logfmt import kv
from .migrations import MIGRATIONS
from .models import Meeting, Origin
from .outbox import ANNOUNCE, ChatPost, OutboxEntry

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
        row = await self._one("PRAGMA user_version", ())
        return int(row[0]) if row else 0

    async def add_meeting(self, meeting: Meeting, host_key_hash: str) -> None:
        o = meeting.origin
        await self.db.execute(
            "INSERT INTO meetings (id, title, created_at, origin_kind, origin_workspace,"
            " origin_channel, origin_creator, e2ee) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (meeting.id, meeting.title, meeting.created_at.isoformat(), o.kind,
             o.workspace_id, o.channel_id, o.creator_name, int(meeting.e2ee)),
        )
        await self.db.execute("INSERT INTO host_keys (key_hash, meeting_id) VALUES (?, ?)",
                              (host_key_hash, meeting.id))
        await self.db.commit()

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        row = await self._one(
            "SELECT id, title, created_at, origin_kind, origin_workspace, origin_channel,"
            " origin_creator, e2ee FROM meetings WHERE id = ?",
            (meeting_id,),
        )
        if row is None:
            return None
        return Meeting(
            id=row[0], title=row[1], created_at=datetime.fromisoformat(row[2]),
            origin=Origin(kind=row[3], workspace_id=row[4], channel_id=row[5], creator_name=row[6]),
            e2ee=bool(row[7]),
        )

    async def add_host_key(self, meeting_id: str, key_hash: str) -> None:
        await self.db.execute("INSERT INTO host_keys (key_hash, meeting_id) VALUES (?, ?)",
                              (key_hash, meeting_id))
        await self.db.commit()

    async def is_host_key(self, meeting_id: str, key_hash: str) -> bool:
        row = await self._one("SELECT 1 FROM host_keys WHERE key_hash = ? AND meeting_id = ?",
                              (key_hash, meeting_id))
        return row is not None

    async def channel_meeting(self, platform: str, workspace_id: str, channel_id: str) -> str | None:
        row = await self._one(
            "SELECT meeting_id FROM channel_rooms WHERE platform = ? AND workspace_id = ?"
            " AND channel_id = ?", (platform, workspace_id, channel_id))
        return row[0] if row else None

    async def set_channel_meeting(self, platform: str, workspace_id: str, channel_id: str,
                                  meeting_id: str) -> str:
        await self.db.execute(
            "INSERT OR IGNORE INTO channel_rooms (platform, workspace_id, channel_id, meeting_id)"
            " VALUES (?, ?, ?, ?)", (platform, workspace_id, channel_id, meeting_id))
        await self.db.commit()
        winner = await self.channel_meeting(platform, workspace_id, channel_id)
        assert winner is not None
        return winner

    # ---- outbox

    async def outbox_put(self, event_key: str, meeting_id: str, platform: str, kind: str,
                         payload: str, next_at: float, replace: bool) -> None:
        sql = (
            "INSERT INTO outbox (event_key, meeting_id, platform, kind, payload, next_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        if replace:
            sql += (
                " ON CONFLICT(event_key) DO UPDATE SET payload = excluded.payload,"
                " state = 'pending', attempts = 0, version = version + 1, last_error = '',"
                " next_at = CASE WHEN state = 'pending' THEN next_at ELSE excluded.next_at END"
            )
        else:
            sql += " ON CONFLICT(event_key) DO NOTHING"
        await self.db.execute(sql, (event_key, meeting_id, platform, kind, payload, next_at, next_at))
        await self.db.commit()

    async def outbox_due(self, now: float, platforms: list[str], limit: int) -> list[OutboxEntry]:
        if not platforms:
            return []
        marks = ",".join("?" * len(platforms))
        async with self.db.execute(
            "SELECT id, event_key, meeting_id, platform, kind, payload, attempts, version FROM outbox"
            f" WHERE state = 'pending' AND next_at <= ? AND platform IN ({marks})"
            " ORDER BY next_at, id LIMIT ?", (now, *platforms, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [OutboxEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    async def outbox_next_due(self, platforms: list[str]) -> float | None:
        if not platforms:
            return None
        marks = ",".join("?" * len(platforms))
        row = await self._one(
            f"SELECT MIN(next_at) FROM outbox WHERE state = 'pending' AND platform IN ({marks})",
            tuple(platforms))
        return row[0] if row else None

    async def outbox_pending_announce(self, meeting_id: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM outbox WHERE meeting_id = ? AND kind = ? AND state = 'pending'",
            (meeting_id, ANNOUNCE))
        return row is not None

    async def outbox_finish(self, entry_id: int, version: int, state: str, error: str) -> None:
        # A status row rewritten during delivery has a newer version: it stays pending.
        await self.db.execute(
            "UPDATE outbox SET state = ?, last_error = ? WHERE id = ? AND version = ?",
            (state, error, entry_id, version))
        await self.db.commit()

    async def outbox_retry(self, entry_id: int, attempts: int, next_at: float, error: str) -> None:
        await self.db.execute(
            "UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
            (attempts, next_at, error, entry_id))
        await self.db.commit()

    async def get_post(self, meeting_id: str) -> ChatPost | None:
        row = await self._one(
            "SELECT meeting_id, platform, channel_id, message_ref FROM chat_posts WHERE meeting_id = ?",
            (meeting_id,))
        return ChatPost(*row) if row else None

    async def save_post(self, post: ChatPost) -> None:
        await self.db.execute(
            "INSERT INTO chat_posts (meeting_id, platform, channel_id, message_ref) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(meeting_id) DO UPDATE SET platform = excluded.platform,"
            " channel_id = excluded.channel_id, message_ref = excluded.message_ref",
            (post.meeting_id, post.platform, post.channel_id, post.message_ref))
        await self.db.commit()

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self.db.execute(sql, params) as cursor:
            return await cursor.fetchone()

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
