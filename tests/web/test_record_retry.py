"""``meetnow recordings --retry``: a person queues a failed recording again; the running server
composes it. Run as real processes against the server's store file."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from bench.synthetic import encoded_media
from meeting import ids
from meeting.config import Config
from meeting.events import Bus
from meeting.models import Origin
from meeting.recording.model import FAILED, READY, RECORDING, Recording
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.meeting.record_files import person_recorded
from tests.meeting.test_record_orphans import MADE, SMALL, soon

ROOT = Path(__file__).resolve().parents[2]


async def meetnow(config_file: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from web.cli import main; raise SystemExit(main())", *args, "--config",
        str(config_file), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def failed_recording(config: Config, store: SqliteStore, meeting_id: str, recording_id: str,
                           error: str) -> Recording:
    recording = Recording(id=recording_id, meeting_id=meeting_id, state=RECORDING, started_at=MADE,
                          expires_at=MADE + timedelta(days=30))
    person_recorded(Path(config.recordings.folder) / recording_id,
                    encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0), 2.0)
    await store.add_recording(recording)
    await store.recording_stopped(recording_id, MADE + timedelta(seconds=2), 2.0)
    await store.recording_attempt_failed(recording_id, 3, error, failed=True)
    return recording


async def test_a_failed_recording_retried_by_hand_is_composed_by_the_running_server(
        tmp_path: Path, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    config_file = tmp_path / "meetnow.toml"
    config_file.write_text(f'[store]\npath = "{config.store.path}"\n'
                           f'[recordings]\nfolder = "{config.recordings.folder}"\n')
    minted = await meetings.mint("Retry", Origin("web"))
    error = f"ComposeError: the composed file does not open: '{ids.short(ids.new_id())}/recording.mp4.part'"
    wanted = await failed_recording(config, store, minted.meeting.id, ids.new_id(), error)
    # Two more whose ids begin alike: a prefix naming both is refused.
    twin_id = ids.new_id()
    twins = [await failed_recording(config, store, minted.meeting.id, "Twin" + twin_id[4:-1] + c, error)
             for c in "AB"]

    service = RecordingService(config, store, Bus(), clock=soon, settings=SMALL)
    service.composer.rescan_interval = 0.1
    await service.start()
    try:
        code, out, _ = await meetnow(config_file, "recordings")
        assert code == 0 and out.count("failed") == 3 and "does not open" in out
        assert f"meetnow recordings --retry {ids.short(wanted.id)}" in out

        # Refused, each with a reason, and nothing changes.
        for token, reason in ((ids.new_id(), "no recording matches"), ("Twin", "several recordings start with"),
                              ("", "no recording matches")):
            code, out, err = await meetnow(config_file, "recordings", "--retry", token)
            assert code == 2 and reason in err and "Traceback" not in err, (token, err)
        assert [(await store.get_recording(r.id)).state for r in (wanted, *twins)] == [FAILED] * 3  # type: ignore[union-attr]

        code, out, err = await meetnow(config_file, "recordings", "--retry", ids.short(wanted.id))
        assert code == 0 and f"Recording {ids.short(wanted.id)} will be composed again" in out, err

        async def ready() -> bool:
            row = await store.get_recording(wanted.id)
            return row is not None and row.state == READY
        await wait_for(ready, timeout=60)
        row = await store.get_recording(wanted.id)
        assert row is not None and row.attempts == 0 and row.error == ""

        # A ready recording is not failed: refused; a whole id works as well as a short one.
        code, _, err = await meetnow(config_file, "recordings", "--retry", wanted.id)
        assert code == 2 and "is ready, not failed" in err
        code, out, _ = await meetnow(config_file, "recordings", "--retry", twins[1].id)
        assert code == 0 and "will be composed again" in out

        async def twin_ready() -> bool:
            row = await store.get_recording(twins[1].id)
            return row is not None and row.state == READY
        await wait_for(twin_ready, timeout=60)
    finally:
        await service.close()
    assert (await store.get_recording(twins[0].id)).state == FAILED  # type: ignore[union-attr]
