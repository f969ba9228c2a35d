"""Pure RTP/RTCP helpers, checked against aiortc's own parser and serializer."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtcpPsfbPacket, RtcpRtpfbPacket, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from meeting.media import rtcp, rtp

EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri=rtp.MID_URI),
    RTCRtpHeaderExtensionParameters(id=2, uri=rtp.AUDIO_LEVEL_URI),
    RTCRtpHeaderExtensionParameters(id=3, uri=rtp.ABS_SEND_TIME_URI),
]


def ext_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=EXTENSIONS))
    return m


def aiortc_packet(mid: str | None = "0", payload: bytes = b"\x10\x00\x9d\x01\x2a", **kw) -> bytes:
    packet = RtpPacket(payload_type=kw.get("pt", 97), sequence_number=kw.get("seq", 1000), timestamp=kw.get("ts", 90000))
    packet.ssrc = kw.get("ssrc", 0x11223344)
    packet.marker = kw.get("marker", 1)
    packet.payload = payload
    packet.extensions.mid = mid
    packet.extensions.abs_send_time = kw.get("abs_send_time", 0x123456)
    if kw.get("audio_level") is not None:
        packet.extensions.audio_level = kw["audio_level"]
    return packet.serialize(ext_map())


def test_parse_reads_header_and_takes_the_mid_out():
    view = rtp.parse_rtp(aiortc_packet(mid="5"), mid_id=1)
    assert (view.seq, view.ts, view.ssrc, view.payload_type, view.marker) == (1000, 90000, 0x11223344, 97, True)
    assert view.mid == "5"
    assert view.elements == [(3, bytes.fromhex("123456"))]
    assert view.ext == b"\x32" + bytes.fromhex("123456")
    assert view.payload == b"\x10\x00\x9d\x01\x2a"
    assert view.payload_size == 5


def test_rewrite_for_a_viewer_round_trips_through_aiortc():
    data = aiortc_packet(mid="0", audio_level=(True, 30))
    view = rtp.parse_rtp(data, mid_id=1)
    block = rtp.viewer_extension_block(view, rtp.mid_element(1, "12"), None)
    out = rtp.pack_rtp(view.b0, (view.b1 & 0x80) | 97, 7, 1234, 0xCAFE, view.csrc, block, view.body)
    parsed = RtpPacket.parse(out, ext_map())
    assert (parsed.sequence_number, parsed.timestamp, parsed.ssrc, parsed.marker) == (7, 1234, 0xCAFE, 1)
    assert parsed.extensions.mid == "12"
    assert parsed.extensions.abs_send_time == 0x123456
    assert parsed.extensions.audio_level == (True, 30)
    assert parsed.payload == view.payload


@pytest.mark.parametrize("order", [(1, 2, 3), (2, 1, 3), (2, 3, 1)])
def test_mid_is_removed_wherever_it_is_and_padding_dropped(order):
    values = {1: b"7", 2: b"\x00", 3: b"\x01\x02\x03"}  # audio level 0: a value byte of zero
    raw = b"".join(bytes([i << 4 | (len(values[i]) - 1)]) + values[i] for i in order)
    raw += b"\x00" * (-len(raw) % 4)
    data = struct.pack("!BBHII", 0x90, 97, 1, 2, 3) + struct.pack("!HH", 0xBEDE, len(raw) // 4) + raw + b"pay"
    view = rtp.parse_rtp(data, mid_id=1)
    assert view.mid == "7"
    assert sorted(view.elements) == [(2, b"\x00"), (3, b"\x01\x02\x03")]
    assert rtp.parse_extension_elements(0xBEDE, view.ext) == [e for e in view.elements]
    assert view.body == b"pay"


def test_rewrite_strips_extensions_the_viewer_did_not_negotiate():
    view = rtp.parse_rtp(aiortc_packet(mid="0", audio_level=(False, 10)), mid_id=1)
    block = rtp.viewer_extension_block(view, rtp.mid_element(1, "3"), frozenset({2}))
    parsed = RtpPacket.parse(
        rtp.pack_rtp(view.b0, (view.b1 & 0x80) | 97, 1, 1, 1, view.csrc, block, view.body), ext_map()
    )
    assert parsed.extensions.mid == "3"
    assert parsed.extensions.audio_level == (False, 10)
    assert parsed.extensions.abs_send_time is None


def test_no_extensions_at_all_gives_no_extension_block():
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"opus")
    view = rtp.parse_rtp(packet.serialize(HeaderExtensionsMap()))
    assert rtp.viewer_extension_block(view, b"", None) == b""
    out = rtp.pack_rtp(view.b0, (view.b1 & 0x80) | 96, 1, 2, 3, view.csrc, b"", view.body)
    assert out[0] & 0x10 == 0 and out[12:] == b"opus"


def test_two_byte_extensions_are_parsed_and_kept():
    long_value = bytes(range(20))  # too long for the one-byte form
    raw = bytes([5, len(long_value)]) + long_value + bytes([1, 1]) + b"7"
    raw += b"\x00" * (-len(raw) % 4)
    data = struct.pack("!BBHII", 0x90, 97, 1, 2, 3) + struct.pack("!HH", 0x1000, len(raw) // 4) + raw + b"pay"
    view = rtp.parse_rtp(data, mid_id=1)
    assert view.mid == "7"
    assert view.ext is None and view.elements == [(5, long_value)]
    block = rtp.viewer_extension_block(view, rtp.mid_element(1, "2"), None)
    assert struct.unpack_from("!H", block)[0] == 0x1000
    again = rtp.parse_rtp(
        rtp.pack_rtp(view.b0, (view.b1 & 0x80) | 97, 1, 2, 3, view.csrc, block, view.body), mid_id=1
    )
    assert again.mid == "2" and again.elements == [(5, long_value)] and again.payload == b"pay"


def test_csrcs_and_padding_are_kept():
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"data")
    packet.padding_size = 3
    packet.csrc = [10, 20]
    view = rtp.parse_rtp(packet.serialize(HeaderExtensionsMap()))
    assert view.payload == b"data" and view.padding_size == 3
    out = rtp.pack_rtp(view.b0, (view.b1 & 0x80) | 96, 9, 2, 4, view.csrc, b"", view.body)
    parsed = RtpPacket.parse(out)
    assert parsed.csrc == [10, 20] and parsed.payload == b"data" and parsed.padding_size == 3


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80" * 11, b"\x40" + b"\x00" * 11, struct.pack("!BBHII", 0x91, 97, 1, 2, 3), struct.pack("!BBHII", 0xA0, 97, 1, 2, 3)],
)
def test_malformed_packets_raise(data):
    with pytest.raises(rtp.RtpError):
        rtp.parse_rtp(data)


@given(st.binary(max_size=64))
def test_parse_never_raises_anything_but_rtp_error(data):
    try:
        rtp.parse_rtp(data, mid_id=1)
    except rtp.RtpError:
        pass


def test_rtx_wrap_and_unwrap_round_trip():
    view = rtp.parse_rtp(aiortc_packet(seq=500, payload=b"\x10\x00abcdef"), mid_id=1)
    rtx_packet = rtp.pack_rtp(view.b0, (view.b1 & 0x80) | 98, 40, view.ts, 0xBEEF, view.csrc, b"", rtp.rtx_body(500, view.payload))
    back = rtp.parse_rtp(rtx_packet)
    assert rtp.unwrap_rtx(back, media_ssrc=0x11223344, payload_type=97)
    assert (back.seq, back.ssrc, back.payload_type, back.payload) == (500, 0x11223344, 97, b"\x10\x00abcdef")


def test_rtx_padding_probe_is_not_media():
    probe = RtpPacket(payload_type=98, sequence_number=1, timestamp=2, ssrc=3, payload=b"")
    probe.padding_size = 200
    view = rtp.parse_rtp(probe.serialize(HeaderExtensionsMap()))
    assert not rtp.unwrap_rtx(view, media_ssrc=1, payload_type=97)


def test_nack_round_trip_across_the_sequence_wrap():
    lost = [65530, 65534, 0, 3, 40, 41]
    data = rtcp.pack_nack(1, 2, lost)
    [(packet_type, fmt, payload)] = list(rtcp.iter_rtcp(data))
    assert (packet_type, fmt) == (rtcp.RTCP_RTPFB, rtcp.RTPFB_NACK)
    assert sorted(rtcp.unpack_nack_fci(payload[8:])) == sorted(lost)
    parsed = RtcpPacket.parse(data)[0]
    assert isinstance(parsed, RtcpRtpfbPacket) and parsed.media_ssrc == 2


def test_pli_remb_sr_rr_parse_with_aiortc():
    pli = RtcpPacket.parse(rtcp.pack_pli(5, 6))[0]
    assert isinstance(pli, RtcpPsfbPacket) and (pli.fmt, pli.ssrc, pli.media_ssrc) == (1, 5, 6)
    remb = RtcpPacket.parse(rtcp.pack_remb(5, 1_234_567, [6, 7]))[0]
    assert rtcp.unpack_remb_fci(remb.fci)[1] == [6, 7]
    assert abs(rtcp.unpack_remb_fci(remb.fci)[0] - 1_234_567) < 8
    sr_data = rtcp.pack_sender_report(9, 0x1122334455667788, 4000, 10, 2000) + rtcp.pack_sdes_cname(9, "cname")
    sr, sdes = RtcpPacket.parse(sr_data)
    assert (sr.ssrc, sr.sender_info.ntp_timestamp, sr.sender_info.rtp_timestamp) == (9, 0x1122334455667788, 4000)
    assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (10, 2000)
    assert sdes.chunks[0].items == [(1, b"cname")]
    block = rtcp.pack_report_block(6, 12, 3, 70000, 40, 0xAABBCCDD, 65536)
    rr = RtcpPacket.parse(rtcp.pack_receiver_report(5, [block]))[0]
    report = rr.reports[0]
    assert (report.ssrc, report.fraction_lost, report.packets_lost, report.highest_sequence) == (6, 12, 3, 70000)
    assert (report.jitter, report.lsr, report.dlsr) == (40, 0xAABBCCDD, 65536)


def test_fir_fci_lists_media_ssrcs():
    fci = struct.pack("!IBBH", 77, 1, 0, 0) + struct.pack("!IBBH", 78, 2, 0, 0)
    assert rtcp.unpack_fir_fci(fci) == [77, 78]


def test_iter_rtcp_stops_at_a_truncated_packet():
    good = rtcp.pack_pli(1, 2)
    assert [t for t, _, _ in rtcp.iter_rtcp(good + good[:6])] == [rtcp.RTCP_PSFB]
    assert list(rtcp.iter_rtcp(b"\x00\x00")) == []


def test_sequence_arithmetic_wraps():
    assert rtp.seq_add(65535, 1) == 0
    assert rtp.seq_diff(2, 65534) == 4
    assert rtp.seq_diff(65534, 2) == -4
    assert rtcp.sorted_seqs([65535, 1, 0, 65534]) == [65534, 65535, 0, 1]
    assert rtp.ts_add(0xFFFFFFFF, 2) == 1


def test_rids_are_stripped_and_the_send_time_is_stamped_anew():
    # mid (1), rid (10), abs-send-time (3), repaired rid (11): the browser's order may vary
    elements = b"\x10" + b"7" + b"\xa1" + b"lo" + b"\x32" + bytes.fromhex("123456") + b"\xb1" + b"hi"
    ext = struct.pack("!HH", rtp.ONE_BYTE_PROFILE, (len(elements) + 3) // 4) + elements + b"\x00" * (-len(elements) % 4)
    data = rtp.pack_rtp(0x80, 97, 1, 2, 3, b"", b"", b"\x10payload")
    data = bytes([data[0] | 0x10]) + data[1:12] + ext + data[12:]
    view = rtp.parse_rtp(data, mid_id=1, strip=(10, 11), ast_id=3)
    assert view.mid == "7"
    assert (10, b"lo") in view.elements and (11, b"hi") in view.elements  # still readable
    assert view.ext == b"\x32" + bytes.fromhex("123456")  # but never forwarded
    assert view.ext[view.ast:view.ast + 3] == bytes.fromhex("123456")
    stamped = rtp.stamped(view, rtp.abs_send_time(1.5))
    assert stamped == b"\x32" + (int(1.5 * 262144) & 0xFFFFFF).to_bytes(3, "big")
    block = rtp.viewer_extension_block(view, rtp.mid_element(1, "4"), None, stamped)
    parsed = RtpPacket.parse(rtp.pack_rtp(view.b0, view.b1, 1, 2, 3, b"", block, view.body), ext_map())
    assert parsed.extensions.abs_send_time == int(1.5 * 262144) and parsed.extensions.mid == "4"


def test_a_packet_without_send_time_is_left_as_it_is():
    view = rtp.parse_rtp(aiortc_packet(mid="0"), mid_id=1, ast_id=9)
    assert view.ast == -1 and rtp.stamped(view, b"\x00\x00\x01") == view.ext


def test_report_blocks_of_receiver_and_sender_reports():
    block = rtcp.pack_report_block(0xABCD, 51, -3, 70000, 12, 0x11112222, 65536)
    rr = rtcp.pack_receiver_report(0x99, [block, block])
    [(packet_type, count, payload)] = list(rtcp.iter_rtcp(rr))
    blocks = rtcp.unpack_report_blocks(payload, count)
    assert len(blocks) == 2
    b = blocks[0]
    assert (b.ssrc, b.fraction_lost, b.packets_lost, b.highest_seq, b.jitter, b.lsr, b.dlsr) == (
        0xABCD, 51, -3, 70000, 12, 0x11112222, 65536)
    sr = rtcp.pack_rtcp(rtcp.RTCP_SR, 1, struct.pack("!IQIII", 7, 1, 2, 3, 4) + block)
    [(_, count, payload)] = list(rtcp.iter_rtcp(sr))
    assert rtcp.unpack_report_blocks(payload, count, sender_report=True)[0].ssrc == 0xABCD
    assert rtcp.unpack_report_blocks(payload[:30], count, sender_report=True) == []  # truncated
    assert rtcp.ntp_middle(0x0123_4567_89AB_CDEF) == 0x4567_89AB
