"""A recording's id is the only credential for its file: no log line or stored error has it whole.

Each failure below puts the id into the error itself (it is the folder's name, and part of
the link), as real failures do.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.synthetic import encoded_media
from meeting import ids
from meeting.config import Config
from meeting.events import Bus, RecordingExpiring
from meeting.media.forwarder import Publication
from meeting.models import Origin
from meeting.recording.capture import RoomRecorder
from meeting.recording.failures import describe, is_disk_full, redact
from meeting.recording.jobs import Composer
from meeting.recording.model import FAILED, RECORDING, Recording
from meeting.recording.retention import Sweeper
from meeting.recording.trackfile import MANIFEST, track_file_name
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.meeting.record_files import person_recorded
from tests.meeting.test_record_orphans import SMALL
from tests.meeting.test_record_writer import OPUS_PT, publication, rtp

MADE = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)


def no_full_id(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """What the recording package logged holds each id only in its short form."""
    # (meeting.events' Bus logs a failing handler's exception as it is: see the report of
    # the events module, not checked here.)
    records = [r for r in caplog.records if r.name.startswith("meeting.recording")]
    text = "".join(caplog.handler.format(r) + "\n" for r in records)
    for secret in secrets:
        assert secret not in text
        assert ids.short(secret) in text  # the line is there, only shortened


def test_errors_are_described_with_ids_shortened() -> None:
    recording_id = ids.new_id()
    error = OSError(28, "No space left on device", f"/srv/recordings/{recording_id}/t01-mic.webm")
    said = describe(error)
    assert said == f"OSError: [Errno 28] No space left on device: '/srv/recordings/{ids.short(recording_id)}/t01-mic.webm'"
    assert is_disk_full(error) and not is_disk_full(ValueError("no"))
    try:
        try:
            raise error
        except OSError as exc:
            raise RuntimeError("the composed file does not open") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
    # Only tokens of an id's shape are cut; other words are left alone.
    assert redact("see http://x/r/" + recording_id + "?a=1 and parts_of_a_name") == (
        f"see http://x/r/{ids.short(recording_id)}?a=1 and parts_of_a_name")


async def test_a_track_that_cannot_be_written_is_logged_without_the_recording_id(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    recording_id = ids.new_id()
    folder = tmp_path / recording_id
    folder.mkdir()
    os.symlink("/dev/full", folder / track_file_name(1, "mic"))  # every write: ENOSPC
    recorder = RoomRecorder(folder, lambda pid: "Ann", ids.short(recording_id))
    recorder.start()
    pub = publication("mic", "audio", 2222)
    pub.tap = recorder.publication_started(pub)
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=1.0)
    for i, payload in enumerate(media.audio[:40]):
        pub.ingest(rtp(i, 960 * i, 2222, payload, True, OPUS_PT), 0, recorder.started + i * 0.02)
    await _wait_logged(caplog, "track write failed")
    recorder.publication_ended(pub)
    recorder.close()
    assert "No space left on device" in caplog.text
    no_full_id(caplog, recording_id)


async def _wait_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    await wait_for(lambda: any(text in r.getMessage() for r in caplog.records), timeout=20)


async def test_a_recorder_that_cannot_open_its_manifest_logs_its_traceback_without_the_id(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recording_id = ids.new_id()
    folder = tmp_path / recording_id
    (folder / MANIFEST).mkdir(parents=True)  # opening it for writing fails, naming the path
    recorder = RoomRecorder(folder, lambda pid: "Ann", ids.short(recording_id))
    recorder.start()
    recorder.close()
    assert "recorder failed" in caplog.text and "IsADirectoryError" in caplog.text
    assert "Traceback" in caplog.text
    no_full_id(caplog, recording_id)


async def test_compose_failures_and_their_rows_never_hold_the_full_id(
        config: Config, store: SqliteStore, meetings: MeetingService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    minted = await meetings.mint("Logs", Origin("web"))
    made = []
    for has_files in (False, True):
        recording = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                              expires_at=MADE + timedelta(days=30))
        if has_files:
            person_recorded(Path(config.recordings.folder) / recording.id,
                            encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0), 2.0)
        await store.add_recording(recording)
        await store.recording_stopped(recording.id, MADE + timedelta(seconds=2), 2.0)
        made.append(recording.id)
    missing, fine = made

    async def ready_handler_that_fails(recording: Recording, result: object) -> None:
        raise RuntimeError(f"could not post http://127.0.0.1:8080/r/{recording.id}")

    composer = Composer(store, Path(config.recordings.folder), 1, ready_handler_that_fails, SMALL)
    composer.retry_delay = 0.01
    await composer.start()
    try:
        async def settled() -> bool:
            rows = [await store.get_recording(r) for r in made]
            return [r.state for r in rows if r] == [FAILED, "ready"]
        await wait_for(settled, timeout=60)
    finally:
        await composer.close()
    failed = await store.get_recording(missing)
    assert failed is not None and failed.attempts == 3
    assert "No such file or directory" in failed.error and missing not in failed.error
    assert "recording ready handler failed" in caplog.text and "could not post" in caplog.text
    no_full_id(caplog, missing, fine)

    # The expiry reminder's failure (the chat adapter quoting the link) is logged shortened too.
    bus = Bus()

    async def reminder_that_fails(event: object) -> None:
        raise RuntimeError(f"channel gone for {getattr(event, 'url')}")

    bus.subscribe(RecordingExpiring, reminder_that_fails)
    sweeper = Sweeper(store, Path(config.recordings.folder), lambda r: f"http://127.0.0.1:8080/r/{r}",
                      lambda: MADE + timedelta(days=28), bus)
    caplog.clear()
    assert (await sweeper.sweep()).reminded == 0  # not marked: the next sweep tries again
    assert "expiry reminder failed" in caplog.text and "channel gone" in caplog.text
    no_full_id(caplog, fine)
