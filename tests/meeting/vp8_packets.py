"""Synthetic VP8 RTP payloads, with the descriptor fields simulcast and temporal layers use."""

from __future__ import annotations

from meeting.media.rtp import RtpView, parse_rtp, pack_rtp
from meeting.media.vp8 import NO_TID


def vp8_payload(pid: int, tl0: int = -1, tid: int = NO_TID, *, start: bool = True, key: bool = False,
                sync: bool = False, size: tuple[int, int] = (640, 480), body: bytes = b"x" * 30,
                short_id: bool = False) -> bytes:
    """One packet's payload: descriptor (picture id, TL0PICIDX, TID) and a VP8 frame header."""
    x = 0x80
    fields = b""
    if short_id:
        fields += bytes([pid & 0x7F])
    else:
        fields += bytes([0x80 | ((pid >> 8) & 0x7F), pid & 0xFF])
    if tl0 >= 0:
        x |= 0x40
        fields += bytes([tl0 & 0xFF])
    if tid != NO_TID:
        x |= 0x20
        fields += bytes([(tid << 6) | (0x20 if sync else 0)])
    descriptor = bytes([0x80 | (0x10 if start else 0), x]) + fields
    if start and key:
        w, h = size
        frame = b"\x00\x00\x00\x9d\x01\x2a" + w.to_bytes(2, "little") + h.to_bytes(2, "little")
    elif start:
        frame = b"\x01\x00\x00"
    else:
        frame = b""
    return descriptor + frame + body


def rtp_view(seq: int, ts: int, payload: bytes, ssrc: int = 1111, marker: bool = True) -> RtpView:
    """A parsed RTP packet carrying ``payload``."""
    data = pack_rtp(0x80, (0x80 if marker else 0) | 97, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"", b"", payload)
    return parse_rtp(data)
