"""From RTP back to frames for recording: reordering, VP8 reassembly, timing. No sockets."""

from __future__ import annotations

import random

from aiortc.codecs.vpx import Vp8Encoder

from meeting.recording.depacketize import (
    GAP,
    ReorderBuffer,
    TrackClock,
    Vp8Depacketizer,
    audio_level,
    parse_vp8_descriptor,
    vp8_dimensions,
    vp8_is_keyframe,
)
from bench.synthetic import encoded_media


def test_reorder_buffer_puts_late_packets_back_in_place() -> None:
    buffer = ReorderBuffer(max_delay=0.3, max_held=50)
    out: list = []
    for seq in (10, 12, 13, 11, 14):
        out += buffer.push(seq, seq, now=0.0)
    assert out == [10, 11, 12, 13, 14]
    assert buffer.push(12, 12, now=0.0) == []  # a duplicate
    assert buffer.late == 1 and buffer.gaps == 0


def test_reorder_buffer_gives_up_on_a_hole_after_its_delay() -> None:
    buffer = ReorderBuffer(max_delay=0.3, max_held=50)
    assert buffer.push(1, 1, 0.0) == [1]
    assert buffer.push(3, 3, 0.1) == []  # 2 is missing: wait for its retransmission
    assert buffer.push(4, 4, 0.2) == []
    assert buffer.push(5, 5, 0.45) == [GAP, 3, 4, 5]
    assert buffer.push(2, 2, 0.5) == []  # too late now
    assert buffer.gaps == 1 and buffer.late == 1


def test_reorder_buffer_gives_up_when_too_much_is_held_and_wraps_around() -> None:
    buffer = ReorderBuffer(max_delay=10.0, max_held=3)
    assert buffer.push(65534, "a", 0.0) == ["a"]
    assert buffer.push(0, "c", 0.0) == []  # 65535 missing, across the wrap
    assert buffer.push(1, "d", 0.0) == []
    assert buffer.push(2, "e", 0.0) == []
    assert buffer.push(3, "f", 0.0) == [GAP, "c", "d", "e", "f"]
    assert buffer.push(4, "g", 0.0) == ["g"]
    assert buffer.push(6, "i", 0.0) == []
    assert buffer.flush() == [GAP, "i"]


def test_reorder_buffer_in_random_order_within_its_window_loses_nothing() -> None:
    rng = random.Random(3)
    seqs = [(65000 + i) & 0xFFFF for i in range(2000)]
    shuffled = []
    for start in range(0, len(seqs), 8):
        window = seqs[start:start + 8]
        rng.shuffle(window)
        shuffled += window
    buffer = ReorderBuffer(max_delay=1.0, max_held=100)
    out = []
    for seq in shuffled:
        out += buffer.push(seq, seq, 0.0)
    out += buffer.flush()
    assert out == seqs


def _packets(frames: list[bytes], first_seq: int = 100, picture_id: int = 7) -> list[tuple[int, bytes, int, bool]]:
    """(seq, payload, timestamp, marker) for each RTP packet of VP8 frames, as aiortc sends them."""
    out = []
    seq = first_seq
    for index, frame in enumerate(frames):
        payloads = Vp8Encoder._packetize(frame, (picture_id + index) & 0x7FFF)
        for n, payload in enumerate(payloads):
            out.append((seq & 0xFFFF, payload, 3000 * index, n == len(payloads) - 1))
            seq += 1
    return out


def _depacketize(packets: list, lost: set[int] = frozenset(), gaps_at: set[int] = frozenset()) -> tuple[list, Vp8Depacketizer]:
    depacketizer = Vp8Depacketizer()
    frames = []
    for seq, payload, ts, marker in packets:
        if seq in lost:
            continue
        if seq in gaps_at or (seq - 1) in lost:
            depacketizer.gap()
        frame = depacketizer.push(payload, ts, marker, 0.0)
        if frame is not None:
            frames.append(frame)
    return frames, depacketizer


def test_vp8_frames_reassemble_byte_for_byte() -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=1.0)
    frames, depacketizer = _depacketize(_packets(list(media.video)))
    assert [f.data for f in frames] == list(media.video)
    assert frames[0].keyframe and not any(f.keyframe for f in frames[1:])
    assert vp8_dimensions(frames[0].data) == (320, 240)
    assert vp8_dimensions(frames[1].data) is None
    assert depacketizer.dropped == 0


def test_a_lost_packet_drops_frames_until_the_next_keyframe() -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=1.0)
    video = list(media.video[:10]) + [media.video[0]] + list(media.video[1:5])  # a keyframe at 10
    packets = _packets(video)
    lost = {packets[12][0]}  # somewhere inside an early inter frame
    frames, depacketizer = _depacketize(packets, lost)
    kept = [f.data for f in frames]
    broken_frame = next(i for i, (s, *_rest) in enumerate(packets) if s in lost)
    broken_index = sum(1 for p in packets[:broken_frame] if p[3])  # frames finished before it
    assert kept == video[:broken_index] + video[10:]
    assert depacketizer.waiting_keyframe is False
    assert depacketizer.dropped == 10 - broken_index


def test_a_hole_of_padding_between_frames_keeps_the_stream_going() -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=1.0)
    packets = _packets(list(media.video[:6]))
    # A gap reported right before a frame's first packet, with consecutive picture ids
    # on either side: only padding was missing.
    frame_starts = [s for i, (s, _p, _t, _m) in enumerate(packets) if i == 0 or packets[i - 1][3]]
    frames, _ = _depacketize(packets, gaps_at={frame_starts[3]})
    assert len(frames) == 6


def test_a_whole_lost_frame_is_noticed_by_its_picture_id() -> None:
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=1.0)
    packets = _packets(list(media.video[:6]))
    frame_of = []
    index = 0
    for seq, _p, _t, marker in packets:
        frame_of.append(index)
        index += marker
    lost = {seq for (seq, *_), f in zip(packets, frame_of) if f == 2}
    frames, depacketizer = _depacketize(packets, lost)
    assert len(frames) == 2 and depacketizer.waiting_keyframe


def test_vp8_descriptor_and_keyframe_flags() -> None:
    desc = parse_vp8_descriptor(bytes([0x90, 0x80, 0x81, 0x23, 0x10]))
    assert desc is not None and desc.start and desc.partition == 0
    assert desc.picture_id == 0x0123 and desc.picture_mask == 0x7FFF and desc.size == 4
    short = parse_vp8_descriptor(bytes([0x90, 0x80, 0x05]))
    assert short is not None and short.picture_id == 5 and short.picture_mask == 0x7F
    assert parse_vp8_descriptor(b"") is None and parse_vp8_descriptor(bytes([0x80])) is None
    assert vp8_is_keyframe(b"\x10") and not vp8_is_keyframe(b"\x11") and not vp8_is_keyframe(b"")


def test_audio_level_reads_the_rfc6464_element() -> None:
    elements = [(3, b"\x01\x02\x03"), (1, bytes([0x80 | 33]))]
    assert audio_level(elements, 1) == 33
    assert audio_level(elements, 2) is None
    assert audio_level(elements, 0) is None


def test_track_clock_follows_rtp_time_and_reanchors_on_a_jump() -> None:
    clock = TrackClock(90000)
    base = 0xFFFFF000  # about to wrap
    assert clock.at(base, 10.0) == 0
    assert clock.at((base + 3000) & 0xFFFFFFFF, 10.05) == 33
    assert clock.at((base + 9000) & 0xFFFFFFFF, 10.2) == 100  # across the wrap, RTP time wins
    # A new SSRC starts its timestamps anywhere: arrival time takes over.
    assert clock.at(50_000_000, 11.0) == 1000
    assert clock.at(50_000_000 + 90000, 12.0) == 2000
    assert clock.jumps == 1
    # Never backwards, never equal.
    assert clock.at(50_000_000 + 90000, 12.0) == 2001


def test_track_clock_for_audio() -> None:
    clock = TrackClock(48000)
    times = [clock.at(960 * i, 5.0 + 0.02 * i) for i in range(100)]
    assert times == [20 * i for i in range(100)]
