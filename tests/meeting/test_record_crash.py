"""A server killed (SIGKILL) mid-recording leaves playable track files, composed after restart.

The test runs a real server process: an SFU with two synthetic participants (pre-encoded
VP8 and Opus, loopback only) recording through the recording service, sharing the
test's SQLite file. Run as a module, this file is that process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import av

from meeting.config import Config
from meeting.events import Bus, RecordingReady
from meeting.models import Origin
from meeting.recording.service import RecordingService
from meeting.recording.model import READY, RECORDING
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import make_config, wait_for

ROOT = Path(__file__).resolve().parents[2]


def track_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("t*.webm"))


def playable_seconds(path: Path) -> tuple[float, bool]:
    """Seconds of media that decode from a (possibly cut short) file, and whether it starts on a keyframe."""
    last, first_key = 0.0, None
    with av.open(str(path)) as container:
        stream = container.streams[0]
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or not packet.decode():
                    continue
                if first_key is None:
                    first_key = packet.is_keyframe
                last = float(packet.pts * packet.time_base)
        except av.error.FFmpegError:
            pass  # where the cut is
    return last, bool(first_key)


async def test_a_server_killed_mid_recording_leaves_playable_tracks_that_are_composed_after_restart(
        tmp_path: Path, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    minted = await meetings.mint("Crash", Origin("web"))
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.meeting.test_record_crash", str(tmp_path), minted.meeting.id],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)  # type: ignore[union-attr]
        recording_id = json.loads(line)["recording"]
        folder = Path(config.recordings.folder) / recording_id

        def enough_on_disk() -> bool:
            # ~2 s of every track has reached the disk (clusters are flushed each second).
            sizes = {p.name: p.stat().st_size for p in track_files(folder)}
            return len(sizes) == 4 and all(
                size > (50_000 if name.endswith("camera.webm") else 9_000) for name, size in sizes.items())

        # Two publishers' cameras and mics: t01..t04, named by their source.
        await wait_for(lambda: len(track_files(folder)) == 4 and enough_on_disk(), timeout=30)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    # What the dead server left plays: every track from a keyframe, seconds of it.
    ends = []
    for path in track_files(folder):
        seconds, keyframe_first = playable_seconds(path)
        assert seconds >= 1.0 and keyframe_first, path.name
        ends.append(seconds)
    assert (await store.get_recording(recording_id)).state == RECORDING  # type: ignore[union-attr]

    # Restart: the job is resumed from the store and composed from what reached the disk.
    bus, ready = Bus(), []

    async def on_ready(event: RecordingReady) -> None:
        ready.append(event)

    bus.subscribe(RecordingReady, on_ready)
    service = RecordingService(config, store, bus)
    await service.start()
    try:
        await wait_for(lambda: ready, timeout=60)
    finally:
        await service.close()
    recording = await store.get_recording(recording_id)
    assert recording is not None and recording.state == READY and recording.duration
    assert abs(recording.duration - max(ends)) < 1.0  # the span is what reached the disk
    assert [p.name for p in folder.iterdir()] == ["recording.mp4"]  # track files gone once verified
    with av.open(str(folder / "recording.mp4")) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
    [event] = ready
    assert (event.meeting_id, event.recording_id, event.url, event.delete_on) == (
        minted.meeting.id, recording_id, f"http://127.0.0.1:8080/r/{recording_id}",
        recording.expires_at.date().isoformat())


async def _serve_and_record(tmp_path: Path, meeting_id: str) -> None:
    """The server process: record two synthetic participants until killed."""
    from meeting.media.sfu import Sfu
    from bench.synthetic import SyntheticParticipant, encoded_media

    config = make_config(tmp_path)
    store = SqliteStore(config.store.path)
    await store.open()
    meeting = await store.get_meeting(meeting_id)
    assert meeting is not None
    sfu = Sfu(config.media)
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0)
    people = []
    for name in ("ann", "ben"):
        person = SyntheticParticipant(name, media, decode=False)
        person.peer = await sfu.open(meeting_id).join(name, person.send_offer, publish=("mic", "camera"))
        people.append(person)
    while not all(p.frames_from(o.name, "camera") > 5 for p in people for o in people if o is not p):
        await asyncio.sleep(0.05)
    service = RecordingService(config, store, Bus())
    status = await service.start_recording(meeting, sfu.open(meeting_id), lambda pid: pid.title())
    print(json.dumps({"recording": status.recording_id}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve_and_record(Path(sys.argv[1]), sys.argv[2]))
