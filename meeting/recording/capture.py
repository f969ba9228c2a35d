"""Writing a meeting's media to disk as it arrives: one Matroska (WebM) file per track.

A :class:`RoomRecorder` is the SFU's observer for one meeting (``Sfu.observe``). On the
event loop it does as little as possible: each publication gets a tap that appends
``(track, packet, arrival)`` to a deque. A writer thread drains the deque every 50 ms,
puts packets back in order, reassembles frames (``meeting.recording.depacketize``) and muxes them,
still encoded, with PyAV. Nothing is decoded.

Files stay usable if the process dies: Matroska written incrementally is playable when
truncated, and the muxer options below push every cluster (at most ~1 s of media) to the
file as soon as it closes. The folder's manifest says which file is whose and when it
started, one synced line per event, so the composer needs nothing else; the format (file
names, manifest lines, level bins) is ``meeting.recording.trackfile``'s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av

from meeting.logfmt import kv
from meeting.media.forwarder import PacketTap, Publication
from meeting.media.rtp import RtpView
from meeting.recording.depacketize import GAP, ReorderBuffer, TrackClock, Vp8Depacketizer, audio_level, vp8_dimensions
from meeting.recording.failures import describe, traceback_text
from meeting.recording.trackfile import TRACK_FORMAT, LevelWriter, ManifestWriter, Track

log = logging.getLogger(__name__)

# Each cluster is written whole as soon as it closes, and closes after at most 1 s: a
# crash loses at most the last second of each track.
MUX_OPTIONS = {"flush_packets": "1", "cluster_time_limit": "1000"}
MS = Fraction(1, 1000)
# Packets queued for the writer thread, over all tracks (~1-2 minutes of a large meeting);
# beyond it packets are dropped (and the gap repaired by a keyframe) rather than memory grown.
MAX_QUEUE = 50_000
DRAIN_INTERVAL = 0.05
FLUSH_INTERVAL = 1.0
KEYFRAME_RETRY = 1.0  # a track waiting for a keyframe asks again this often
# How long a hole in the sequence may wait for its retransmission before it is given up.
VIDEO_REORDER = (0.3, 300)  # seconds, packets
AUDIO_REORDER = (0.1, 25)


@dataclass(frozen=True)
class TrackStart:
    """A publication the recorder starts to follow (queued to the writer thread)."""

    number: int
    participant: str
    name: str
    source: str
    kind: str
    publication: Publication  # read on the writer thread for codec, clock rate, extension id


@dataclass(frozen=True)
class RecorderSummary:
    """What a finished recorder wrote."""

    span: float  # seconds from start to stop
    tracks: int  # files written
    frames: int
    bytes: int
    dropped: int  # packets dropped because the writer thread fell behind


class RoomRecorder:
    """One meeting's recorder: the SFU's observer on the loop, a writer thread behind it."""

    def __init__(self, folder: Path, name_of: Callable[[str], str], log_key: str = "") -> None:
        self.folder = folder
        self._name_of = name_of
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[int, Any, float]] = deque()
        self._pubs: dict[int, Publication] = {}
        self._numbers: dict[int, int] = {}  # id(publication) -> track number
        self._next = 1
        self._dropped = [0]
        self.started = time.monotonic()
        self._writer = _Writer(folder, self._queue, self.started, self._keyframe_wanted, log_key)

    def start(self) -> None:
        """Start the writer thread (the folder must exist)."""
        self._writer.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def recorded(self) -> float:
        """Seconds of recording time up to which media has been written (any track)."""
        return self._writer.recorded

    # --- MediaObserver (event loop) -------------------------------------------------------

    def publication_started(self, pub: Publication) -> PacketTap:
        now = time.monotonic()
        number = self._next
        self._next += 1
        self._pubs[number] = pub
        self._numbers[id(pub)] = number
        start = TrackStart(number, pub.participant, self._name_of(pub.participant), pub.source, pub.kind, pub)
        self._queue.append((number, start, now))
        if pub.video:
            pub.request_keyframe(now)  # files should begin with a keyframe, soon
        queue, append, dropped = self._queue, self._queue.append, self._dropped

        def tap(view: RtpView, arrival: float) -> None:
            if len(queue) < MAX_QUEUE:
                append((number, view, arrival))
            else:
                dropped[0] += 1

        return tap

    def publication_ended(self, pub: Publication) -> None:
        number = self._numbers.pop(id(pub), None)
        if number is not None:
            self._pubs.pop(number, None)
            self._queue.append((number, None, time.monotonic()))

    # --- keyframes (asked from the writer thread) --------------------------------------

    def _keyframe_wanted(self, number: int) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ask_keyframe, number)
        except RuntimeError:
            pass  # the loop is closing

    def _ask_keyframe(self, number: int) -> None:
        pub = self._pubs.get(number)
        if pub is not None:
            pub.request_keyframe(time.monotonic())

    # --- end (blocking: run it in a thread) ---------------------------------------------

    def close(self) -> RecorderSummary:
        """Stop after writing what is queued; close every file. Call after unobserving."""
        span = self.elapsed()
        self._writer.stop(span)
        self._writer.join()
        w = self._writer
        return RecorderSummary(span=span, tracks=w.files, frames=w.frames, bytes=w.bytes,
                               dropped=self._dropped[0])


class _Writer(threading.Thread):
    """Drains the recorder's queue: reorder, depacketize, mux. Owns every file it opens."""

    def __init__(self, folder: Path, queue: deque, t0: float,
                 keyframe_wanted: Callable[[int], None], log_key: str) -> None:
        super().__init__(name=f"recorder-{log_key}", daemon=True)
        self.folder = folder
        self.queue = queue
        self.t0 = t0
        self.keyframe_wanted = keyframe_wanted
        self.log_key = log_key
        self.tracks: dict[int, TrackWriter] = {}
        self.manifest: ManifestWriter | None = None  # opened on this thread, like every file
        self._stop_event = threading.Event()
        self._span: float | None = None
        self.files = self.frames = self.bytes = 0
        self.recorded = 0.0  # recording time of the newest frame written, any track

    def stop(self, span: float) -> None:
        self._span = span
        self._stop_event.set()

    def run(self) -> None:
        next_flush = time.monotonic() + FLUSH_INTERVAL
        try:
            self.manifest = ManifestWriter(self.folder)
            while True:
                stopping = self._stop_event.is_set()
                self._drain()
                now = time.monotonic()
                if now >= next_flush:
                    for track in self.tracks.values():
                        track.flush()
                    next_flush = now + FLUSH_INTERVAL
                if stopping:
                    break
                self._stop_event.wait(DRAIN_INTERVAL)
        except Exception as exc:
            # File errors name the folder, which is the recording's id: log them shortened.
            log.error("recorder failed %s\n%s", kv(recording=self.log_key), traceback_text(exc))
        finally:
            end = time.monotonic()
            for number in list(self.tracks):
                self._close(number, end)
            if self.manifest is not None:
                if self._span is not None:
                    self.manifest.stopped(self._span)
                self.manifest.close()

    def _drain(self) -> None:
        queue = self.queue
        while queue:
            number, item, arrival = queue.popleft()
            if isinstance(item, RtpView):
                track = self.tracks.get(number)
                if track is not None:
                    track.packet(item, arrival)
            elif isinstance(item, TrackStart):
                assert self.manifest is not None
                self.tracks[number] = TrackWriter(
                    self.folder, item, self.t0, self.manifest, lambda n=number: self.keyframe_wanted(n),
                    self.log_key, self)
            else:
                self._close(number, arrival)

    def _close(self, number: int, at: float) -> None:
        track = self.tracks.pop(number, None)
        if track is None:
            return
        track.close(at)
        if track.container_opened:
            self.files += 1
        self.frames += track.frames
        self.bytes += track.bytes


class TrackWriter:
    """One publication's file: packets in (writer thread), encoded frames muxed out."""

    def __init__(self, folder: Path, start: TrackStart, t0: float, manifest: ManifestWriter,
                 keyframe_wanted: Callable[[], None], log_key: str, progress: Any = None) -> None:
        self.folder = folder
        self.progress = progress  # has a ``recorded`` attribute, moved forward as frames are written
        self.start = start
        self.t0 = t0
        self.manifest = manifest
        self.keyframe_wanted = keyframe_wanted
        self.log_key = log_key
        self.video = start.kind == "video"
        delay, held = VIDEO_REORDER if self.video else AUDIO_REORDER
        self.reorder = ReorderBuffer(delay, held)
        self.vp8 = Vp8Depacketizer() if self.video else None
        self.clock: TrackClock | None = None
        self.ssrc: int | None = None
        self.container: Any = None
        self.stream: Any = None
        self.container_opened = False
        self.failed = False
        self.started_at = 0.0  # seconds since the recording began
        self.last_ms = 0
        self.frames = 0
        self.bytes = 0
        self.asked_at = float("-inf")
        self.levels: LevelWriter | None = None

    # --- packets -------------------------------------------------------------------------

    def packet(self, view: RtpView, arrival: float) -> None:
        if self.failed:
            return
        if view.ssrc != self.ssrc:
            if self.ssrc is not None:  # the publisher restarted its stream
                for item in self.reorder.reset():
                    self._ordered(item)
                if self.vp8 is not None:
                    self.vp8.restart()
            self.ssrc = view.ssrc
        for item in self.reorder.push(view.seq, (view, arrival), arrival):
            self._ordered(item)

    def _ordered(self, item: Any) -> None:
        if item is GAP:
            if self.vp8 is not None:
                self.vp8.gap()
            return
        view, arrival = item
        payload = view.payload
        if not payload:
            return
        if self.vp8 is not None:
            frame = self.vp8.push(payload, view.ts, view.marker, arrival)
            if self.vp8.waiting_keyframe and arrival - self.asked_at > KEYFRAME_RETRY:
                self.asked_at = arrival
                self.keyframe_wanted()
            if frame is not None:
                self._write(frame.data, frame.timestamp, frame.arrival, frame.keyframe)
            return
        self._write(payload, view.ts, arrival, True)
        if self.levels is not None:
            level = audio_level(view.elements, self.start.publication.audio_level_id)
            if level is not None:
                self.levels.add(int((arrival - self.t0) * 1000), level)

    # --- file --------------------------------------------------------------------------------

    def _open(self, data: bytes, arrival: float) -> bool:
        pub = self.start.publication
        if self.video:
            size = vp8_dimensions(data)
            if size is None:
                return False
        s = self.start
        track = Track.new(self.folder, s.number, s.participant, s.name, s.source, s.kind, pub.codec,
                          arrival - self.t0)
        container = av.open(str(track.file), "w", format=TRACK_FORMAT, options=MUX_OPTIONS)
        if self.video:
            stream = container.add_stream("vp8", rate=30)
            stream.width, stream.height = size
        else:
            stream = container.add_stream("opus", rate=48000)
            stream.layout = "stereo"
        stream.time_base = MS
        self.container, self.stream = container, stream
        self.container_opened = True
        self.clock = TrackClock(pub.clock_rate)
        self.started_at = track.start
        if track.levels is not None:
            self.levels = LevelWriter(track.levels)
        self.manifest.track_started(track)
        return True

    def _write(self, data: bytes, timestamp: int, arrival: float, keyframe: bool) -> None:
        if self.container is None and not self._open(data, arrival):
            return
        assert self.clock is not None
        ms = self.clock.at(timestamp, arrival)
        packet = av.Packet(data)
        packet.stream = self.stream
        packet.time_base = MS
        packet.pts = packet.dts = ms
        packet.is_keyframe = keyframe
        try:
            self.container.mux(packet)
        except Exception as exc:  # a full disk, most likely: this track ends here
            log.warning("track write failed %s", kv(recording=self.log_key, track=self.start.number,
                                                      error=describe(exc, 200)))
            self.failed = True
            self._close_container()
            return
        self.last_ms = ms
        self.frames += 1
        self.bytes += len(data)
        if self.progress is not None:
            at = self.started_at + ms / 1000
            if at > self.progress.recorded:
                self.progress.recorded = at

    def flush(self) -> None:
        if self.levels is not None:
            self.levels.flush()

    def close(self, at: float) -> None:
        """Give up on holes, write what is left, close the file (trailer and index)."""
        if not self.failed:
            for item in self.reorder.flush():
                self._ordered(item)
        self._close_container()
        if self.levels is not None:
            self.levels.close()
        if self.container_opened:
            self.manifest.track_ended(self.start.number, self.started_at + self.last_ms / 1000)

    def _close_container(self) -> None:
        if self.container is None:
            return
        try:
            self.container.close()
        except Exception as exc:
            log.warning("track close failed %s", kv(recording=self.log_key, track=self.start.number,
                                                      error=describe(exc, 200)))
        self.container = None

