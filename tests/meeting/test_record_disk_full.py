"""A full recordings disk delays composing instead of failing it; it resumes when space returns.

The first test runs a real server process whose recordings folder is a 2 MB tmpfs, mounted
in a mount namespace of its own (``unshare --mount``; the tests run as root in a private
network namespace), nearly filled by a filler file. Run as a module, this file is that
process; it deletes the filler when the test writes ``free`` to it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bench.synthetic import encoded_media
from meeting import ids
from meeting.config import Config
from meeting.events import Bus
from meeting.models import Origin
from meeting.recording.model import COMPOSING, FAILED, READY, RECORDING, Recording
from meeting.recording.service import RecordingService
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import make_config, wait_for
from tests.meeting.record_files import person_recorded
from tests.meeting.test_record_orphans import MADE, SMALL, soon

ROOT = Path(__file__).resolve().parents[2]
SPAN = 3.0
STAGED = "staged"  # where the test leaves track files for the server to move onto its tmpfs
ROOM_LEFT = 24 * 1024  # bytes the filler leaves free: far less than the composed file needs


class Output:
    """A child's output stream, read by a thread, so the test can wait on it with a deadline."""

    def __init__(self, stream) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.text += line

    def finish(self, timeout: float) -> str:
        self._thread.join(timeout)
        return self.text


def mount_namespace_problem() -> str | None:
    """Why a private mount namespace with a tmpfs cannot be made here, or None."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m probe /mnt"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount / mount -t tmpfs: {probe.stderr.strip()}"


async def row(store: SqliteStore, recording_id: str) -> Recording:
    found = await store.get_recording(recording_id)
    assert found is not None
    return found


async def test_composing_that_runs_out_of_disk_waits_for_space_and_then_succeeds_without_counting_it(
        tmp_path: Path, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    problem = mount_namespace_problem()
    if problem:  # never skipped: without it the test proves nothing
        pytest.fail(f"this test needs a private mount namespace and tmpfs (root): {problem}")
    minted = await meetings.mint("Full disk", Origin("web"))
    recording = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                          expires_at=MADE + timedelta(days=30))
    person_recorded(tmp_path / STAGED / recording.id, encoded_media(320, 240, fps=30, bitrate=300_000,
                                                                    seconds=4.0), SPAN)
    await store.add_recording(recording)
    await store.recording_stopped(recording.id, MADE + timedelta(seconds=SPAN), SPAN)
    recordings = Path(config.recordings.folder)
    recordings.mkdir(parents=True)
    server = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o size=2m meetnow-test "$1" && exec "$2" -m tests.meeting.test_record_disk_full "$3"',
         "sh", str(recordings), sys.executable, str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = Output(server.stdout), Output(server.stderr)
    try:
        async def out_of_space() -> bool:
            return (await row(store, recording.id)).error.startswith("disk full")

        await wait_for(lambda: server.poll() is not None or "started" in out.text, timeout=60)
        assert server.poll() is None, err.finish(5)
        await wait_for(out_of_space, timeout=60)
        waiting = await row(store, recording.id)
        # Not counted, not failed: the row says why it waits.
        assert waiting.state == COMPOSING and waiting.attempts == 0
        assert "No space left on device" in waiting.error and recording.id not in waiting.error
        # It looks for space, with growing pauses, and does not try again while there is none.
        await wait_for(lambda: out.text.count("space checked: False") >= 3, timeout=30)

        server.stdin.write("free\n")  # type: ignore[union-attr]
        server.stdin.flush()  # type: ignore[union-attr]

        async def ready() -> bool:
            return (await row(store, recording.id)).state == READY
        await wait_for(ready, timeout=60)
        done = await row(store, recording.id)
        assert done.attempts == 0 and done.error == "" and abs((done.duration or 0) - SPAN) < 0.5
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(30)
        finally:
            if server.poll() is None:
                server.kill()
    logged = err.finish(10)
    assert server.returncode == 0, logged
    assert logged.count("compose out of disk space") == 1 and logged.count("compose started") == 2
    assert "compose resumes, disk space is back" in logged and "recording ready" in logged
    assert recording.id not in logged + out.finish(5) and ids.short(recording.id) in logged
    assert not (recordings / recording.id).exists()  # it was only ever on the server's tmpfs


async def test_a_recording_an_older_version_gave_up_on_for_a_full_disk_is_retried_at_start(
        config: Config, store: SqliteStore, meetings: MeetingService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    minted = await meetings.mint("Old failure", Origin("web"))
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0)
    made = []
    for error in ("OSError(28, 'No space left on device', '/srv/recordings/x/recording.mp4.part')",
                  "ComposeError('the composed file does not open')"):
        recording = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                              expires_at=MADE + timedelta(days=30))
        person_recorded(Path(config.recordings.folder) / recording.id, media, 2.0)
        await store.add_recording(recording)
        await store.recording_stopped(recording.id, MADE + timedelta(seconds=2), 2.0)
        await store.recording_attempt_failed(recording.id, 3, error, failed=True)
        made.append(recording.id)
    full_disk, broken = made
    service = RecordingService(config, store, Bus(), clock=soon, settings=SMALL)
    await service.start()
    try:
        async def ready() -> bool:
            return (await row(store, full_disk)).state == READY
        await wait_for(ready, timeout=60)
    finally:
        await service.close()
    assert (await row(store, full_disk)).attempts == 0
    still = await row(store, broken)  # a real failure stays failed: that takes a person
    assert still.state == FAILED and still.attempts == 3
    assert full_disk not in caplog.text and broken not in caplog.text


async def _serve(tmp_path: Path) -> None:
    """The server process: its recordings folder is a nearly full 2 MB tmpfs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = make_config(tmp_path)
    config = replace(config, recordings=replace(config.recordings, min_free_mb=1))
    folder = Path(config.recordings.folder)
    for staged in (tmp_path / STAGED).iterdir():
        shutil.copytree(staged, folder / staged.name)
    filler = folder / "filler"
    with open(filler, "wb") as file:
        file.write(bytes(shutil.disk_usage(folder).free - ROOM_LEFT))
    store = SqliteStore(config.store.path)
    await store.open()
    service = RecordingService(config, store, Bus(), clock=soon, settings=SMALL)
    service.composer.space_delay, service.composer.space_delay_max = 0.1, 0.5
    has_space = service.composer.has_space

    async def told() -> bool:  # the test waits for a few looks before it frees space
        answer = await has_space()
        print(f"space checked: {answer}", flush=True)
        return answer

    service.composer.has_space = told
    await service.start()
    print("started", flush=True)
    while line := await asyncio.to_thread(sys.stdin.readline):  # until the test closes it
        if line.strip() == "free":
            filler.unlink()
    await service.close()
    await store.close()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
