"""Per-publication fan-out with fake transports: rewrite, RTX, PLI relay, reports, layers."""

from __future__ import annotations

import random
import struct

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtcpPsfbPacket, RtcpRtpfbPacket, RtpPacket

from meeting.media import rtcp, rtp, vp8
from meeting.media.adaptation import ByteBucket
from meeting.media.forwarder import Publication
from meeting.media.viewer import ViewerStream
from meeting.media.vp8 import NO_TID
from tests.meeting.vp8_packets import vp8_payload

MAP = HeaderExtensionsMap()
MAP.configure(
    RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri=rtp.MID_URI),
            RTCRtpHeaderExtensionParameters(id=3, uri=rtp.ABS_SEND_TIME_URI),
        ]
    )
)
KEY = b"\x10\x00\x9d\x01\x2a" + b"k" * 50  # VP8 keyframe start
DELTA = b"\x10\x01" + b"d" * 50  # VP8 interframe start
CONT = b"\x00" + b"c" * 50  # continuation packet


class Wire:
    """Collects what a fake transport was asked to send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.broken = False

    def send(self, data: bytes) -> None:
        """What a viewer stream and a publication's feedback send through: now, no await."""
        if self.broken:
            raise ConnectionError("gone")
        self.sent.append(data)

    def rtp(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d, MAP) for d in self.sent if not rtcp.is_rtcp(d)]

    def rtcp(self) -> list:
        return [p for d in self.sent if rtcp.is_rtcp(d) for p in RtcpPacket.parse(d)]


def packet(seq: int, payload: bytes = DELTA, ts: int = 3000, ssrc: int = 1111, pt: int = 97, marker: int = 1) -> bytes:
    p = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload)
    p.marker = marker
    p.extensions.mid = "1"
    p.extensions.abs_send_time = (seq * 1000) & 0xFFFFFF
    return p.serialize(MAP)


def make_pub(kind: str = "video") -> tuple[Publication, Wire]:
    up = Wire()
    pub = Publication(participant="alice", source="camera" if kind == "video" else "mic", kind=kind,
                      upstream=up.send, rtcp_ssrc=5555)
    pub.mid_id = 1
    pub.ast_id = 3
    pub.set_source(1111, 2222, {98: 97})
    return pub, up


def make_viewer(mid: str, ssrc: int, rtx: bool = True, seed: int = 0, kind: str = "video") -> tuple[ViewerStream, Wire]:
    wire = Wire()
    v = ViewerStream(mid=mid, kind=kind, ssrc=ssrc, rtx_ssrc=ssrc + 1 if rtx else None, send=wire.send,
                     mid_id=1, rtx_payload_types={97: 98} if rtx else {}, rng=random.Random(seed))
    v.ready = True
    return v, wire


async def test_fan_out_rewrites_ssrc_sequence_timestamp_and_mid_per_viewer():
    pub, _ = make_pub()
    a, wa = make_viewer("4", 100)
    b, wb = make_viewer("17", 200, seed=1)
    pub.attach(a, 0.0)
    pub.attach(b, 0.0)
    for i, payload in enumerate([KEY, CONT, DELTA, CONT]):
        pub.ingest(packet(1000 + i, payload, ts=3000 * (i // 2)), 0, 0.01 * i)
    for viewer, wire, mid in ((a, wa, "4"), (b, wb, "17")):
        got = wire.rtp()
        assert [p.ssrc for p in got] == [viewer.ssrc] * 4
        assert [p.extensions.mid for p in got] == [mid] * 4
        seqs = [p.sequence_number for p in got]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]
        assert got[2].timestamp - got[0].timestamp == 3000
        assert [p.payload for p in got] == [KEY, CONT, DELTA, CONT]
        # The server's own send time (one clock for every publisher), not the publisher's.
        assert [p.extensions.abs_send_time for p in got] == [int(0.01 * i * 262144) for i in range(4)]
    assert pub.forwarded == 8 and pub.received == 4


async def test_a_new_video_viewer_starts_at_a_keyframe_and_asks_for_one():
    pub, up = make_pub()
    v, wire = make_viewer("3", 100)
    pub.ingest(packet(10), 0, 0.0)
    pub.attach(v, 0.0)
    pub.ingest(packet(11), 0, 0.01)  # delta frame: held back; the PLI goes out
    assert wire.sent == []
    plis = [p for p in up.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == 1]
    assert len(plis) == 1 and plis[0].media_ssrc == 1111 and plis[0].ssrc == 5555
    pub.ingest(packet(12, KEY, ts=6000), 0, 0.02)
    pub.ingest(packet(13, CONT, ts=6000), 0, 0.03)
    pub.ingest(packet(11), 0, 0.04)  # late packet from before the anchor
    assert [p.payload for p in wire.rtp()] == [KEY, CONT]


async def test_audio_viewers_start_at_once():
    pub, up = make_pub("audio")
    pub.set_source(1111, None, {})
    v, wire = make_viewer("0", 100, rtx=False, kind="audio")
    pub.attach(v, 0.0)
    pub.ingest(packet(5, b"opus", pt=96), 0, 0.0)
    assert [p.payload for p in wire.rtp()] == [b"opus"]
    assert up.sent == []  # no PLI for audio


async def test_keyframe_requests_are_rate_limited_but_not_lost():
    pub, up = make_pub()
    v, _ = make_viewer("3", 100)
    pub.attach(v, 0.0)
    pub.ingest(packet(1, KEY), 0, 0.0)
    for t in (0.01, 0.02, 0.05, 0.1):
        pub.request_keyframe(t)
        pub.ingest(packet(int(t * 100) + 1), 0, t)
    count = lambda: sum(isinstance(p, RtcpPsfbPacket) and p.fmt == 1 for p in up.rtcp())
    assert count() == 1  # the one asked on attach; the burst waits for the interval
    pub.ingest(packet(50), 0, 0.2)
    assert count() == 1
    pub.ingest(packet(51), 0, 0.31)
    assert count() == 2  # the requests inside the interval were served when it ended
    pub.ingest(packet(52), 0, 1.0)
    assert count() == 2


async def test_viewer_nack_is_answered_with_rtx_from_history():
    pub, _ = make_pub()
    v, wire = make_viewer("3", 100)
    pub.attach(v, 0.0)
    for i in range(5):
        pub.ingest(packet(200 + i, KEY if i == 0 else CONT), 0, 0.0)
    first = wire.rtp()[0].sequence_number
    wire.sent.clear()
    pub.retransmit(v, [(first + 2) & 0xFFFF, (first + 40) & 0xFFFF], 2.0)  # one known, one never sent
    [rtx_packet] = wire.rtp()
    assert rtx_packet.ssrc == v.rtx_ssrc and rtx_packet.payload_type == 98
    assert rtx_packet.extensions.mid == "3"
    assert rtx_packet.extensions.abs_send_time == int(2.0 * 262144)  # sent now, not then
    assert struct.unpack("!H", rtx_packet.payload[:2])[0] == (first + 2) & 0xFFFF
    assert rtx_packet.payload[2:] == CONT
    pub.retransmit(v, [first], 2.0)
    assert wire.rtp()[1].sequence_number == (rtx_packet.sequence_number + 1) & 0xFFFF
    assert pub.retransmitted == 2 and v.retransmitted == 2


async def test_viewer_without_rtx_gets_the_packet_again():
    pub, _ = make_pub()
    v, wire = make_viewer("3", 100, rtx=False)
    pub.attach(v, 0.0)
    pub.ingest(packet(1, KEY), 0, 0.0)
    seq = wire.rtp()[0].sequence_number
    pub.retransmit(v, [seq], 0.1)
    again = wire.rtp()[1]
    assert (again.ssrc, again.sequence_number, again.payload) == (100, seq, KEY)


async def test_publisher_gaps_are_nacked_and_retried_until_recovered_or_given_up():
    pub, up = make_pub()
    pub.ingest(packet(100), 0, 0.0)
    pub.ingest(packet(103), 0, 0.01)
    nacks = lambda: [p for p in up.rtcp() if isinstance(p, RtcpRtpfbPacket)]
    assert [sorted(n.lost) for n in nacks()] == [[101, 102]]
    assert nacks()[0].media_ssrc == 1111
    pub.ingest(packet(104), 0, 0.06)  # retry interval passed: both asked again
    assert [sorted(n.lost) for n in nacks()][-1] == [101, 102]
    # 101 comes back as RTX from the publisher: unwrapped, counted, no longer asked for
    rtx_packet = packet(7, b"\x00\x65" + DELTA, ssrc=2222, pt=98)
    pub.ingest(rtx_packet, 0, 0.07, is_rtx=True)
    assert pub.rtx_received == 1
    pub.ingest(packet(105), 0, 0.2)
    assert sorted(nacks()[-1].lost) == [102]
    nack = pub.layers[0].nack
    for i in range(20):
        pub.ingest(packet(106 + i), 0, 0.3 + 0.05 * i)
    assert 102 not in nack.missing and nack.gave_up == 1


async def test_rtx_from_the_publisher_is_forwarded_as_the_original():
    pub, _ = make_pub()
    v, wire = make_viewer("3", 100)
    pub.attach(v, 0.0)
    pub.ingest(packet(100, KEY), 0, 0.0)
    pub.ingest(packet(102, CONT), 0, 0.0)
    pub.ingest(packet(9, b"\x00\x65" + CONT, ssrc=2222, pt=98), 0, 0.0, is_rtx=True)
    got = wire.rtp()
    assert [p.sequence_number - got[0].sequence_number for p in got] == [0, 2, 1]
    assert {p.ssrc for p in got} == {100} and {p.payload_type for p in got} == {97}


async def test_padding_only_packets_are_not_forwarded():
    pub, _ = make_pub()
    v, wire = make_viewer("3", 100)
    pub.attach(v, 0.0)
    pub.ingest(packet(1, KEY), 0, 0.0)
    probe = RtpPacket(payload_type=98, sequence_number=3, timestamp=1, ssrc=2222)
    probe.padding_size = 100
    pub.ingest(probe.serialize(MAP), 0, 0.0, is_rtx=True)
    assert len(wire.sent) == 1


async def test_moving_a_viewer_stream_to_another_publication_keeps_it_continuous():
    alice, _ = make_pub()
    bob, _ = make_pub()
    bob.set_source(3333, None, {})
    v, wire = make_viewer("3", 100)
    alice.attach(v, 0.0)
    alice.ingest(packet(500, KEY, ts=90000), 0, 0.0)
    alice.ingest(packet(501, CONT, ts=90000), 0, 0.0)
    bob.attach(v, 0.5)  # detaches from alice
    assert v not in alice.viewers
    alice.ingest(packet(502, CONT), 0, 0.5)
    bob.ingest(packet(40000, KEY, ts=123, ssrc=3333), 0, 0.5)
    got = wire.rtp()
    assert len(got) == 3
    assert got[2].sequence_number == (got[1].sequence_number + 1) & 0xFFFF
    assert 0 < (got[2].timestamp - got[1].timestamp) % 2**32 <= 0.5 * 90000 + 1
    assert {p.ssrc for p in got} == {100}


async def test_sender_report_maps_the_publishers_clock_into_the_viewers_timestamps():
    pub, _ = make_pub()
    v, _ = make_viewer("3", 100)
    pub.attach(v, 0.0)
    assert v.sender_report(0.0) is None
    pub.ingest(packet(1, KEY, ts=1000), 0, 0.0)
    pub.ingest(packet(2, CONT, ts=1000), 0, 0.0)
    assert v.sender_report(0.0) is None  # no SR from the publisher yet
    ntp = 0xE0000000_80000000  # some NTP time, .5 s
    pub.handle_sender_report(ntp, 1000, now=10.0)
    sr, sdes = RtcpPacket.parse(v.sender_report(10.5))
    assert sr.ssrc == 100
    assert sr.sender_info.ntp_timestamp == ntp + (1 << 31)  # + 0.5 s
    expected = (1000 + v.sw.ts_off + 45000) & 0xFFFFFFFF
    assert sr.sender_info.rtp_timestamp == expected
    assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (2, len(KEY) + len(CONT))
    assert sdes.chunks[0].ssrc == 100


async def test_receiver_report_block_counts_loss():
    pub, _ = make_pub()
    for seq in (10, 11, 13, 14):
        pub.ingest(packet(seq), 0, 0.0)
    pub.handle_sender_report(0x1234_5678_9ABC_DEF0, 0, now=0.0)
    rr, remb = RtcpPacket.parse(pub.receiver_report(1.0))
    [block] = rr.reports
    assert (rr.ssrc, block.ssrc, block.packets_lost, block.highest_sequence) == (5555, 1111, 1, 14)
    assert block.fraction_lost == 256 // 5
    assert block.lsr == 0x5678_9ABC and block.dlsr == 65536
    assert isinstance(remb, RtcpPsfbPacket) and remb.fmt == rtcp.PSFB_REMB
    assert rtcp.unpack_remb_fci(remb.fci) == (1_500_000, [1111])  # the cap, for video


async def test_unready_and_broken_viewers_are_skipped():
    pub, _ = make_pub("audio")
    pub.set_source(1111, None, {})
    v, wire = make_viewer("0", 100, rtx=False, kind="audio")
    w, wire2 = make_viewer("1", 200, rtx=False, kind="audio")
    v.ready = False
    wire2.broken = True
    pub.attach(v, 0.0)
    pub.attach(w, 0.0)
    pub.ingest(packet(1, b"opus", pt=96), 0, 0.0)
    assert wire.sent == [] and wire2.sent == []
    assert not w.ready and pub.forwarded == 0


async def test_a_new_publisher_ssrc_restarts_viewers_at_the_next_keyframe():
    pub, _ = make_pub()
    v, wire = make_viewer("3", 100)
    pub.attach(v, 0.0)
    pub.ingest(packet(10, KEY), 0, 0.0)
    pub.set_source(4444, None, {})
    pub.ingest(packet(900, DELTA, ssrc=4444), 0, 0.1)
    pub.ingest(packet(901, KEY, ssrc=4444), 0, 0.2)
    got = wire.rtp()
    assert len(got) == 2 and got[1].sequence_number == (got[0].sequence_number + 1) & 0xFFFF


async def test_csrcs_and_header_extensions_survive_forwarding_and_retransmission_in_rfc_order():
    # RFC 3550 5.1: the CSRC list follows the fixed header, the extension follows the list.
    pub, _ = make_pub()
    viewer, wire = make_viewer("4", 100)
    pub.attach(viewer, 0.0)
    mixed = RtpPacket(payload_type=97, sequence_number=700, timestamp=9000, ssrc=1111, payload=KEY)
    mixed.csrc = [0xAAAA0001, 0xBBBB0002]
    mixed.extensions.mid = "1"
    mixed.extensions.abs_send_time = 0x123456
    pub.ingest(mixed.serialize(MAP), 0, 1.0)
    [out] = wire.rtp()  # parsed by aiortc's own RtpPacket.parse
    assert out.csrc == [0xAAAA0001, 0xBBBB0002]
    # abs-send-time is the server's send time: the viewer's bandwidth estimate reads it.
    assert out.extensions.mid == "4" and out.extensions.abs_send_time == int.from_bytes(rtp.abs_send_time(1.0), "big")
    assert out.payload == KEY and out.ssrc == 100
    # The same packet again, as an RTX retransmission answering the viewer's NACK.
    pub.retransmit(viewer, [out.sequence_number], 2.0)
    rtx = RtpPacket.parse(wire.sent[-1], MAP)
    assert rtx.ssrc == 101 and rtx.payload_type == 98
    assert rtx.csrc == [0xAAAA0001, 0xBBBB0002]
    assert rtx.extensions.mid == "4" and rtx.extensions.abs_send_time == int.from_bytes(rtp.abs_send_time(2.0), "big")
    assert struct.unpack("!H", rtx.payload[:2])[0] == out.sequence_number and rtx.payload[2:] == KEY


# --- simulcast layers ------------------------------------------------------------------------

LO, HI, LO_RTX, HI_RTX = 1111, 3333, 2222, 4444


def make_simulcast() -> tuple[Publication, Wire]:
    pub, up = make_pub()
    pub.set_layers(["lo", "hi"])
    pub.set_source(LO, LO_RTX, {98: 97}, pub.layers[0])
    pub.set_source(HI, HI_RTX, {98: 97}, pub.layers[1])
    return pub, up


def frame(seq: int, pid: int, ssrc: int, key: bool = False, ts: int = 0) -> bytes:
    return packet(seq, vp8_payload(pid, tl0=pid & 0xFF, tid=0, key=key), ts=ts or pid * 3000, ssrc=ssrc)


def plis(up: Wire) -> list[int]:
    return [p.media_ssrc for p in up.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == 1]


async def test_a_viewer_moves_to_another_layer_at_its_keyframe_and_sees_one_stream():
    pub, up = make_simulcast()
    lo, hi = pub.layers
    v, wire = make_viewer("3", 100)
    pub.attach(v, 0.0)
    pub.ingest(frame(10, 500, LO, key=True), 0, 0.0, layer=lo)
    pub.ingest(frame(7000, 20, HI), 0, 0.0, layer=hi)
    pub.select(v, 1, NO_TID, 0.01)
    pub.ingest(frame(11, 501, LO), 0, 0.05, layer=lo)  # still forwarded
    pub.ingest(frame(7001, 21, HI), 0, 0.05, layer=hi)  # not a keyframe: held back
    assert HI in plis(up)
    pub.ingest(frame(7002, 22, HI, key=True), 0, 0.1, layer=hi)
    pub.ingest(frame(12, 502, LO), 0, 0.1, layer=lo)  # the old layer: no more
    pub.ingest(frame(7003, 23, HI), 0, 0.13, layer=hi)
    got = wire.rtp()
    assert len(got) == 4 and {p.ssrc for p in got} == {100}
    assert [(p.sequence_number - got[0].sequence_number) & 0xFFFF for p in got] == [0, 1, 2, 3]
    pid = [vp8.parse_descriptor(p.payload).picture_id for p in got]
    assert [(x - pid[0]) & 0x7FFF for x in pid] == [0, 1, 2, 3]
    assert v.layer is hi and pub.anchors == 2


async def test_nacks_after_a_switch_are_answered_with_what_was_sent():
    pub, _ = make_simulcast()
    lo, hi = pub.layers
    v, wire = make_viewer("3", 100)
    pub.attach(v, 0.0)
    pub.ingest(frame(10, 500, LO, key=True), 0, 0.0, layer=lo)
    pub.select(v, 1, NO_TID, 0.01)
    pub.ingest(frame(7002, 22, HI, key=True), 0, 0.1, layer=hi)
    sent = wire.rtp()
    wire.sent.clear()
    pub.retransmit(v, [p.sequence_number for p in sent], 0.2)
    again = wire.rtp()
    assert [struct.unpack("!H", p.payload[:2])[0] for p in again] == [p.sequence_number for p in sent]
    assert [p.payload[2:] for p in again] == [p.payload for p in sent]  # picture ids as rewritten


async def test_reports_cover_every_layer_and_the_remb_asks_for_what_viewers_take():
    pub, _ = make_simulcast()
    lo, hi = pub.layers
    pub.ingest(frame(10, 1, LO, key=True), 0, 0.0, layer=lo)
    pub.ingest(frame(20, 1, HI, key=True), 0, 0.0, layer=hi)
    pub.upstream_bitrate = 2_345_678
    rr, remb = RtcpPacket.parse(pub.receiver_report(1.0))
    assert sorted(block.ssrc for block in rr.reports) == [LO, HI]
    bitrate, ssrcs = rtcp.unpack_remb_fci(remb.fci)
    assert sorted(ssrcs) == [LO, HI] and abs(bitrate - 2_345_678) < 2_345_678 / 1000


async def test_the_recording_tap_follows_the_best_layer_flowing():
    pub, up = make_simulcast()
    lo, hi = pub.layers
    tapped: list[int] = []
    pub.tap = lambda view, arrival: tapped.append(view.ssrc)
    pub.ingest(frame(10, 1, LO, key=True), 0, 0.0, layer=lo)
    pub.ingest(frame(20, 1, HI, key=True), 0, 0.0, layer=hi)
    assert tapped == [HI]  # the best layer from the start
    for t in range(1, 40):  # the high layer stops (the publisher's bandwidth fell)
        pub.ingest(frame(10 + t, 1 + t, LO), 0, 0.1 * t, layer=lo)
        pub.measure(0.1 * t)
    assert pub.tap_next == 0 and LO in plis(up)
    pub.ingest(frame(50, 41, LO, key=True), 0, 4.0, layer=lo)
    assert pub.tap_layer == 0 and tapped[-1] == LO


async def test_a_nack_that_cannot_be_answered_asks_the_publisher_for_a_keyframe_at_once():
    pub, up = make_pub()
    v, wire = make_viewer("3", 100)
    v.rtx_budget = ByteBucket(0, 60)  # room for one ~51-byte packet
    pub.attach(v, 0.0)
    for i in range(5):
        pub.ingest(packet(200 + i, KEY if i == 0 else CONT), 0, 0.01 * i)
    seqs = [p.sequence_number for p in wire.rtp()]
    asked = len(plis(up))
    pub.retransmit(v, seqs[1:2], 2.0)  # answered: no keyframe needed
    pub.ingest(packet(205, CONT), 0, 2.0)
    assert len(plis(up)) == asked
    pub.retransmit(v, seqs[2:4], 2.1)  # over the budget: the hole stays, the decoder will wait
    pub.ingest(packet(206, CONT), 0, 2.1)
    assert len(plis(up)) == asked + 1
    pub.retransmit(v, seqs[2:4], 2.5)  # the browser asks again: not another keyframe so soon
    pub.ingest(packet(207, CONT), 0, 2.6)
    assert len(plis(up)) == asked + 1


async def test_retransmissions_stay_within_the_viewers_budget_and_probes_resend_recent_packets():
    pub, _ = make_pub()
    v, wire = make_viewer("3", 100)
    budget = ByteBucket(0, 150)
    v.rtx_budget = budget
    pub.attach(v, 0.0)
    for i in range(5):
        pub.ingest(packet(200 + i, KEY if i == 0 else CONT), 0, 0.0)
    seqs = [p.sequence_number for p in wire.rtp()]
    wire.sent.clear()
    pub.retransmit(v, seqs, 0.1)
    assert len(wire.rtp()) == 2 and pub.rtx_refused == 3  # ~51-byte packets, 150 bytes allowed
    wire.sent.clear()
    sent = pub.probe(v, 120, 0.2)
    again = wire.rtp()
    assert sent >= 120 and len(again) == 3 and {p.ssrc for p in again} == {v.rtx_ssrc}
    assert [struct.unpack("!H", p.payload[:2])[0] for p in again] == seqs[::-1][:3]
