"""Numbered schema migrations for PostgreSQL. Append only: a released step is never edited.

Step N has the same number and intent as step N in ``migrations.py`` (SQLite's), written
for PostgreSQL: real times, booleans and JSON. The version lives in the database, one row
per applied step in ``schema_migrations``. Step 1 differs in one way on purpose: several
servers may share one PostgreSQL, so the outbox has a lease (``claimed_by``,
``claimed_until``) that a single-process SQLite store does not need.
"""

from __future__ import annotations

# Made by the store before step 1, so the version can be read before any step has run.
VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: meetings, their host keys, chat channels' standing rooms, and the outbox
    """
    CREATE TABLE meetings (
        id               TEXT PRIMARY KEY,
        title            TEXT NOT NULL,
        created_at       TIMESTAMPTZ NOT NULL,
        origin_kind      TEXT NOT NULL,
        origin_workspace TEXT NOT NULL DEFAULT '',
        origin_channel   TEXT NOT NULL DEFAULT '',
        origin_creator   TEXT NOT NULL DEFAULT '',
        e2ee             BOOLEAN NOT NULL DEFAULT false
    );
    -- Only hashes: a copy of the database grants no host powers. A meeting may have many hosts.
    CREATE TABLE host_keys (
        key_hash   TEXT PRIMARY KEY,
        meeting_id TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE
    );
    CREATE INDEX host_keys_meeting ON host_keys(meeting_id);
    -- The primary key is what keeps a channel's standing room one meeting under races.
    CREATE TABLE channel_rooms (
        platform     TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        channel_id   TEXT NOT NULL,
        meeting_id   TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        PRIMARY KEY (platform, workspace_id, channel_id)
    );
    -- The chat message that shows a meeting (the latest post), edited by live status.
    CREATE TABLE chat_posts (
        meeting_id  TEXT PRIMARY KEY REFERENCES meetings(id) ON DELETE CASCADE,
        platform    TEXT NOT NULL,
        channel_id  TEXT NOT NULL,
        message_ref TEXT NOT NULL
    );
    -- What is still to be said in chat. event_key makes enqueueing idempotent; a pending
    -- status row is overwritten in place, so a burst of changes makes one edit. A server
    -- delivering an entry holds it (claimed_by, claimed_until, renewed while it lives), so
    -- no other server delivers it too; a lapsed hold means its server died.
    CREATE TABLE outbox (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_key     TEXT NOT NULL UNIQUE,
        meeting_id    TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        platform      TEXT NOT NULL,
        kind          TEXT NOT NULL,
        payload       JSONB NOT NULL,
        state         TEXT NOT NULL DEFAULT 'pending',
        attempts      INTEGER NOT NULL DEFAULT 0,
        version       INTEGER NOT NULL DEFAULT 0,
        next_at       DOUBLE PRECISION NOT NULL,
        created_at    DOUBLE PRECISION NOT NULL,
        last_error    TEXT NOT NULL DEFAULT '',
        claimed_by    TEXT,
        claimed_until TIMESTAMPTZ
    );
    CREATE INDEX outbox_due ON outbox(state, next_at);
    CREATE INDEX outbox_claimed ON outbox(claimed_by) WHERE claimed_by IS NOT NULL;
    """,
    # 2: recordings, kept as tombstones once deleted so their links can say so
    """
    CREATE TABLE recordings (
        id          TEXT PRIMARY KEY,
        meeting_id  TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        state       TEXT NOT NULL,
        started_at  TIMESTAMPTZ NOT NULL,
        expires_at  TIMESTAMPTZ NOT NULL,
        stopped_at  TIMESTAMPTZ,
        duration_s  DOUBLE PRECISION,
        file        TEXT NOT NULL DEFAULT '',
        size_bytes  BIGINT NOT NULL DEFAULT 0,
        timeline    JSONB NOT NULL DEFAULT '[]',
        reminded    BOOLEAN NOT NULL DEFAULT false,
        attempts    INTEGER NOT NULL DEFAULT 0,
        error       TEXT NOT NULL DEFAULT '',
        deleted_at  TIMESTAMPTZ
    );
    CREATE INDEX recordings_meeting ON recordings(meeting_id);
    CREATE INDEX recordings_expiry ON recordings(state, expires_at);
    """,
)
