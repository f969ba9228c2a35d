"""Stopping a recording while another connection holds the store's write lock.

The people in the meeting must hear at once that recording stopped; the row follows when
the store can be written, or at the next start if the server goes first.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from meeting.config import Config
from meeting.events import Bus
from meeting.models import Origin
from meeting.recording.model import COMPOSING, RECORDING
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import serving, wait_for
from bench.fake_sfu import FakeSfu
from tests.signaling_client import join
from tests.web.test_record_api import host_key, post
from web.keys import RECORDINGS


@contextmanager
def write_locked(path: str) -> Iterator[sqlite3.Connection]:
    """A second connection holding the write lock (``BEGIN IMMEDIATE``) until the block ends."""
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        yield locker
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def state_seen_by(locker: sqlite3.Connection, recording_id: str) -> str:
    return locker.execute("SELECT state FROM recordings WHERE id = ?", (recording_id,)).fetchone()[0]


async def test_a_host_stops_recording_while_the_store_is_locked_everyone_is_told_and_the_row_settles_after(
        config: Config, store: SqliteStore, meetings: MeetingService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    minted = await meetings.mint("Locked", Origin("web"))
    sfu = FakeSfu()
    async with serving(config, store, sfu=sfu) as (client, _):
        client.app[RECORDINGS].settle_retry = 0.05
        host, _ = await join(client, minted.meeting.id, "Hana", host_key(minted))
        guest, _ = await join(client, minted.meeting.id, "Gus")
        status, started = await post(client, minted.meeting.id, {"action": "start"}, host_key(minted))
        assert status == 200 and started["active"] is True
        for socket in (host, guest):
            assert (await socket.next("recording", timeout=20))["active"] is True
        [(recording, _)] = await store.all_recordings()

        with write_locked(config.store.path) as locker:
            # The answer comes while the lock is still held: nobody waits on the store.
            status, stopped = await post(client, minted.meeting.id, {"action": "stop"}, host_key(minted))
            assert status == 200 and stopped == {"active": False, "url": started["url"]}
            for socket in (host, guest):
                message = await socket.next("recording", timeout=20)
                assert message["active"] is False and message["reason"] == "host"
            assert sfu.observed == {}  # the recorder is off the media
            assert state_seen_by(locker, recording.id) == RECORDING  # not written yet

        async def settled() -> bool:
            row = await store.get_recording(recording.id)
            return row is not None and row.state == COMPOSING
        await wait_for(settled, timeout=30)
        row = await store.get_recording(recording.id)
        assert row is not None and row.duration is not None and row.stopped_at is not None
        # Stopping again changes nothing.
        assert (await post(client, minted.meeting.id, {"action": "stop"}, host_key(minted))) == (200, {"active": False})
    assert recording.id not in caplog.text


async def test_a_row_still_unwritten_at_shutdown_is_settled_by_the_next_start(
        config: Config, store: SqliteStore, meetings: MeetingService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    minted = await meetings.mint("Locked", Origin("web"))
    sfu = FakeSfu()
    service = RecordingService(config, store, Bus())
    # A long pause after the first failed write, so shutdown finds the row unwritten for sure.
    service.settle_retry, service.close_grace = 600.0, 0.1
    status = await service.start_recording(minted.meeting, sfu.open(minted.meeting.id), lambda pid: "Pat")
    recording_id = status.recording_id
    assert recording_id is not None
    with write_locked(config.store.path) as locker:
        stopped = await service.stop_recording(minted.meeting.id)
        assert stopped.active is False and stopped.recording_id == recording_id
        # The first write gives up after the store's busy timeout, and says so (id shortened).
        await wait_for(lambda: any("recording row not written" in r.getMessage() for r in caplog.records),
                       timeout=30)
        await service.close()  # the server goes down before the store frees up
        assert state_seen_by(locker, recording_id) == RECORDING
    assert any("left unsettled at shutdown" in r.getMessage() for r in caplog.records)
    assert (await store.get_recording(recording_id)).state == RECORDING  # type: ignore[union-attr]

    # The next start treats it as a recording cut short, as after a crash: queued for composing.
    restarted = RecordingService(config, store, Bus())
    await restarted.composer.start()
    try:
        assert (await store.get_recording(recording_id)).state == COMPOSING  # type: ignore[union-attr]
        assert any("recording interrupted" in r.getMessage() for r in caplog.records)
    finally:
        await restarted.close()
    assert recording_id not in caplog.text
