"""The VP8 payload descriptor: reading its fields, rewriting its numbering."""

from __future__ import annotations

import pytest

from meeting.media import vp8
from meeting.media.vp8 import NO_TID
from tests.meeting.vp8_packets import vp8_payload


def test_reads_picture_id_tl0_temporal_layer_and_sync():
    d = vp8.parse_descriptor(vp8_payload(0x1234, tl0=77, tid=2, sync=True))
    assert (d.start, d.keyframe, d.picture_id, d.long_id, d.tl0, d.tid, d.sync) == (True, False, 0x1234, True, 77, 2, True)


def test_a_keyframe_and_its_size():
    payload = vp8_payload(5, tl0=1, tid=0, key=True, size=(320, 240))
    d = vp8.parse_descriptor(payload)
    assert d.keyframe and d.tid == 0
    assert vp8.keyframe_size(payload) == (320, 240)
    assert vp8.keyframe_size(vp8_payload(6, tl0=1, tid=0)) is None


def test_continuation_packets_and_missing_fields():
    d = vp8.parse_descriptor(vp8_payload(9, start=False))
    assert not d.start and not d.keyframe and d.tid == NO_TID and d.tl0 == -1
    assert vp8.parse_descriptor(b"") is None
    assert vp8.parse_descriptor(b"\x90\x80") is None  # picture id announced, missing
    d = vp8.parse_descriptor(b"\x10\x01\x02")  # no extension at all
    assert d.start and d.picture_id == -1 and d.tid == NO_TID


def test_rewrite_changes_only_the_numbering():
    payload = vp8_payload(0x7FFE, tl0=255, tid=1)
    d = vp8.parse_descriptor(payload)
    out = vp8.rewrite(payload, d, 0x10002, 256)  # both wrap
    again = vp8.parse_descriptor(out)
    assert (again.picture_id, again.tl0, again.tid, again.long_id) == (2, 0, 1, True)
    assert out[again.tl0_pos + 2:] == payload[d.tl0_pos + 2:]
    short = vp8_payload(100, short_id=True)
    d = vp8.parse_descriptor(short)
    assert not d.long_id and vp8.parse_descriptor(vp8.rewrite(short, d, 130, -1)).picture_id == 2


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"\x10\x00\x9d\x01\x2a", True),  # S=1, PID=0, P bit clear
        (b"\x10\x01\x9d", False),  # P bit set: interframe
        (b"\x00\x00\x9d", False),  # not the start of a partition
        (b"\x11\x00\x9d", False),  # partition 1
        (b"\x90\x80\x12\x00", True),  # X, I with a 7-bit picture id
        (b"\x90\x80\x92\x34\x00", True),  # X, I with a 15-bit picture id
        (b"\x90\x80\x92\x34\x01", False),
        (b"\x90\xe0\x12\x05\x40\x00", True),  # X with I, L, T
        (b"\x90", False),  # truncated
        (b"", False),
    ],
)
def test_the_first_packet_of_a_keyframe_is_known(payload: bytes, expected: bool) -> None:
    d = vp8.parse_descriptor(payload)
    assert (d is not None and d.start and d.keyframe) is expected
