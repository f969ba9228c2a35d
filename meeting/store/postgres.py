"""The shared store: PostgreSQL through an asyncpg pool, for several servers on one database.

Beside what ``SqliteStore`` does, it keeps two promises across processes:

- A chat post goes out once. ``outbox_due`` *claims* the entries it returns (``FOR UPDATE
  SKIP LOCKED``, so concurrent claimers never take the same row and never wait on each
  other) with a lease in the database's clock. The lease is renewed while this store is
  open; only the holder settles an entry (``outbox_finish``/``outbox_retry``), which frees
  it. A store that dies stops renewing, its leases lapse and any other server takes the
  entries. One ``Outbox`` per store: a new pass takes back what an earlier pass of the same
  store left unsettled (after an error).
- A channel's standing room is one meeting: the primary key plus ``ON CONFLICT DO NOTHING``
  lets the first writer win; everyone reads the winner back afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from meeting.logfmt import kv
from meeting.models import Meeting, Origin
from meeting.outbox import ANNOUNCE, ChatPost, OutboxEntry
from meeting.recording.model import COMPOSING, DELETED, FAILED, READY, RECORDING, Recording
from meeting.store.pg_migrations import MIGRATIONS, VERSION_TABLE

log = logging.getLogger(__name__)

SCHEMES = ("postgresql://", "postgres://")
OUTBOX_LEASE_S = 60.0  # how long a dead server's claimed posts wait before another takes them
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0  # a query stuck this long fails instead of stalling its caller
CLOSE_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 10
# Any number, the same in every meetnow: migrations take this lock so two servers starting
# at once do not both run a step.
_MIGRATION_LOCK = 0x6D6565746E6F77  # "meetnow"


def redact(url: str) -> str:
    """``url`` without its password (in the address or as a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = user.split(":", 1)[0] + "@" + host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class PostgresStore:
    """``Store`` on a PostgreSQL database. Open it before use; close it at shutdown."""

    def __init__(self, url: str, *, lease_s: float = OUTBOX_LEASE_S,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.url = url
        self.lease_s = lease_s
        self.max_connections = max_connections
        # This store's name on the outbox entries it holds: unique per process and opening.
        self.node = secrets.token_hex(8)
        self._pool: asyncpg.Pool | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        """The database, as it may be shown or logged (no password)."""
        return redact(self.url)

    async def open(self) -> None:
        """Connect and migrate; raises OSError, asyncpg.PostgresError or asyncpg.InterfaceError."""
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.max_connections, timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S, server_settings={"application_name": "meetnow"})
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        try:
            # What this server held but did not settle is free at once, not after the lease.
            await pool.execute("UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                               " WHERE claimed_by = $1", self.node)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
            log.warning("outbox claims not released %s", kv(error=type(exc).__name__))
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            pool.terminate()

    async def schema_version(self) -> int:
        return await self.pool.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")

    async def add_meeting(self, meeting: Meeting, host_key_hash: str) -> None:
        o = meeting.origin
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO meetings (id, title, created_at, origin_kind, origin_workspace,"
                " origin_channel, origin_creator, e2ee) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                meeting.id, meeting.title, meeting.created_at, o.kind, o.workspace_id, o.channel_id,
                o.creator_name, meeting.e2ee)
            await conn.execute("INSERT INTO host_keys (key_hash, meeting_id) VALUES ($1, $2)",
                               host_key_hash, meeting.id)

    async def get_meeting(self, meeting_id: str) -> Meeting | None:
        row = await self.pool.fetchrow(
            "SELECT id, title, created_at, origin_kind, origin_workspace, origin_channel,"
            " origin_creator, e2ee FROM meetings WHERE id = $1", meeting_id)
        if row is None:
            return None
        return Meeting(
            id=row[0], title=row[1], created_at=row[2],
            origin=Origin(kind=row[3], workspace_id=row[4], channel_id=row[5], creator_name=row[6]),
            e2ee=row[7],
        )

    async def add_host_key(self, meeting_id: str, key_hash: str) -> None:
        await self.pool.execute("INSERT INTO host_keys (key_hash, meeting_id) VALUES ($1, $2)",
                                key_hash, meeting_id)

    async def is_host_key(self, meeting_id: str, key_hash: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT 1 FROM host_keys WHERE key_hash = $1 AND meeting_id = $2", key_hash, meeting_id)
        return found is not None

    async def channel_meeting(self, platform: str, workspace_id: str, channel_id: str) -> str | None:
        return await self.pool.fetchval(
            "SELECT meeting_id FROM channel_rooms WHERE platform = $1 AND workspace_id = $2"
            " AND channel_id = $3", platform, workspace_id, channel_id)

    async def set_channel_meeting(self, platform: str, workspace_id: str, channel_id: str,
                                  meeting_id: str) -> str:
        # Two statements on purpose: a SELECT in the INSERT's statement would not see a row
        # that a concurrent writer committed after this statement began.
        await self.pool.execute(
            "INSERT INTO channel_rooms (platform, workspace_id, channel_id, meeting_id)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            platform, workspace_id, channel_id, meeting_id)
        winner = await self.channel_meeting(platform, workspace_id, channel_id)
        assert winner is not None
        return winner

    # ---- outbox

    async def outbox_put(self, event_key: str, meeting_id: str, platform: str, kind: str,
                         payload: str, next_at: float, replace: bool) -> None:
        sql = (
            "INSERT INTO outbox (event_key, meeting_id, platform, kind, payload, next_at, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6)"
        )
        if replace:
            # A claim stays with its holder: its settling sees the newer version and only frees it.
            sql += (
                " ON CONFLICT (event_key) DO UPDATE SET payload = excluded.payload,"
                " state = 'pending', attempts = 0, version = outbox.version + 1, last_error = '',"
                " next_at = CASE WHEN outbox.state = 'pending' THEN outbox.next_at"
                " ELSE excluded.next_at END"
            )
        else:
            sql += " ON CONFLICT (event_key) DO NOTHING"
        await self.pool.execute(sql, event_key, meeting_id, platform, kind, payload, next_at)

    async def outbox_due(self, now: float, platforms: list[str], limit: int) -> list[OutboxEntry]:
        """Claim up to ``limit`` due entries for this store and return them, oldest first."""
        if not platforms:
            return []
        self._start_renewing()
        rows = await self.pool.fetch(
            "WITH due AS ("
            " SELECT id FROM outbox"
            " WHERE state = 'pending' AND next_at <= $1 AND platform = ANY($2::text[])"
            " AND (claimed_by IS NULL OR claimed_by = $3 OR claimed_until < clock_timestamp())"
            " ORDER BY next_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " UPDATE outbox o SET claimed_by = $3,"
            " claimed_until = clock_timestamp() + make_interval(secs => $5)"
            " FROM due WHERE o.id = due.id"
            " RETURNING o.id, o.event_key, o.meeting_id, o.platform, o.kind, o.payload, o.attempts,"
            " o.version, o.next_at",
            now, platforms, self.node, limit, self.lease_s)
        rows = sorted(rows, key=lambda r: (r["next_at"], r["id"]))  # RETURNING keeps no order
        return [OutboxEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    async def outbox_next_due(self, platforms: list[str]) -> float | None:
        if not platforms:
            return None
        # Entries another live server holds are its business; a lapsed hold counts as due.
        return await self.pool.fetchval(
            "SELECT MIN(next_at) FROM outbox WHERE state = 'pending' AND platform = ANY($1::text[])"
            " AND (claimed_by IS NULL OR claimed_by = $2 OR claimed_until < clock_timestamp())",
            platforms, self.node)

    async def outbox_backlog(self) -> dict[str, tuple[int, float]]:
        rows = await self.pool.fetch(
            "SELECT platform, COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending' GROUP BY platform")
        return {row[0]: (int(row[1]), float(row[2])) for row in rows}

    async def outbox_pending_announce(self, meeting_id: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT 1 FROM outbox WHERE meeting_id = $1 AND kind = $2 AND state = 'pending' LIMIT 1",
            meeting_id, ANNOUNCE)
        return found is not None

    async def outbox_finish(self, entry_id: int, version: int, state: str, error: str) -> None:
        # Only the holder settles, and it always lets go. A status rewritten during delivery
        # has a newer version: it stays pending, free for the next pass. What was needed to
        # answer the person (a Slack response_url is a bearer URL) is not kept once settled.
        await self.pool.execute(
            "UPDATE outbox SET"
            " state = CASE WHEN version = $2 THEN $3 ELSE state END,"
            " last_error = CASE WHEN version = $2 THEN $4 ELSE last_error END,"
            " payload = CASE WHEN version = $2 AND kind = $5 THEN payload - 'reply' ELSE payload END,"
            " claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $1 AND claimed_by = $6",
            entry_id, version, state, error, ANNOUNCE, self.node)

    async def outbox_retry(self, entry_id: int, version: int, attempts: int, next_at: float,
                           error: str) -> None:
        # A status rewritten meanwhile is a new message with a fresh count: leave it be.
        await self.pool.execute(
            "UPDATE outbox SET"
            " attempts = CASE WHEN version = $2 THEN $3 ELSE attempts END,"
            " next_at = CASE WHEN version = $2 THEN $4 ELSE next_at END,"
            " last_error = CASE WHEN version = $2 THEN $5 ELSE last_error END,"
            " claimed_by = NULL, claimed_until = NULL"
            " WHERE id = $1 AND claimed_by = $6",
            entry_id, version, attempts, next_at, error, self.node)

    async def get_post(self, meeting_id: str) -> ChatPost | None:
        row = await self.pool.fetchrow(
            "SELECT meeting_id, platform, channel_id, message_ref FROM chat_posts WHERE meeting_id = $1",
            meeting_id)
        return ChatPost(*row) if row else None

    async def save_post(self, post: ChatPost) -> None:
        await self.pool.execute(
            "INSERT INTO chat_posts (meeting_id, platform, channel_id, message_ref) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (meeting_id) DO UPDATE SET platform = excluded.platform,"
            " channel_id = excluded.channel_id, message_ref = excluded.message_ref",
            post.meeting_id, post.platform, post.channel_id, post.message_ref)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_claims())

    async def _renew_claims(self) -> None:
        """Keep this store's claims alive while it lives (a long delivery keeps its hold)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.pool.execute(
                    "UPDATE outbox SET claimed_until = clock_timestamp() + make_interval(secs => $2)"
                    " WHERE claimed_by = $1", self.node, self.lease_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                log.warning("outbox claims not renewed %s", kv(error=type(exc).__name__))

    # ---- recordings

    async def add_recording(self, recording: Recording) -> None:
        r = recording
        await self.pool.execute(
            "INSERT INTO recordings (id, meeting_id, state, started_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
            r.id, r.meeting_id, r.state, _ts(r.started_at), _ts(r.expires_at))

    async def get_recording(self, recording_id: str) -> Recording | None:
        rows = await self._recordings("WHERE id = $1", recording_id)
        return rows[0] if rows else None

    async def recordings_in(self, states: tuple[str, ...]) -> list[Recording]:
        return await self._recordings("WHERE state = ANY($1::text[]) ORDER BY started_at", list(states))

    async def meeting_recordings(self, meeting_id: str) -> list[Recording]:
        return await self._recordings("WHERE meeting_id = $1 AND state != $2 ORDER BY started_at DESC",
                                      meeting_id, DELETED)

    async def all_recordings(self) -> list[tuple[Recording, str]]:
        rows = await self.pool.fetch(
            f"SELECT {_RECORDING_COLUMNS}, m.title FROM recordings r JOIN meetings m ON m.id = r.meeting_id"
            " ORDER BY r.started_at DESC")
        return [(_recording(row), row["title"]) for row in rows]

    async def recording_stopped(self, recording_id: str, stopped_at: datetime | None,
                                duration: float | None) -> None:
        await self.pool.execute(
            "UPDATE recordings SET state = $1, stopped_at = $2, duration_s = $3 WHERE id = $4 AND state = $5",
            COMPOSING, _ts(stopped_at) if stopped_at else None, duration, recording_id, RECORDING)

    async def recording_composed(self, recording_id: str, file: str, size: int, duration: float,
                                 timeline: list[dict[str, Any]], stopped_at: datetime) -> bool:
        status = await self.pool.execute(
            "UPDATE recordings SET state = $1, file = $2, size_bytes = $3, duration_s = $4, timeline = $5,"
            " stopped_at = COALESCE(stopped_at, $6), error = '' WHERE id = $7 AND state = $8",
            READY, file, size, duration, json.dumps(timeline), _ts(stopped_at), recording_id, COMPOSING)
        return _changed(status) == 1

    async def recording_attempt_failed(self, recording_id: str, attempts: int, error: str,
                                       failed: bool) -> None:
        await self.pool.execute(
            "UPDATE recordings SET attempts = $1, error = $2,"
            " state = CASE WHEN $3 THEN $4 ELSE state END WHERE id = $5 AND state = $6",
            attempts, error[:500], failed, FAILED, recording_id, COMPOSING)

    async def recording_retry(self, recording_id: str) -> bool:
        status = await self.pool.execute(
            "UPDATE recordings SET state = $1, attempts = 0, error = '' WHERE id = $2 AND state = $3",
            COMPOSING, recording_id, FAILED)
        return _changed(status) == 1

    async def recordings_expired(self, now: datetime) -> list[Recording]:
        return await self._recordings(
            "WHERE state NOT IN ($1, $2) AND expires_at <= $3 ORDER BY expires_at", DELETED, RECORDING, _ts(now))

    async def recordings_to_remind(self, before: datetime) -> list[Recording]:
        return await self._recordings("WHERE state = $1 AND NOT reminded AND expires_at <= $2",
                                      READY, _ts(before))

    async def recording_reminded(self, recording_id: str) -> None:
        await self.pool.execute("UPDATE recordings SET reminded = true WHERE id = $1", recording_id)

    async def recording_deleted(self, recording_id: str, at: datetime) -> None:
        await self.pool.execute(
            "UPDATE recordings SET state = $1, file = '', size_bytes = 0, timeline = '[]', deleted_at = $2"
            " WHERE id = $3", DELETED, _ts(at), recording_id)

    async def _recordings(self, where: str, *params: Any) -> list[Recording]:
        rows = await self.pool.fetch(f"SELECT {_RECORDING_COLUMNS} FROM recordings r {where}", *params)
        return [_recording(row) for row in rows]

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def _migrate(self) -> None:
        # One step per transaction, each under a lock that makes a second server starting at
        # the same moment wait and then find the step done.
        async with self.pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await conn.execute(VERSION_TABLE)
                    current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                    if current > len(MIGRATIONS):
                        raise RuntimeError(
                            f"database {self.where} is at schema {current}, newer than this meetnow knows")
                    if current == len(MIGRATIONS):
                        return
                    version = current + 1
                    await conn.execute(MIGRATIONS[version - 1])
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                log.info("store migrated %s", kv(database=self.where, version=version))


_RECORDING_COLUMNS = (
    "r.id, r.meeting_id, r.state, r.started_at, r.expires_at, r.stopped_at, r.duration_s, r.file,"
    " r.size_bytes, r.timeline, r.reminded, r.attempts, r.error, r.deleted_at"
)


def _ts(value: datetime) -> datetime:
    """Recording times in UTC to the second, as the SQLite store keeps them."""
    return value.astimezone(timezone.utc).replace(microsecond=0)


def _changed(status: str) -> int:
    """Rows an UPDATE changed, from its command tag ("UPDATE 1")."""
    return int(status.rsplit(" ", 1)[-1])


def _recording(row: Any) -> Recording:
    return Recording(
        id=row[0], meeting_id=row[1], state=row[2], started_at=row[3], expires_at=row[4],
        stopped_at=row[5], duration=row[6], file=row[7], size=row[8], timeline=json.loads(row[9]),
        reminded=row[10], attempts=row[11], error=row[12], deleted_at=row[13],
    )
