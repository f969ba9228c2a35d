"""RTCP wire helpers: feedback (NACK, PLI, FIR, REMB) and reports, packed and read.

The RTCP half of the forwarding wire format (:mod:`meeting.media.rtp` is the RTP half):
what the server sends publishers and viewers about the media, and reads from them. Pure:
bytes in, bytes or values out, no I/O and no clocks.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

from meeting.media.rtp import RTP_VERSION, seq_diff

RTCP_SR = 200
RTCP_RR = 201
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTPFB_NACK = 1
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_REMB = 15


def pack_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """A generic NACK (RFC 4585 section 6.2.1) for ``lost`` sequence numbers.

    Handles sequence numbers that wrap around 65535 (aiortc's packer does not).
    """
    fci = b""
    pid: int | None = None
    blp = 0
    for seq in sorted_seqs(lost):
        if pid is not None:
            d = seq_diff(seq, pid) - 1
            if 0 <= d < 16:
                blp |= 1 << d
                continue
            fci += struct.pack("!HH", pid, blp)
        pid, blp = seq, 0
    if pid is not None:
        fci += struct.pack("!HH", pid, blp)
    return pack_rtcp(RTCP_RTPFB, RTPFB_NACK, struct.pack("!II", sender_ssrc, media_ssrc) + fci)


def unpack_nack_fci(fci: bytes) -> list[int]:
    """The sequence numbers listed in a generic NACK's FCI, wrapping correctly."""
    lost = []
    for pos in range(0, len(fci) - 3, 4):
        pid, blp = struct.unpack_from("!HH", fci, pos)
        lost.append(pid)
        for d in range(16):
            if (blp >> d) & 1:
                lost.append((pid + d + 1) & 0xFFFF)
    return lost


def sorted_seqs(seqs: Iterable[int]) -> list[int]:
    """Sort 16-bit sequence numbers in wrap-aware order (relative to the first one)."""
    items = list(seqs)
    if not items:
        return items
    base = items[0]
    return sorted(set(items), key=lambda s: seq_diff(s, base))


def pack_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """A Picture Loss Indication (RFC 4585 section 6.3.1)."""
    return pack_rtcp(RTCP_PSFB, PSFB_PLI, struct.pack("!II", sender_ssrc, media_ssrc))


def pack_remb(sender_ssrc: int, bitrate: int, ssrcs: Sequence[int]) -> bytes:
    """A Receiver Estimated Maximum Bitrate message (draft-alvestrand-rmcat-remb)."""
    exponent = 0
    mantissa = max(0, int(bitrate))
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exponent += 1
    fci = (
        b"REMB"
        + struct.pack("!BBH", len(ssrcs), (exponent << 2) | (mantissa >> 16), mantissa & 0xFFFF)
        + b"".join(struct.pack("!I", s) for s in ssrcs)
    )
    return pack_rtcp(RTCP_PSFB, PSFB_REMB, struct.pack("!II", sender_ssrc, 0) + fci)


def unpack_remb_fci(fci: bytes) -> tuple[int, list[int]]:
    """Bitrate and SSRCs of a REMB FCI; raises ValueError when it is not REMB."""
    if len(fci) < 8 or fci[:4] != b"REMB":
        raise ValueError("not a REMB message")
    count = fci[4]
    exponent = fci[5] >> 2
    mantissa = ((fci[5] & 0x03) << 16) | (fci[6] << 8) | fci[7]
    if len(fci) < 8 + 4 * count:
        raise ValueError("REMB message is truncated")
    ssrcs = [struct.unpack_from("!I", fci, 8 + 4 * i)[0] for i in range(count)]
    return mantissa << exponent, ssrcs


class ReportBlock:
    """One reception report block (RFC 3550 section 6.4.1), as a receiver sent it."""

    __slots__ = ("ssrc", "fraction_lost", "packets_lost", "highest_seq", "jitter", "lsr", "dlsr")

    def __init__(self, ssrc: int, fraction_lost: int, packets_lost: int, highest_seq: int, jitter: int,
                 lsr: int, dlsr: int) -> None:
        self.ssrc = ssrc
        self.fraction_lost = fraction_lost  # 1/256 units, since the previous report
        self.packets_lost = packets_lost
        self.highest_seq = highest_seq
        self.jitter = jitter
        self.lsr = lsr
        self.dlsr = dlsr


def unpack_report_blocks(payload: bytes, count: int, sender_report: bool = False) -> list[ReportBlock]:
    """The report blocks of an RR (or, with ``sender_report``, an SR) payload."""
    pos = 4 + (20 if sender_report else 0)
    blocks = []
    for _ in range(count):
        if pos + 24 > len(payload):
            break
        ssrc, word, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", payload, pos)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        blocks.append(ReportBlock(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return blocks


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (what LSR echoes)."""
    return (ntp >> 16) & 0xFFFFFFFF


def unpack_fir_fci(fci: bytes) -> list[int]:
    """The media SSRCs a Full Intra Request (RFC 5104 section 4.3.1) asks keyframes for."""
    return [struct.unpack_from("!I", fci, pos)[0] for pos in range(0, len(fci) - 7, 8)]


def pack_rtcp(packet_type: int, count: int, payload: bytes) -> bytes:
    """One RTCP packet with its common header; ``payload`` must be 32-bit aligned."""
    return struct.pack("!BBH", 0x80 | count, packet_type, len(payload) // 4) + payload


def pack_sender_report(
    ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int
) -> bytes:
    """A sender report with no report blocks (RFC 3550 section 6.4.1)."""
    payload = struct.pack(
        "!IQIII", ssrc, ntp & 0xFFFFFFFFFFFFFFFF, rtp_ts & 0xFFFFFFFF,
        packets & 0xFFFFFFFF, octets & 0xFFFFFFFF,
    )
    return pack_rtcp(RTCP_SR, 0, payload)


def pack_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one CNAME item, which RFC 3550 wants in every compound."""
    text = cname.encode("utf8")[:255]
    chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return pack_rtcp(202, 1, chunk)


def pack_receiver_report(ssrc: int, blocks: Sequence[bytes]) -> bytes:
    """A receiver report from ``ssrc`` with already packed report blocks."""
    return pack_rtcp(RTCP_RR, len(blocks), struct.pack("!I", ssrc) + b"".join(blocks))


def pack_report_block(
    ssrc: int,
    fraction_lost: int,
    packets_lost: int,
    highest_seq: int,
    jitter: int,
    lsr: int,
    dlsr: int,
) -> bytes:
    """One reception report block (RFC 3550 section 6.4.1)."""
    lost = max(-(1 << 23), min(packets_lost, (1 << 23) - 1)) & 0xFFFFFF
    return struct.pack(
        "!IIIIII",
        ssrc,
        (fraction_lost & 0xFF) << 24 | lost,
        highest_seq & 0xFFFFFFFF,
        jitter & 0xFFFFFFFF,
        lsr & 0xFFFFFFFF,
        dlsr & 0xFFFFFFFF,
    )


def is_rtcp(data: bytes) -> bool:
    """Whether a demultiplexed SRTP/SRTCP datagram is RTCP (RFC 5761 section 4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def iter_rtcp(data: bytes) -> Iterable[tuple[int, int, bytes]]:
    """Walk a compound RTCP packet, yielding ``(packet_type, count, payload)``.

    Stops at the first malformed packet rather than raising: RTCP is advisory, and the
    packets before a broken one are still worth acting on.
    """
    pos = 0
    n = len(data)
    while pos + 4 <= n:
        b0, packet_type, words = struct.unpack_from("!BBH", data, pos)
        end = pos + 4 + 4 * words
        if b0 >> 6 != RTP_VERSION or end > n:
            return
        payload = data[pos + 4 : end]
        if b0 & 0x20 and payload:
            pad = payload[-1]
            if not 0 < pad <= len(payload):
                return
            payload = payload[:-pad]
        yield packet_type, b0 & 0x1F, payload
        pos = end


def unpack_sender_info(payload: bytes) -> tuple[int, int, int]:
    """``(ssrc, ntp_timestamp, rtp_timestamp)`` of a sender report's payload."""
    if len(payload) < 24:
        raise ValueError("sender report is truncated")
    ssrc, ntp, rtp_ts = struct.unpack_from("!IQI", payload)
    return ssrc, ntp, rtp_ts
