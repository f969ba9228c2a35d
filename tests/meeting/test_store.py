from datetime import datetime, timezone
from pathlib import Path

from meeting import ids
from meeting.store.migrations import MIGRATIONS
from meeting.models import Meeting, Origin
from meeting.store.sqlite import SqliteStore


def _meeting(origin: Origin | None = None) -> Meeting:
    return Meeting(
        id=ids.new_id(),
        title="Planning",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        origin=origin or Origin("slack", "T1", "C1", "Alice"),
    )


async def test_meeting_round_trips(store: SqliteStore) -> None:
    meeting = _meeting()
    await store.add_meeting(meeting, ids.hash_key("k"))
    assert await store.get_meeting(meeting.id) == meeting
    assert await store.get_meeting(ids.new_id()) is None


async def test_schema_is_migrated_and_in_wal_mode(store: SqliteStore) -> None:
    assert await store.schema_version() == len(MIGRATIONS)
    async with store.db.execute("PRAGMA journal_mode") as cursor:
        assert (await cursor.fetchone())[0] == "wal"


async def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "db" / "m.sqlite3"
    meeting = _meeting(Origin("cli"))
    first = SqliteStore(path)
    await first.open()
    await first.add_meeting(meeting, ids.hash_key("k"))
    await first.close()
    second = SqliteStore(path)
    await second.open()
    assert await second.get_meeting(meeting.id) == meeting
    assert await second.schema_version() == len(MIGRATIONS)
    await second.close()


async def test_host_keys_belong_to_their_meeting(store: SqliteStore) -> None:
    a, b = _meeting(), _meeting()
    await store.add_meeting(a, ids.hash_key("ka"))
    await store.add_meeting(b, ids.hash_key("kb"))
    await store.add_host_key(a.id, ids.hash_key("ka2"))
    assert await store.is_host_key(a.id, ids.hash_key("ka"))
    assert await store.is_host_key(a.id, ids.hash_key("ka2"))
    assert not await store.is_host_key(a.id, ids.hash_key("kb"))
    assert not await store.is_host_key(b.id, ids.hash_key("ka"))


async def test_channel_room_first_writer_wins(store: SqliteStore) -> None:
    a, b = _meeting(), _meeting()
    await store.add_meeting(a, ids.hash_key("ka"))
    await store.add_meeting(b, ids.hash_key("kb"))
    assert await store.channel_meeting("slack", "T1", "C1") is None
    assert await store.set_channel_meeting("slack", "T1", "C1", a.id) == a.id
    assert await store.set_channel_meeting("slack", "T1", "C1", b.id) == a.id
    assert await store.channel_meeting("slack", "T1", "C2") is None
    assert await store.channel_meeting("discord", "T1", "C1") is None
