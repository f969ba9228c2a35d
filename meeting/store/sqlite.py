"""The embedded store: SQLite in WAL mode through aiosqlite (its own thread, never the loop)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from meeting.logfmt import kv
from meeting.store.migrations import MIGRATIONS
from meeting.models import Meeting, Origin
from meeting.outbox import ANNOUNCE, ChatPost, OutboxEntry
from meeting.recording.model import COMPOSING, DELETED, FAILED, READY, RECORDING, Recording

log = logging.getLogger(__name__)


class SqliteStore:
    """``Store`` on one SQLite file. Open it before use; close it at shutdown."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def where(self) -> str:
        """The database file, as it may be shown or logged."""
        return str(self.path)

    async def open(self) -> None:
        """Open (creating it and its folder) and migrate; raises OSError or sqlite3.Error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        try:
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            # Another process (``meetnow new`` beside a running server) may hold the write lock briefly.
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except BaseException:
            # aiosqlite's thread keeps the process alive until the connection is closed.
            await self.close()
            raise

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
                # A settled row that comes back is a new message: its age starts now.
                " created_at = CASE WHEN state = 'pending' THEN created_at ELSE excluded.created_at END,"
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

    async def outbox_backlog(self) -> dict[str, tuple[int, float]]:
        async with self.db.execute(
            "SELECT platform, COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending' GROUP BY platform",
        ) as cursor:
            rows = await cursor.fetchall()
        return {row[0]: (row[1], row[2]) for row in rows}

    async def outbox_pending_announce(self, meeting_id: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM outbox WHERE meeting_id = ? AND kind = ? AND state = 'pending'",
            (meeting_id, ANNOUNCE))
        return row is not None

    async def outbox_finish(self, entry_id: int, version: int, state: str, error: str) -> None:
        # A status row rewritten during delivery has a newer version: it stays pending.
        # What was needed to answer the person (a Slack response_url is a bearer URL) is not
        # kept once the announcement is settled.
        await self.db.execute(
            "UPDATE outbox SET state = ?, last_error = ?,"
            " payload = CASE WHEN kind = ? THEN json_remove(payload, '$.reply') ELSE payload END"
            " WHERE id = ? AND version = ?",
            (state, error, ANNOUNCE, entry_id, version))
        await self.db.commit()

    async def outbox_retry(self, entry_id: int, version: int, attempts: int, next_at: float,
                           error: str) -> None:
        # A status rewritten meanwhile is a new message with a fresh count: leave it be.
        await self.db.execute(
            "UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ? AND version = ?",
            (attempts, next_at, error, entry_id, version))
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

    # ---- recordings

    async def add_recording(self, recording: Recording) -> None:
        r = recording
        await self.db.execute(
            "INSERT INTO recordings (id, meeting_id, state, started_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            (r.id, r.meeting_id, r.state, _ts(r.started_at), _ts(r.expires_at)))
        await self.db.commit()

    async def get_recording(self, recording_id: str) -> Recording | None:
        rows = await self._recordings("WHERE id = ?", (recording_id,))
        return rows[0] if rows else None

    async def recordings_in(self, states: tuple[str, ...]) -> list[Recording]:
        marks = ",".join("?" * len(states))
        return await self._recordings(f"WHERE state IN ({marks}) ORDER BY started_at", states)

    async def meeting_recordings(self, meeting_id: str) -> list[Recording]:
        return await self._recordings("WHERE meeting_id = ? AND state != ? ORDER BY started_at DESC",
                                      (meeting_id, DELETED))

    async def all_recordings(self) -> list[tuple[Recording, str]]:
        async with self.db.execute(
            f"SELECT {_RECORDING_COLUMNS}, m.title FROM recordings r JOIN meetings m ON m.id = r.meeting_id"
            " ORDER BY r.started_at DESC", (),
        ) as cursor:
            rows = await cursor.fetchall()
        return [(_recording(row[:-1]), row[-1]) for row in rows]

    async def recording_stopped(self, recording_id: str, stopped_at: datetime | None,
                                duration: float | None) -> None:
        await self.db.execute(
            "UPDATE recordings SET state = ?, stopped_at = ?, duration_s = ? WHERE id = ? AND state = ?",
            (COMPOSING, _ts(stopped_at) if stopped_at else None, duration, recording_id, RECORDING))
        await self.db.commit()

    async def recording_composed(self, recording_id: str, file: str, size: int, duration: float,
                                 timeline: list[dict[str, Any]], stopped_at: datetime) -> bool:
        cursor = await self.db.execute(
            "UPDATE recordings SET state = ?, file = ?, size_bytes = ?, duration_s = ?, timeline = ?,"
            " stopped_at = COALESCE(stopped_at, ?), error = '' WHERE id = ? AND state = ?",
            (READY, file, size, duration, json.dumps(timeline), _ts(stopped_at), recording_id, COMPOSING))
        await self.db.commit()
        return cursor.rowcount == 1

    async def recording_attempt_failed(self, recording_id: str, attempts: int, error: str,
                                       failed: bool) -> None:
        await self.db.execute(
            "UPDATE recordings SET attempts = ?, error = ?, state = CASE WHEN ? THEN 'failed' ELSE state END"
            " WHERE id = ? AND state = ?", (attempts, error[:500], int(failed), recording_id, COMPOSING))
        await self.db.commit()

    async def recording_retry(self, recording_id: str) -> bool:
        cursor = await self.db.execute(
            "UPDATE recordings SET state = ?, attempts = 0, error = '' WHERE id = ? AND state = ?",
            (COMPOSING, recording_id, FAILED))
        await self.db.commit()
        return cursor.rowcount == 1

    async def recordings_expired(self, now: datetime) -> list[Recording]:
        return await self._recordings("WHERE state NOT IN (?, ?) AND expires_at <= ? ORDER BY expires_at",
                                      (DELETED, RECORDING, _ts(now)))

    async def recordings_to_remind(self, before: datetime) -> list[Recording]:
        return await self._recordings("WHERE state = ? AND reminded = 0 AND expires_at <= ?",
                                      (READY, _ts(before)))

    async def recording_reminded(self, recording_id: str) -> None:
        await self.db.execute("UPDATE recordings SET reminded = 1 WHERE id = ?", (recording_id,))
        await self.db.commit()

    async def recording_deleted(self, recording_id: str, at: datetime) -> None:
        await self.db.execute(
            "UPDATE recordings SET state = ?, file = '', size_bytes = 0, timeline = '[]', deleted_at = ?"
            " WHERE id = ?", (DELETED, _ts(at), recording_id))
        await self.db.commit()

    async def _recordings(self, where: str, params: tuple[Any, ...]) -> list[Recording]:
        async with self.db.execute(f"SELECT {_RECORDING_COLUMNS} FROM recordings r {where}", params) as cursor:
            rows = await cursor.fetchall()
        return [_recording(row) for row in rows]

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


_RECORDING_COLUMNS = (
    "r.id, r.meeting_id, r.state, r.started_at, r.expires_at, r.stopped_at, r.duration_s, r.file,"
    " r.size_bytes, r.timeline, r.reminded, r.attempts, r.error, r.deleted_at"
)


def _ts(value: datetime) -> str:
    """Times as UTC ISO strings of one shape, so SQL compares them as text correctly."""
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _recording(row: Any) -> Recording:
    return Recording(
        id=row[0], meeting_id=row[1], state=row[2], started_at=datetime.fromisoformat(row[3]),
        expires_at=datetime.fromisoformat(row[4]), stopped_at=_time(row[5]), duration=row[6],
        file=row[7], size=row[8], timeline=json.loads(row[9]), reminded=bool(row[10]),
        attempts=row[11], error=row[12], deleted_at=_time(row[13]),
    )
