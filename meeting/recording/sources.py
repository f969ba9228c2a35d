"""Reading a recording's track files back as media: decoded lazily, placed on its time line.

The composer (``meeting.recording.compose``) asks each source for what it holds at a
recording time: a :class:`VideoSource` for its newest picture, an :class:`AudioSource` for
samples (silence before, after and in holes). Both decode as they go, so a long recording
never sits in memory, and both stop quietly where a file was cut short by a crash.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, Iterator

import av

from meeting.recording.trackfile import Track, level_bin

RATE = 48000  # the composed audio's sample rate
SAMPLE_BYTES = 4  # s16 stereo
HOLD = 0.5  # seconds a track counts as present after its last frame


@dataclass(frozen=True)
class Extent:
    """When a track has media, in seconds since the recording began."""

    first: float
    last: float

    def covers(self, t: float) -> bool:
        return self.first <= t <= self.last + HOLD


def scan(track: Track) -> Extent | None:
    """First and last packet times of a track file (demuxed, not decoded); None if unusable."""
    try:
        container = av.open(str(track.file))
    except (av.error.FFmpegError, OSError):
        return None
    first = last = None
    try:
        stream = container.streams[0]
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                t = float(packet.pts * packet.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
        except av.error.FFmpegError:
            pass  # a truncated file: what came before is good
    finally:
        container.close()
    if first is None or last is None:
        return None
    return Extent(track.start + first, track.start + last)


def decoded_frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames of a stream, stopping quietly where a truncated file ends."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue  # one damaged packet: the decoder recovers at the next keyframe
    except av.error.FFmpegError:
        return


class VideoSource:
    """One video track decoded lazily: the newest picture at a recording time."""

    def __init__(self, track: Track, extent: Extent) -> None:
        self.track = track
        self.extent = extent
        self.container = av.open(str(track.file))
        self._frames = decoded_frames(self.container, self.container.streams.video[0])
        self._pending: Any = None
        self.current: Any = None
        self.done = False
        self._scaled: tuple[Any, int, int, Any] | None = None

    def at(self, t: float) -> Any:
        while not self.done:
            if self._pending is None:
                self._pending = next(self._frames, None)
                if self._pending is None:
                    self.done = True
                    break
            when = self.track.start + (self._pending.time or 0.0)
            if when > t:
                break
            self.current, self._pending = self._pending, None
        return self.current

    def scaled(self, frame: Any, w: int, h: int) -> Any:
        """``frame`` scaled to w x h (yuv420p), reused while the picture and size stay."""
        cached = self._scaled
        if cached is not None and cached[0] is frame and cached[1] == w and cached[2] == h:
            return cached[3]
        # AREA: good when shrinking (the usual case here) and cheaper than bilinear in swscale.
        out = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
        self._scaled = (frame, w, h, out)
        return out

    def close(self) -> None:
        self.container.close()


class AudioSource:
    """One audio track decoded to 48 kHz stereo s16, read by recording time (silence where none)."""

    def __init__(self, track: Track, extent: Extent, measure: bool = True) -> None:
        self.track = track
        self.extent = extent
        self.measure = measure  # only tracks without levels gathered while recording need it
        self.container = av.open(str(track.file))
        self._frames = decoded_frames(self.container, self.container.streams.audio[0])
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
        self._buf = bytearray()
        self._pos = round(track.start * RATE)  # recording sample index of _buf[0]
        self.done = False
        # Peak level per bin, -dBFS, from the decoded audio: the speaker timeline's fallback.
        self.levels: dict[int, int] = {}

    def _end(self) -> int:
        return self._pos + len(self._buf) // SAMPLE_BYTES

    def read(self, pos: int, n: int) -> bytes:
        """``n`` samples from recording sample ``pos`` on (reads must move forward)."""
        while not self.done and self._end() < pos + n:
            self._decode_more()
        if self._pos < pos:
            drop = min(len(self._buf), (pos - self._pos) * SAMPLE_BYTES)
            del self._buf[:drop]
            self._pos = self._pos + drop // SAMPLE_BYTES if self._buf else pos
        lead = max(0, min(n, self._pos - pos))
        take = min(n - lead, len(self._buf) // SAMPLE_BYTES)
        chunk = bytes(lead * SAMPLE_BYTES) + bytes(self._buf[: take * SAMPLE_BYTES])
        del self._buf[: take * SAMPLE_BYTES]
        self._pos += take
        return chunk + bytes((n - lead - take) * SAMPLE_BYTES)

    def _decode_more(self) -> None:
        frame = next(self._frames, None)
        if frame is None:
            self.done = True
            return
        at = round((self.track.start + (frame.time or 0.0)) * RATE)
        for out in self._resampler.resample(frame):
            data = bytes(out.planes[0])[: out.samples * SAMPLE_BYTES]
            self._place(at, data)
            if self.measure:
                self._measure(at, data)
            at += out.samples

    def _place(self, at: int, data: bytes) -> None:
        end = self._end()
        if not self._buf and at > end:
            self._pos = end = at
        if at > end + 480:  # a hole of more than 10 ms: silence
            self._buf += bytes((at - end) * SAMPLE_BYTES)
        elif at < end - 480:  # overlaps what we have: keep the earlier audio
            data = data[(end - at) * SAMPLE_BYTES :]
        self._buf += data

    def _measure(self, at: int, data: bytes) -> None:
        samples = array("h")
        samples.frombytes(data)
        if not samples:
            return
        peak = max(max(samples), -min(samples))
        level = 127 if peak <= 0 else min(127, round(-20 * math.log10(peak / 32768)))
        ms = at * 1000 // RATE
        b = level_bin(ms)
        if level < self.levels.get(b, 128):
            self.levels[b] = level

    def close(self) -> None:
        self.container.close()

