"""What only the PostgreSQL store does: migrations shared by servers starting together, a
version kept in the pg_url, outbox leases renewed while a server lives."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from meeting.models import Origin
from meeting.outbox import ANNOUNCE, Outbox
from meeting.service import MeetingService
from meeting.store.pg_migrations import MIGRATIONS, VERSION_TABLE
from meeting.store.postgres import PostgresStore, redact
from tests.conftest import wait_for


async def test_servers_starting_together_migrate_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url, max_connections=2) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert [await s.schema_version() for s in stores] == [len(MIGRATIONS)] * 4
        rows = await stores[0].pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_migrations_run_step_by_step_from_where_the_database_is(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(VERSION_TABLE)
        await conn.execute(MIGRATIONS[0])
        await conn.execute("INSERT INTO schema_migrations (version) VALUES (1)")
        await conn.execute("INSERT INTO meetings (id, title, created_at, origin_kind)"
                           " VALUES ('m1', 'Kept', now(), 'cli')")
    finally:
        await conn.close()
    store = PostgresStore(pg_url)
    await store.open()
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        assert (await store.get_meeting("m1")).title == "Kept"  # type: ignore[union-attr]
        assert await store.recordings_in(("ready",)) == []  # step 2's table is there
    finally:
        await store.close()


async def test_a_database_from_a_newer_meetnow_is_refused(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    await store.pool.execute("INSERT INTO schema_migrations (version) VALUES ($1)", len(MIGRATIONS) + 5)
    await store.close()
    newer = PostgresStore(pg_url)
    with pytest.raises(RuntimeError, match="newer than this meetnow knows"):
        await newer.open()
    with pytest.raises(RuntimeError, match="not open"):
        newer.pool  # closed again after the refusal


async def test_a_long_delivery_keeps_its_hold(pg_url: str) -> None:
    holder = PostgresStore(pg_url, lease_s=6.0)
    await holder.open()
    other = PostgresStore(pg_url)
    await other.open()
    try:
        meeting = (await MeetingService(holder, "http://x").mint("m", Origin("slack", "T", "C", "A"))).meeting
        await Outbox(holder).put("announce:x", meeting.id, "slack", ANNOUNCE, {})
        [entry] = await holder.outbox_due(1e12, ["slack"], 10)
        first = await holder.pool.fetchval("SELECT claimed_until FROM outbox")

        async def renewed() -> bool:
            return await holder.pool.fetchval("SELECT claimed_until FROM outbox") > first

        await wait_for(renewed, timeout=30)
        # The lease runs from the latest renewal: a live holder keeps the entry.
        assert await other.outbox_due(1e12, ["slack"], 10) == []
        await holder.outbox_finish(entry.id, entry.version, "done", "")
        assert await holder.pool.fetchval("SELECT claimed_by FROM outbox") is None
    finally:
        await other.close()
        await holder.close()


def test_urls_are_shown_without_their_password() -> None:
    assert redact("postgresql://meetnow:p%40ss:word@db:5432/m") == "postgresql://meetnow@db:5432/m"
    assert redact("postgresql://meetnow@/m?host=/run/postgresql&password=x") == (
        "postgresql://meetnow@/m?host=%2Frun%2Fpostgresql")
    assert redact("postgres://db/m") == "postgres://db/m"
