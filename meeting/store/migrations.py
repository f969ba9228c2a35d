"""Numbered schema migrations. Append only: a released step is never edited.

Step N brings the database from version N-1 to N; the version lives in SQLite's
``user_version`` so it is read without a table.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: meetings, their host keys, chat channels' standing rooms, and the outbox
    """
    CREATE TABLE meetings (
        id               TEXT PRIMARY KEY,
        title            TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        origin_kind      TEXT NOT NULL,
        origin_workspace TEXT NOT NULL DEFAULT '',
        origin_channel   TEXT NOT NULL DEFAULT '',
        origin_creator   TEXT NOT NULL DEFAULT '',
        e2ee             INTEGER NOT NULL DEFAULT 0
    );
    -- Only hashes: a copy of the database grants no host powers. A meeting may have many hosts.
    CREATE TABLE host_keys (
        key_hash   TEXT PRIMARY KEY,
        meeting_id TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE
    );
    CREATE INDEX host_keys_meeting ON host_keys(meeting_id);
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
    -- status row is overwritten in place, so a burst of changes makes one edit.
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        event_key   TEXT NOT NULL UNIQUE,
        meeting_id  TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        platform    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        version     INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL,
        created_at  REAL NOT NULL,
        last_error  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox(state, next_at);
    """,
    # 2: recordings, kept as tombstones once deleted so their links can say so
    """
    CREATE TABLE recordings (
        id          TEXT PRIMARY KEY,
        meeting_id  TEXT NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
        state       TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        expires_at  TEXT NOT NULL,
        stopped_at  TEXT,
        duration_s  REAL,
        file        TEXT NOT NULL DEFAULT '',
        size_bytes  INTEGER NOT NULL DEFAULT 0,
        timeline    TEXT NOT NULL DEFAULT '[]',
        reminded    INTEGER NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        error       TEXT NOT NULL DEFAULT '',
        deleted_at  TEXT
    );
    CREATE INDEX recordings_meeting ON recordings(meeting_id);
    CREATE INDEX recordings_expiry ON recordings(state, expires_at);
    """,
)
