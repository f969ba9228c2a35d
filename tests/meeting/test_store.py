"""The store's contract, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from meeting import ids
from meeting.config import Config
from meeting.models import Meeting, Origin
from meeting.recording.model import COMPOSING, DELETED, FAILED, READY, RECORDING, Recording
from meeting.store.base import Store
from meeting.store.migrations import MIGRATIONS
from meeting.store.pg_migrations import MIGRATIONS as PG_MIGRATIONS
from meeting.store.sqlite import SqliteStore
from tests.stores import same_database

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def store(each_store: Store) -> Store:
    """Every test here runs on both stores."""
    return each_store


def _meeting(origin: Origin | None = None) -> Meeting:
    return Meeting(
        id=ids.new_id(),
        title="Planning",
        created_at=START,
        origin=origin or Origin("slack", "T1", "C1", "Alice"),
    )


async def test_meeting_round_trips(store: Store) -> None:
    meeting = _meeting()
    await store.add_meeting(meeting, ids.hash_key("k"))
    assert await store.get_meeting(meeting.id) == meeting
    assert await store.get_meeting(ids.new_id()) is None
    e2ee = Meeting(id=ids.new_id(), title="Secret", created_at=START + timedelta(microseconds=5),
                   origin=Origin("web"), e2ee=True)
    await store.add_meeting(e2ee, ids.hash_key("k2"))
    assert await store.get_meeting(e2ee.id) == e2ee


async def test_schema_is_migrated(store: Store) -> None:
    # Both lists move together: step N means the same on either database.
    assert len(PG_MIGRATIONS) == len(MIGRATIONS)
    assert await store.schema_version() == len(MIGRATIONS)


async def test_sqlite_is_in_wal_mode(config: Config) -> None:
    store = SqliteStore(config.store.path)
    await store.open()
    try:
        async with store.db.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone())[0] == "wal"
    finally:
        await store.close()


async def test_reopening_keeps_data_and_does_not_migrate_twice(store: Store) -> None:
    meeting = _meeting(Origin("cli"))
    await store.add_meeting(meeting, ids.hash_key("k"))
    await store.close()
    second = same_database(store)
    await second.open()
    try:
        assert await second.get_meeting(meeting.id) == meeting
        assert await second.schema_version() == len(MIGRATIONS)
    finally:
        await second.close()


async def test_host_keys_belong_to_their_meeting(store: Store) -> None:
    a, b = _meeting(), _meeting()
    await store.add_meeting(a, ids.hash_key("ka"))
    await store.add_meeting(b, ids.hash_key("kb"))
    await store.add_host_key(a.id, ids.hash_key("ka2"))
    assert await store.is_host_key(a.id, ids.hash_key("ka"))
    assert await store.is_host_key(a.id, ids.hash_key("ka2"))
    assert not await store.is_host_key(a.id, ids.hash_key("kb"))
    assert not await store.is_host_key(b.id, ids.hash_key("ka"))


async def test_channel_room_first_writer_wins(store: Store) -> None:
    a, b = _meeting(), _meeting()
    await store.add_meeting(a, ids.hash_key("ka"))
    await store.add_meeting(b, ids.hash_key("kb"))
    assert await store.channel_meeting("slack", "T1", "C1") is None
    assert await store.set_channel_meeting("slack", "T1", "C1", a.id) == a.id
    assert await store.set_channel_meeting("slack", "T1", "C1", b.id) == a.id
    assert await store.channel_meeting("slack", "T1", "C2") is None
    assert await store.channel_meeting("discord", "T1", "C1") is None


async def test_channel_room_stays_one_meeting_when_many_race(store: Store) -> None:
    candidates = [_meeting() for _ in range(12)]
    for m in candidates:
        await store.add_meeting(m, ids.hash_key(m.id))
    winners = await asyncio.gather(*(store.set_channel_meeting("discord", "G", "C", m.id) for m in candidates))
    assert len(set(winners)) == 1 and winners[0] in {m.id for m in candidates}
    assert await store.channel_meeting("discord", "G", "C") == winners[0]


def _recording(meeting_id: str, started: datetime, state: str = RECORDING) -> Recording:
    return Recording(id=ids.new_id(), meeting_id=meeting_id, state=state, started_at=started,
                     expires_at=started + timedelta(days=30))


async def test_a_recording_goes_through_its_life(store: Store) -> None:
    meeting = _meeting()
    await store.add_meeting(meeting, ids.hash_key("k"))
    # Kept to the second, in UTC, whatever the zone it was given in.
    started = datetime(2026, 1, 2, 5, 4, 5, 999_000, tzinfo=timezone(timedelta(hours=2)))
    recording = _recording(meeting.id, started)
    await store.add_recording(recording)
    kept = await store.get_recording(recording.id)
    assert kept == Recording(id=recording.id, meeting_id=meeting.id, state=RECORDING,
                             started_at=START, expires_at=START + timedelta(days=30))
    assert kept is not None and kept.started_at.utcoffset() == timedelta(0)

    await store.recording_stopped(recording.id, START + timedelta(minutes=5), None)
    timeline = [{"name": "Ann", "start": 0.0, "end": 4.5}]
    assert await store.recording_composed(recording.id, "meeting.webm", 1234, 300.5, timeline,
                                          START + timedelta(minutes=9))
    assert not await store.recording_composed(recording.id, "again.webm", 1, 1.0, [], START)
    ready = await store.get_recording(recording.id)
    assert ready is not None
    assert (ready.state, ready.file, ready.size, ready.duration, ready.timeline) == (
        READY, "meeting.webm", 1234, 300.5, timeline)
    assert ready.stopped_at == START + timedelta(minutes=5)  # the first stop time stays
    assert await store.meeting_recordings(meeting.id) == [ready]
    assert await store.all_recordings() == [(ready, "Planning")]

    assert await store.recordings_to_remind(START + timedelta(days=29)) == []
    soon = START + timedelta(days=30, hours=1)
    assert await store.recordings_to_remind(soon) == [ready]
    await store.recording_reminded(recording.id)
    assert await store.recordings_to_remind(soon) == []
    assert await store.recordings_expired(START + timedelta(days=29)) == []
    expired = await store.recordings_expired(START + timedelta(days=31))
    assert [r.id for r in expired] == [recording.id]
    await store.recording_deleted(recording.id, START + timedelta(days=31))
    gone = await store.get_recording(recording.id)
    assert gone is not None
    assert (gone.state, gone.file, gone.size, gone.timeline, gone.deleted_at) == (
        DELETED, "", 0, [], START + timedelta(days=31))
    assert await store.meeting_recordings(meeting.id) == []
    assert await store.recordings_expired(START + timedelta(days=40)) == []


async def test_a_failed_recording_is_retried_only_when_failed(store: Store) -> None:
    meeting = _meeting()
    await store.add_meeting(meeting, ids.hash_key("k"))
    first = _recording(meeting.id, START)
    second = _recording(meeting.id, START + timedelta(hours=1))
    await store.add_recording(first)
    await store.add_recording(second)
    await store.recording_stopped(first.id, None, None)
    await store.recording_attempt_failed(first.id, 1, "decoder said no", failed=False)
    row = await store.get_recording(first.id)
    assert row is not None and (row.state, row.attempts, row.error) == (COMPOSING, 1, "decoder said no")
    assert not await store.recording_retry(first.id)  # composing, not failed
    await store.recording_attempt_failed(first.id, 2, "x" * 900, failed=True)
    row = await store.get_recording(first.id)
    assert row is not None and (row.state, row.attempts, len(row.error)) == (FAILED, 2, 500)
    assert [r.id for r in await store.recordings_in((FAILED, RECORDING))] == [first.id, second.id]
    assert await store.recording_retry(first.id)
    row = await store.get_recording(first.id)
    assert row is not None and (row.state, row.attempts, row.error) == (COMPOSING, 0, "")
    assert [r.id for r in await store.recordings_in((COMPOSING,))] == [first.id]
    assert [r.id for r in await store.meeting_recordings(meeting.id)] == [second.id, first.id]
