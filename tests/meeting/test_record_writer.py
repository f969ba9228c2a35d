"""The recorder: the forwarder's tap, the writer thread, and the per-track files it leaves."""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import av
import pytest

from meeting.media.forwarder import Publication
from meeting.recording.capture import RoomRecorder
from meeting.recording.trackfile import read_levels, read_manifest
from meeting.media.rtp import extension_block
from bench.synthetic import encoded_media
from aiortc.codecs.vpx import Vp8Encoder
from tests.meeting.waiting import wait_for

VP8_PT, OPUS_PT = 97, 96
LEVEL_ID = 1


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, pt: int, level: int | None = None) -> bytes:
    """One RTP packet; with ``level`` it carries an RFC 6464 audio-level element."""
    ext = extension_block(bytes([(LEVEL_ID << 4), level])) if level is not None else b""
    b0 = 0x80 | (0x10 if ext else 0)
    return struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + ext + payload


def video_packets(frames: list[bytes], ssrc: int = 1111, seq: int = 65500) -> list[tuple[bytes, int]]:
    """(packet, frame index) for VP8 frames at 30 fps, as a browser would send them."""
    out = []
    for index, frame in enumerate(frames):
        payloads = Vp8Encoder._packetize(frame, index & 0x7FFF)
        for n, payload in enumerate(payloads):
            out.append((rtp(seq, 3000 * index, ssrc, payload, n == len(payloads) - 1, VP8_PT), index))
            seq += 1
    return out


def _noop(data: bytes) -> None:
    return None


def publication(source: str, kind: str, ssrc: int) -> Publication:
    pub = Publication(participant="ann", source=source, kind=kind, upstream=_noop, rtcp_ssrc=9,
                      codec="VP8" if kind == "video" else "opus")
    pub.set_source(ssrc, None, {})
    pub.audio_level_id = LEVEL_ID if kind == "audio" else 0
    return pub


def decode(path: Path) -> tuple[list[float], list[bool]]:
    """Presentation times and keyframe flags of every packet that decodes."""
    times, keys = [], []
    with av.open(str(path)) as container:
        stream = container.streams[0]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                decoded = packet.decode()
                if decoded:
                    times.append(float(packet.pts * packet.time_base))
                    keys.append(packet.is_keyframe)
        except av.error.FFmpegError:
            pass
    return times, keys


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "rec"
    path.mkdir()
    return path


async def test_video_is_written_from_a_keyframe_in_order_and_repaired_after_loss(folder: Path) -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0)
    # A keyframe at 0 and at 60: 90 frames, 3 s.
    frames = list(media.video[:60]) + [media.video[0]] + list(media.video[1:30])
    packets = video_packets(frames)
    # Swap neighbours now and then (reordering), and lose one packet of frame 20 for good.
    for i in range(5, len(packets) - 1, 17):
        packets[i], packets[i + 1] = packets[i + 1], packets[i]
    lost = next(i for i, (_, f) in enumerate(packets) if f == 20)
    del packets[lost]

    recorder = RoomRecorder(folder, lambda pid: "Ann", "test")
    recorder.start()
    pub = publication("camera", "video", 1111)
    pub.tap = recorder.publication_started(pub)
    assert pub.keyframe_requests_received == 1  # asked as soon as recording starts
    t0 = recorder.started
    for data, index in packets:
        pub.ingest(data, 0, t0 + index / 30)
    # The frame with the lost packet and everything up to the next keyframe was dropped, and
    # the writer thread asked the publisher for a keyframe through the event loop.
    await wait_for(lambda: pub.keyframe_requests_received >= 2, what="a keyframe request after the loss")
    recorder.publication_ended(pub)
    summary = recorder.close()

    [track] = read_manifest(folder).tracks
    assert (track.kind, track.source, track.name, track.participant) == ("video", "camera", "Ann", "ann")
    times, keys = decode(track.file)
    assert keys[0] and keys[20]  # the file begins with a keyframe; decoding resumed at one
    assert len(times) == 20 + 30 == summary.frames
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[19] == pytest.approx(19 / 30, abs=0.002)
    assert times[20] == pytest.approx(60 / 30, abs=0.002)
    assert summary.span >= 0 and summary.dropped == 0
    assert f'"end": {track.start + times[-1]:.3f}'[:10] in (folder / "manifest.jsonl").read_text()


async def test_audio_and_its_levels_are_written(folder: Path) -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=2.0)
    recorder = RoomRecorder(folder, lambda pid: "Ann", "test")
    recorder.start()
    pub = publication("mic", "audio", 2222)
    pub.tap = recorder.publication_started(pub)
    t0 = recorder.started
    for i, payload in enumerate(media.audio):  # 100 packets, 2 s; loud for the first second
        pub.ingest(rtp(i, 960 * i, 2222, payload, True, OPUS_PT, level=20 if i < 50 else 127), 0, t0 + 0.5 + i * 0.02)
    recorder.publication_ended(pub)
    recorder.close()
    [track] = read_manifest(folder).tracks
    assert track.kind == "audio" and track.start == pytest.approx(0.5, abs=0.01)
    times, _ = decode(track.file)
    assert len(times) == 100 and times[-1] == pytest.approx(1.98, abs=0.002)
    levels = read_levels(track.levels)
    assert levels and min(levels) == 400 and levels[600] == 20 and levels[max(levels)] == 127


async def test_a_file_cut_short_while_recording_still_plays(folder: Path) -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0)
    recorder = RoomRecorder(folder, lambda pid: "Ann", "test")
    recorder.start()
    pub = publication("camera", "video", 1111)
    pub.tap = recorder.publication_started(pub)
    t0 = recorder.started
    for data, index in video_packets(list(media.video[:75])):
        pub.ingest(data, 0, t0 + index / 30)
    path = folder / "t01-camera.webm"
    # Clusters reach the file as they close (every second of media), not at the end.
    await wait_for(lambda: path.exists() and path.stat().st_size > 30_000, what="clusters on disk")
    copy = folder.parent / "copy.webm"
    shutil.copy(path, copy)  # what a crash right now would leave
    times, keys = decode(copy)
    assert keys[0] and len(times) >= 30 and times[-1] >= 1.0
    recorder.publication_ended(pub)
    recorder.close()
    times, _ = decode(path)
    assert len(times) == 75


async def test_when_the_writer_falls_behind_packets_are_dropped_not_hoarded(folder: Path, monkeypatch) -> None:
    import meeting.recording.capture as recorder_module

    monkeypatch.setattr(recorder_module, "MAX_QUEUE", 10)
    recorder = RoomRecorder(folder, lambda pid: "Ann", "test")  # not started: nothing drains
    pub = publication("mic", "audio", 2222)
    tap = recorder.publication_started(pub)
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=1.0)
    view_source = [rtp(i, 960 * i, 2222, media.audio[i], True, OPUS_PT) for i in range(30)]
    from meeting.media.rtp import parse_rtp

    for data in view_source:
        tap(parse_rtp(data), time.monotonic())
    recorder.start()
    summary = recorder.close()
    assert summary.dropped == 30 - 9  # the track's start took one place in the queue


class CountingObserver:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.ended: list[tuple[str, str]] = []
        self.packets: dict[tuple[str, str], int] = {}

    def publication_started(self, pub: Publication):
        key = (pub.participant, pub.source)
        self.started.append(key)
        self.packets.setdefault(key, 0)

        def tap(view, arrival) -> None:
            self.packets[key] += 1

        return tap

    def publication_ended(self, pub: Publication) -> None:
        self.ended.append((pub.participant, pub.source))


async def test_the_sfu_taps_a_rooms_publications_only_while_observed(meeting) -> None:
    ann = await meeting.join("ann")
    observer, other = CountingObserver(), CountingObserver()
    meeting.sfu.open("room").observe(observer)
    assert sorted(observer.started) == [("ann", "camera"), ("ann", "mic")]
    meeting.sfu.open("other").observe(other)  # two meetings recorded at once, each on its own
    await meeting.join("ben", publish=("mic",))
    await meeting.join("cat", room="other")
    assert sorted(observer.started) == [("ann", "camera"), ("ann", "mic"), ("ben", "mic")]
    assert sorted(other.started) == [("cat", "camera"), ("cat", "mic")]
    await wait_for(lambda: all(observer.packets[k] > 20 for k in observer.packets), timeout=10,
                   what="packets through every tap")
    await meeting.leave("ben")
    assert observer.ended == [("ben", "mic")]
    meeting.sfu.room("room").unobserve()
    assert sorted(observer.ended) == [("ann", "camera"), ("ann", "mic"), ("ben", "mic")]
    counts = dict(observer.packets)
    await wait_for(lambda: ann.keyframe_requests >= 1, what="the keyframe asked for at the start")
    room = meeting.sfu.room("room")
    assert all(pub.tap is None for pub in room.all_publications())
    room.unobserve()  # idempotent
    assert observer.packets == counts
    assert all(n > 0 for n in other.packets.values()) and other.ended == []
    meeting.sfu.room("other").unobserve()
