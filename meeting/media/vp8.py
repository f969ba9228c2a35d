"""The VP8 RTP payload descriptor (RFC 7741 section 4.2): read it, and rewrite its numbering.

A forwarding server that switches a viewer between simulcast layers, or leaves out
temporal layers, must keep the stream the viewer sees continuous: RTP sequence numbers,
and in the VP8 descriptor the picture id and TL0PICIDX (a receiver orders frames by them
and drops a frame whose picture id goes backwards). This module reads the fields that
decide that (frame start, picture id, TL0PICIDX, temporal layer, layer sync, keyframe,
and a keyframe's size) and writes new picture ids and TL0PICIDX into a copy of a payload.

Pure: bytes in, values or bytes out. The descriptor stays in clear in end-to-end
encrypted meetings (the encoded transform sees frames, not RTP payloads), so all of this
works there too.
"""

from __future__ import annotations

from typing import Sequence

NO_TID = 3  # the temporal layer of a frame that says none: sorted above every real one


def temporal_rate(rates: Sequence[float], max_tid: int = NO_TID) -> float:
    """The bitrate of a layer's frames up to temporal layer ``max_tid``, from its rates per
    temporal layer (index ``NO_TID``: frames that say none, always counted)."""
    if max_tid >= NO_TID:
        return rates[0] + rates[1] + rates[2] + rates[3]
    return sum(rates[: max_tid + 1]) + rates[3]


class Vp8Descriptor:
    """What one packet's VP8 payload descriptor says (fields are -1 when absent)."""

    __slots__ = ("start", "keyframe", "picture_id", "long_id", "pid_pos", "tl0", "tl0_pos", "tid", "sync")

    def __init__(self) -> None:
        self.start = False  # first packet of a frame (S bit, partition 0)
        self.keyframe = False  # first packet of a keyframe
        self.picture_id = -1
        self.long_id = False  # 15-bit picture id (M bit)
        self.pid_pos = -1
        self.tl0 = -1
        self.tl0_pos = -1
        self.tid = NO_TID
        self.sync = False  # Y bit: the frame depends on base-layer frames only


def parse_descriptor(payload: bytes) -> Vp8Descriptor | None:
    """Read the descriptor at the start of a VP8 RTP payload; None when it is truncated."""
    n = len(payload)
    if n < 1:
        return None
    d = Vp8Descriptor()
    b = payload[0]
    d.start = bool(b & 0x10) and not (b & 0x07)
    pos = 1
    if b & 0x80:  # X: extended control bits
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: picture id
            if pos >= n:
                return None
            d.pid_pos = pos
            if payload[pos] & 0x80:  # M: 15 bits
                if pos + 1 >= n:
                    return None
                d.long_id = True
                d.picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                d.picture_id = payload[pos]
                pos += 1
        if x & 0x40:  # L: TL0PICIDX
            if pos >= n:
                return None
            d.tl0_pos = pos
            d.tl0 = payload[pos]
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            if pos >= n:
                return None
            if x & 0x20:
                d.tid = payload[pos] >> 6
                d.sync = bool(payload[pos] & 0x20)
            pos += 1
    if d.start and pos < n:
        # VP8 payload header: the P bit (inverse keyframe flag) is bit 0 of its first byte.
        d.keyframe = not (payload[pos] & 0x01)
    return d


def header_size(payload: bytes) -> int:
    """Bytes of the descriptor at the start of ``payload`` (0 when it is truncated)."""
    n = len(payload)
    if n < 1:
        return 0
    pos = 1
    if payload[0] & 0x80:
        if n < 2:
            return 0
        x = payload[1]
        pos = 2
        if x & 0x80:
            if pos >= n:
                return 0
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:
            pos += 1
        if x & 0x30:
            pos += 1
    return pos if pos <= n else 0


def keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """Width and height from the first packet of a keyframe (RFC 6386 section 9.1)."""
    pos = header_size(payload)
    frame = payload[pos : pos + 10]
    if pos == 0 or len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


def rewrite(payload: bytes, d: Vp8Descriptor, picture_id: int, tl0: int) -> bytes:
    """A copy of ``payload`` with this picture id and TL0PICIDX (where it has them).

    A 7-bit picture id is written modulo 128, a 15-bit one modulo 32768, so a stream
    keeps the width its receiver first saw.
    """
    out = bytearray(payload)
    if d.pid_pos >= 0:
        if d.long_id:
            out[d.pid_pos] = 0x80 | ((picture_id >> 8) & 0x7F)
            out[d.pid_pos + 1] = picture_id & 0xFF
        else:
            out[d.pid_pos] = picture_id & 0x7F
    if d.tl0_pos >= 0:
        out[d.tl0_pos] = tl0 & 0xFF
    return bytes(out)


def picture_id_mask(d: Vp8Descriptor) -> int:
    """The modulus of this descriptor's picture id, minus one."""
    return 0x7FFF if d.long_id else 0x7F
