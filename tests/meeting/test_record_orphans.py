"""A compose worker dies with its server, and a composition owns its recording's folder.

The first test runs a real server process that resumes the composing queued in the test's
store, as ``meetnow serve`` does at start, and kills it (SIGKILL) while its worker composes.
Run as a module, this file is that process.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.synthetic import encoded_media
from meeting import ids, internals
from meeting.config import Config
from meeting.events import Bus, RecordingReady
from meeting.models import Origin
from meeting.recording.compose import ComposeSettings
from meeting.recording.model import COMPOSING, READY, RECORDING, Recording
from meeting.recording.service import RecordingService
from meeting.recording.worker import own_folder
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import make_config, wait_for
from tests.meeting.record_files import person_recorded

ROOT = Path(__file__).resolve().parents[2]
MADE = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)
# Composing this much at the default 1280x720 takes seconds, far longer than the kill takes.
LONG_SPAN = 30.0
SMALL = ComposeSettings(width=320, height=240)  # for the composing the tests wait for


def soon() -> datetime:
    """The services' clock: just after the recordings were made (none has expired)."""
    return MADE + timedelta(hours=1)


async def queued_recording(config: Config, store: SqliteStore, meetings: MeetingService, span: float) -> Recording:
    """A stopped recording of one person, waiting to be composed."""
    minted = await meetings.mint("Orphans", Origin("web"))
    recording = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                          expires_at=MADE + timedelta(days=30))
    person_recorded(Path(config.recordings.folder) / recording.id,
                    encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0), span)
    await store.add_recording(recording)
    await store.recording_stopped(recording.id, MADE + timedelta(seconds=span), span)
    return recording


def _proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone
        return b""


def children(parent: int) -> dict[int, bytes]:
    """The processes whose parent is ``parent``, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            status = _proc(int(entry.name), "status").decode(errors="replace")
            if f"\nPPid:\t{parent}\n" in status:
                found[int(entry.name)] = _proc(int(entry.name), "cmdline")
    return found


def running(pid: int, cmdline: bytes) -> bool:
    """Whether ``pid`` is still that process (not gone, not a zombie awaiting its reaper)."""
    status = _proc(pid, "status").decode(errors="replace")
    return bool(status) and "\nState:\tZ" not in status and _proc(pid, "cmdline") == cmdline


class Lines:
    """A process's stderr, read by a thread, so the test can wait for a line with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout: float) -> str:
        """Everything, once every holder of the pipe has closed it."""
        self._thread.join(timeout)
        return "".join(self.lines)


async def test_killing_the_server_kills_its_compose_worker_and_a_restart_composes_once(
        tmp_path: Path, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    recording = await queued_recording(config, store, meetings, LONG_SPAN)
    folder = Path(config.recordings.folder) / recording.id
    server = subprocess.Popen([sys.executable, "-m", "tests.meeting.test_record_orphans", str(tmp_path)],
                              cwd=ROOT, stderr=subprocess.PIPE, text=True)
    stderr = Lines(server.stderr)
    try:
        # Logged by the worker once it owns the folder and has begun.
        await wait_for(lambda: stderr.has("compose started") or server.poll() is not None, timeout=60)
        assert server.poll() is None, stderr.finish(5)
        left = children(server.pid)  # the worker, and multiprocessing's resource tracker
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    assert len([pid for pid, cmdline in left.items() if b"spawn_main" in cmdline]) == 1, left

    # The kernel ends the worker with its server (and the tracker follows): no orphans.
    await wait_for(lambda: not any(running(pid, cmdline) for pid, cmdline in left.items()), timeout=10)
    assert not (folder / "recording.mp4").exists()  # it died mid-way, it did not finish alone
    logged = stderr.finish(10)
    assert recording.id not in logged and ids.short(recording.id) in logged
    assert (await store.get_recording(recording.id)).state == COMPOSING  # type: ignore[union-attr]

    # Restart: composed once, and the interrupted attempt is not held against it.
    bus, ready = Bus(), []

    async def on_ready(event: RecordingReady) -> None:
        ready.append(event.recording_id)

    bus.subscribe(RecordingReady, on_ready)
    service = RecordingService(config, store, bus, clock=soon, settings=SMALL)
    await service.start()
    try:
        await wait_for(lambda: ready, timeout=90)
    finally:
        await service.close()
    row = await store.get_recording(recording.id)
    assert row is not None and row.state == READY and row.attempts == 0 and row.error == ""
    assert ready == [recording.id] and abs((row.duration or 0) - LONG_SPAN) < 1.0
    assert [p.name for p in folder.iterdir()] == ["recording.mp4"]


async def test_a_folder_another_process_is_composing_is_left_to_it_without_counting_an_attempt(
        config: Config, store: SqliteStore, meetings: MeetingService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    recording = await queued_recording(config, store, meetings, 2.0)
    folder = Path(config.recordings.folder) / recording.id
    service = RecordingService(config, store, Bus(), clock=soon, settings=SMALL)
    service.composer.busy_delay = 0.2
    try:
        with own_folder(folder):  # as a worker of a server killed a moment ago would
            await service.start()
            await wait_for(lambda: sum("compose waits" in r.getMessage() for r in caplog.records) >= 2,
                           timeout=60)
            row = await store.get_recording(recording.id)
            assert row is not None and row.state == COMPOSING and row.attempts == 0 and row.error == ""
            assert not (folder / "recording.mp4").exists()

        async def ready() -> bool:
            row = await store.get_recording(recording.id)
            return row is not None and row.state == READY
        await wait_for(ready, timeout=60)
    finally:
        await service.close()
    assert (await store.get_recording(recording.id)).attempts == 0  # type: ignore[union-attr]
    assert recording.id not in caplog.text


def test_the_process_pool_still_has_the_private_name_the_composer_ends_workers_by() -> None:
    assert internals.pool_shape_problems() == []


async def _serve(tmp_path: Path) -> None:
    """The server process: resume composing what the store has queued, until killed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = make_config(tmp_path)
    store = SqliteStore(config.store.path)
    await store.open()
    service = RecordingService(config, store, Bus(), clock=soon)
    await service.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
