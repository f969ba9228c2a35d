"""From a publication's RTP packets back to codec frames with times, for recording.

Pure functions and small state machines: packets in, frames out, no I/O and no clocks
(arrival times come in as arguments). The recorder (``meeting.recording.capture``) runs them on its
writer thread.

- :class:`ReorderBuffer` hands packets on in sequence order. Upstream NACK/RTX recovers
  most losses a few round trips later, so it waits a little for a missing packet before it
  declares a gap.
- :class:`Vp8Depacketizer` reassembles VP8 frames (RFC 7741). A frame that lost a packet,
  and every frame after it until the next keyframe, is dropped: they would decode with
  garbage. It says when it wants a keyframe, so the recorder can ask the publisher (PLI).
- Opus needs no depacketizing: one RTP payload is one Opus packet.
- :class:`TrackClock` maps RTP timestamps to milliseconds since a track's first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

# A gap in the sequence: packets that never came (lost for good, or padding not seen).
GAP = object()

_SEQ_HALF = 0x8000
_TS_HALF = 1 << 31
_TS_MOD = 1 << 32


def _seq_delta(a: int, b: int) -> int:
    """Signed distance from 16-bit ``b`` to 16-bit ``a``."""
    return ((a - b + _SEQ_HALF) & 0xFFFF) - _SEQ_HALF


class ReorderBuffer:
    """Releases items in RTP sequence order, waiting at most ``max_delay`` for a hole.

    ``push`` returns what became releasable, in order, with :data:`GAP` where packets were
    given up on. Late packets (older than what was released) and duplicates are dropped.
    """

    def __init__(self, max_delay: float, max_held: int) -> None:
        self.max_delay = max_delay
        self.max_held = max_held
        self._next: int | None = None  # extended sequence number expected next
        self._held: dict[int, tuple[Any, float]] = {}
        self._gap_since: float | None = None
        self.late = 0  # dropped: arrived after their place was given up or duplicated
        self.gaps = 0

    def reset(self) -> list[Any]:
        """Release whatever is held (a new stream begins); the next packet starts afresh."""
        out = self.flush()
        self._next = None
        return out

    def push(self, seq: int, item: Any, now: float) -> list[Any]:
        if self._next is None:
            self._next = seq
        ext = self._next + _seq_delta(seq, self._next & 0xFFFF)
        if ext < self._next or ext in self._held:
            self.late += 1
            return []
        self._held[ext] = (item, now)
        out: list[Any] = []
        self._release(out)
        if self._held:
            if self._gap_since is None:
                self._gap_since = now
            while self._held and (
                len(self._held) > self.max_held or now - (self._gap_since or now) > self.max_delay
            ):
                self._skip(out)
                self._release(out)
                self._gap_since = min((t for _, t in self._held.values()), default=None)
        return out

    def flush(self) -> list[Any]:
        """Give up on every hole and release all that is held (end of the stream)."""
        out: list[Any] = []
        while self._held:
            self._skip(out)
            self._release(out)
        self._gap_since = None
        return out

    def _release(self, out: list[Any]) -> None:
        held = self._held
        nxt = self._next
        while nxt in held:
            out.append(held.pop(nxt)[0])
            nxt += 1
        self._next = nxt
        if not held:
            self._gap_since = None

    def _skip(self, out: list[Any]) -> None:
        self._next = min(self._held)
        self.gaps += 1
        out.append(GAP)


@dataclass(frozen=True)
class EncodedFrame:
    """One whole codec frame and the RTP timestamp and arrival time of its first packet."""

    data: bytes
    timestamp: int
    keyframe: bool
    arrival: float


class Vp8Descriptor:
    """The fields of a VP8 payload descriptor (RFC 7741 section 4.2) a depacketizer needs."""

    __slots__ = ("start", "partition", "picture_id", "picture_mask", "size")

    def __init__(self, start: bool, partition: int, picture_id: int | None, picture_mask: int, size: int) -> None:
        self.start = start
        self.partition = partition
        self.picture_id = picture_id
        self.picture_mask = picture_mask
        self.size = size  # bytes of descriptor before the VP8 payload


def parse_vp8_descriptor(payload: bytes) -> Vp8Descriptor | None:
    """Parse the descriptor at the start of a VP8 RTP payload; None when malformed."""
    n = len(payload)
    if n < 1:
        return None
    b = payload[0]
    pos = 1
    picture_id = None
    mask = 0
    if b & 0x80:  # X
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:  # I
            if pos >= n:
                return None
            if payload[pos] & 0x80:  # M: 15-bit picture id
                if pos + 1 >= n:
                    return None
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                mask = 0x7FFF
                pos += 2
            else:
                picture_id = payload[pos]
                mask = 0x7F
                pos += 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if pos > n:
        return None
    return Vp8Descriptor(bool(b & 0x10), b & 0x07, picture_id, mask, pos)


def vp8_is_keyframe(frame: bytes) -> bool:
    """Whether a whole VP8 frame is a keyframe (the P bit of its frame tag is clear)."""
    return bool(frame) and not frame[0] & 0x01


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 section 9.1), else None."""
    if len(frame) < 10 or not vp8_is_keyframe(frame) or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


class Vp8Depacketizer:
    """Reassembles VP8 frames from payloads handed in sequence order (gaps signalled).

    A hole between two frames is harmless when the picture ids on either side are
    consecutive (only padding was missing); otherwise a frame was lost, and everything
    up to the next keyframe is dropped.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ts: int | None = None
        self._arrival = 0.0
        self._broken = False  # the frame in progress lost a packet
        self._gap = False  # a hole since the previous packet
        self._last_picture: tuple[int, int] | None = None  # (id, mask) of the last finished frame
        self._picture: tuple[int, int] | None = None
        self.waiting_keyframe = True
        self.frames = 0
        self.dropped = 0

    def gap(self) -> None:
        """Packets were given up on between the previous packet and the next."""
        self._gap = True

    def restart(self) -> None:
        """A new stream (new SSRC): forget the frame in progress and wait for a keyframe."""
        if self._parts:
            self.dropped += 1
        self._parts = []
        self._ts = None
        self._gap = False
        self._last_picture = None
        self.waiting_keyframe = True

    def push(self, payload: bytes, timestamp: int, marker: bool, arrival: float) -> EncodedFrame | None:
        """Take one payload; return a frame when this packet completes a usable one."""
        desc = parse_vp8_descriptor(payload)
        if desc is None:
            self._gap = True  # treat a malformed packet as a lost one
            return None
        if timestamp != self._ts:
            if self._parts:  # the previous frame never saw its last packet
                self.dropped += 1
                self.waiting_keyframe = True
            self._begin(desc, timestamp, arrival)
        elif self._gap:
            self._broken = True
        self._gap = False
        if desc.size < len(payload):
            self._parts.append(payload[desc.size:])
        if not marker:
            return None
        return self._finish()

    def _begin(self, desc: Vp8Descriptor, timestamp: int, arrival: float) -> None:
        self._parts = []
        self._ts = timestamp
        self._arrival = arrival
        self._broken = not (desc.start and desc.partition == 0)
        self._picture = (desc.picture_id, desc.picture_mask) if desc.picture_id is not None else None
        if self._gap and not self._follows_last():
            self.waiting_keyframe = True

    def _follows_last(self) -> bool:
        last, current = self._last_picture, self._picture
        if last is None or current is None or last[1] != current[1]:
            return False
        return current[0] == (last[0] + 1) & current[1]

    def _finish(self) -> EncodedFrame | None:
        data = b"".join(self._parts)
        self._parts = []
        ts, broken = self._ts, self._broken
        self._ts = None
        self._last_picture = self._picture
        keyframe = vp8_is_keyframe(data)
        if broken or not data:
            self.dropped += 1
            self.waiting_keyframe = True
            return None
        if self.waiting_keyframe and not keyframe:
            self.dropped += 1
            return None
        self.waiting_keyframe = False
        self.frames += 1
        return EncodedFrame(data, ts or 0, keyframe, self._arrival)


def audio_level(elements: Iterable[tuple[int, bytes]], ext_id: int) -> int | None:
    """The RFC 6464 level (0 = loudest, 127 = silence, in -dBov) of a packet, if it has one."""
    if not ext_id:
        return None
    for x_id, value in elements:
        if x_id == ext_id and value:
            return value[0] & 0x7F
    return None


class TrackClock:
    """Milliseconds since a track's first frame, from RTP timestamps.

    RTP time keeps a stream smooth (arrival times jitter); arrival time re-anchors it when
    the two disagree by more than ``max_drift`` seconds (a new SSRC, a paused sender).
    Returned times always increase.
    """

    def __init__(self, clock_rate: int, max_drift: float = 1.0) -> None:
        self.clock_rate = clock_rate
        self.max_drift = max_drift
        self._first_arrival: float | None = None
        self._last_ts = 0
        self._ext = 0
        self._anchor_ext = 0
        self._anchor_ms = 0
        self._last_ms = -1
        self.jumps = 0

    def at(self, timestamp: int, arrival: float) -> int:
        if self._first_arrival is None:
            self._first_arrival = arrival
            self._last_ts = self._ext = self._anchor_ext = timestamp
            self._anchor_ms = 0
        else:
            delta = (timestamp - self._last_ts) % _TS_MOD
            if delta >= _TS_HALF:
                delta -= _TS_MOD
            self._ext += delta
            self._last_ts = timestamp
        ms = self._anchor_ms + (self._ext - self._anchor_ext) * 1000 // self.clock_rate
        arrival_ms = int((arrival - self._first_arrival) * 1000)
        if abs(ms - arrival_ms) > self.max_drift * 1000:
            self.jumps += 1
            self._anchor_ext = self._ext
            self._anchor_ms = ms = arrival_ms
        if ms <= self._last_ms:
            ms = self._last_ms + 1
        self._last_ms = ms
        return ms
