"""A viewer stream's numbering across layer switches, temporal drops, pauses and late packets."""

from __future__ import annotations

import random

from meeting.media import vp8
from meeting.media.switcher import Switcher
from meeting.media.vp8 import NO_TID
from tests.meeting.vp8_packets import rtp_view, vp8_payload

PATTERN = (0, 2, 1, 2)  # libwebrtc's three temporal layers


class Layer:
    """A synthetic VP8 encoding: frames of two packets, numbered from its own random bases."""

    def __init__(self, index: int, seed: int, width: int = 640) -> None:
        rng = random.Random(seed)
        self.index = index
        self.seq = rng.randrange(1 << 16)
        self.ts = rng.randrange(1 << 32)
        self.pid = rng.randrange(1 << 15)
        self.tl0 = rng.randrange(256)
        self.frame = 0
        self.width = width

    def frame_packets(self, key: bool = False) -> list:
        """The next frame's two packets (view, descriptor), keyframes on request."""
        tid = 0 if key else PATTERN[self.frame % 4]
        if tid == 0 and self.frame:
            self.tl0 = (self.tl0 + 1) & 0xFF
        sync = tid > 0 and self.frame % 4 == 1
        packets = []
        for part in range(2):
            payload = vp8_payload(self.pid, self.tl0, tid, start=part == 0, key=key and part == 0, sync=sync,
                                  size=(self.width, self.width * 3 // 4))
            view = rtp_view(self.seq, self.ts, payload, marker=part == 1)
            packets.append((view, vp8.parse_descriptor(view.payload)))
            self.seq = (self.seq + 1) & 0xFFFF
        self.pid = (self.pid + 1) & 0x7FFF
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        self.frame += 1
        return packets


def feed(sw: Switcher, layer: Layer, now: float, key: bool = False) -> list[tuple[int, int, bytes]]:
    out = []
    for view, desc in layer.frame_packets(key):
        got = sw.forward(view, desc, layer.index, now)
        if got is not None:
            out.append(got[:3])  # (seq, timestamp, body); the view sent is the fourth
    return out


def pids(out: list[tuple[int, int, bytes]]) -> list[int]:
    return [vp8.parse_descriptor(body).picture_id for _, _, body in out]


def continuous(out: list[tuple[int, int, bytes]]) -> bool:
    seqs = [seq for seq, _, _ in out]
    return all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))


def test_a_switch_waits_for_the_new_layers_keyframe_and_continues_the_numbering():
    sw = Switcher(90000, True, random.Random(1))
    low, high = Layer(0, seed=2, width=320), Layer(1, seed=3)
    sw.target(0)
    out = feed(sw, low, 0.0, key=True)
    for i in range(1, 4):
        out += feed(sw, low, i / 30)
        feed(sw, high, i / 30)
    sw.target(1)
    out += feed(sw, low, 4 / 30)  # still the low layer: the high one has no keyframe yet
    assert feed(sw, high, 4 / 30) == []
    switched = feed(sw, high, 5 / 30, key=True)
    assert switched and sw.current == 1 and sw.pending is None
    assert feed(sw, low, 5 / 30) == []  # the old layer is not forwarded any more
    out += switched + feed(sw, high, 6 / 30)
    assert continuous(out)
    frame_pids = pids(out)[::2]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(frame_pids, frame_pids[1:]))
    stamps = [ts for _, ts, _ in out][::2]
    assert all(0 < (b - a) & 0xFFFFFFFF <= 3100 for a, b in zip(stamps, stamps[1:]))
    tl0s = [vp8.parse_descriptor(body).tl0 for _, _, body in switched]
    assert tl0s[0] == (vp8.parse_descriptor(out[0][2]).tl0 + 2) & 0xFF  # two base frames earlier


def test_a_temporal_cap_leaves_frames_out_without_gaps():
    sw = Switcher(90000, True, random.Random(4))
    layer = Layer(0, seed=5)
    sw.target(0, max_tid=1)
    out = feed(sw, layer, 0.0, key=True)
    for i in range(1, 12):
        out += feed(sw, layer, i / 30)
    assert len(out) == 2 * 6  # frames 0, 2, 4, ...: the TL2 ones were left out
    assert continuous(out)
    frame_pids = pids(out)[::2]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(frame_pids, frame_pids[1:]))
    assert sw.frames_left_out == 6


def test_a_cap_is_lowered_at_any_frame_and_raised_only_where_it_can_be_decoded():
    sw = Switcher(90000, True, random.Random(6))
    layer = Layer(0, seed=7)
    sw.target(0)
    feed(sw, layer, 0.0, key=True)
    sw.target(0, max_tid=0)
    assert len(feed(sw, layer, 0.03)) == 0  # TL2: out at once
    assert len(feed(sw, layer, 0.06)) == 0  # TL1
    sw.target(0, max_tid=NO_TID)
    assert len(feed(sw, layer, 0.1)) == 0  # TL2 with a base layer missing under it: not yet
    out = feed(sw, layer, 0.13) + feed(sw, layer, 0.16)  # TL0, then its TL2 (sync)
    assert len(out) == 4
    seqs = [seq for seq, _, _ in out]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]


def test_late_packets_keep_their_own_numbers():
    sw = Switcher(90000, True, random.Random(8))
    layer = Layer(0, seed=9)
    sw.target(0, max_tid=1)
    feed(sw, layer, 0.0, key=True)
    frame = layer.frame_packets()  # TL2: left out
    late = layer.frame_packets()  # TL1: its first packet is late
    after = layer.frame_packets()  # TL2: left out
    base = layer.frame_packets()  # TL0
    for view, desc in frame:
        assert sw.forward(view, desc, 0, 0.1) is None
    second = sw.forward(late[1][0], late[1][1], 0, 0.13)
    for view, desc in after:
        sw.forward(view, desc, 0, 0.16)
    next_base = sw.forward(base[0][0], base[0][1], 0, 0.2)
    first = sw.forward(late[0][0], late[0][1], 0, 0.21)  # arrives last (a retransmission)
    assert first is not None and second is not None and next_base is not None
    assert (second[0] - first[0]) & 0xFFFF == 1
    assert (next_base[0] - second[0]) & 0xFFFF == 1
    assert pids([first[:3]]) == pids([second[:3]])


def test_pausing_and_resuming_keeps_one_stream():
    sw = Switcher(90000, True, random.Random(10))
    layer = Layer(0, seed=11)
    sw.target(0)
    out = feed(sw, layer, 0.0, key=True) + feed(sw, layer, 0.03)
    sw.target(None)
    assert feed(sw, layer, 0.06) == [] and feed(sw, layer, 1.0, key=True) == []
    sw.target(0)
    assert feed(sw, layer, 2.0) == []  # waits for a keyframe
    resumed = feed(sw, layer, 2.03, key=True)
    assert continuous(out + resumed)
    assert (resumed[0][1] - out[-1][1]) & 0xFFFFFFFF >= 90000 * 1.9  # time went on


def test_the_ring_answers_with_the_bytes_sent():
    sw = Switcher(90000, True, random.Random(12))
    low, high = Layer(0, seed=13), Layer(1, seed=14)
    sw.target(0)
    out = feed(sw, low, 0.0, key=True)
    sw.target(1)
    out += feed(sw, high, 0.03, key=True)
    for seq, ts, body in out:
        entry = sw.sent(seq)
        assert entry is not None and entry[:3] == (seq, ts, body)
    assert sw.sent((out[-1][0] + 1) & 0xFFFF) is None
    assert [e[0] for e in sw.recent(3)] == [out[-1][0], out[-2][0], out[-3][0]]


def test_audio_starts_at_once_and_restarts_continuously():
    sw = Switcher(48000, False, random.Random(15))
    sw.target(0)
    first = sw.forward(rtp_view(100, 960, b"opus"), None, 0, 0.0)
    assert first is not None
    sw.restart()  # the publisher's SSRC changed
    again = sw.forward(rtp_view(7000, 5, b"opus"), None, 0, 0.5)
    assert again is not None and (again[0] - first[0]) & 0xFFFF == 1
    assert (again[1] - first[1]) & 0xFFFFFFFF == 24000


def test_moving_down_keeps_only_the_base_layer_until_the_switch():
    sw = Switcher(90000, True, random.Random(16))
    low, high = Layer(0, seed=17, width=320), Layer(1, seed=18)
    sw.target(1)
    out = feed(sw, high, 0.0, key=True)
    for i in range(1, 4):
        out += feed(sw, high, i / 30)
    sw.target(0, max_tid=NO_TID)  # congestion: the low layer, as soon as it has a keyframe
    interim = [feed(sw, high, i / 30) for i in range(4, 8)]  # TL0, TL2, TL1, TL2
    assert [len(x) for x in interim] == [2, 0, 0, 0]
    switched = feed(sw, low, 8 / 30, key=True)
    assert switched and sw.max_tid == NO_TID  # the low layer at its full frame rate
    assert continuous(out + sum(interim, []) + switched + feed(sw, low, 9 / 30))
