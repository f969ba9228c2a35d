"""Numbered schema migrations. Append only: a released step is never edited.

Step N brings the database from version N-1 to N; the version lives in SQLite's
``user_version`` so it is read without a table.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: meetings
    """
    CREATE TABLE meetings (
        id               TEXT PRIMARY KEY,
        title            TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        origin_kind      TEXT NOT NULL,
        origin_workspace TEXT NOT NULL DEFAULT '',
        origin_channel   TEXT NOT NULL DEFAULT '',
        origin_creator   TEXT NOT NULL DEFAULT '',
        host_key_hash    TEXT NOT NULL
    );
    """,
)
