"""RTP wire helpers for forwarding packets without depacketizing them (RTCP: rtcp.py).

aiortc's own :mod:`aiortc.rtp` parses every packet into an ``RtpPacket`` with decoded
header extensions, which is more than a forwarder needs and costs several microseconds
per packet. This module reads just the fields the forwarder routes and rewrites on,
keeps the header-extension elements as raw bytes, and builds the outgoing packet for
one viewer with a handful of byte concatenations.

Everything here is pure: bytes in, bytes or values out, no I/O and no clocks.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
# RFC 8285: two-byte header profile is 0x100 followed by a 4-bit "appbits" field.
TWO_BYTE_PROFILE = 0x1000


_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")
# Padding that brings an extension block to a multiple of 4 bytes, indexed by length % 4.
_EXT_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"


class RtpError(ValueError):
    """A datagram that is not a usable RTP packet."""


def seq_add(seq: int, delta: int) -> int:
    """Add ``delta`` to a 16-bit sequence number, wrapping."""
    return (seq + delta) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 16-bit sequence space (``a - b``)."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def ts_add(ts: int, delta: int) -> int:
    """Add ``delta`` to a 32-bit RTP timestamp, wrapping."""
    return (ts + delta) & 0xFFFFFFFF


class RtpView:
    """The fields of one received RTP packet that forwarding needs.

    ``body`` is everything after the header extension: payload plus any padding.
    ``ext`` holds the header-extension elements other than the MID (and those the caller
    strips), already encoded in the one-byte form (or ``None`` when some element needs the
    two-byte form, in which case ``elements`` is the source of truth). ``ast`` is where in
    ``ext`` the abs-send-time value starts (-1: none), so it can be stamped anew.
    """

    __slots__ = (
        "b0",
        "b1",
        "seq",
        "ts",
        "ssrc",
        "csrc",
        "elements",
        "ext",
        "mid",
        "body",
        "payload_size",
        "ast",
        "desc",
    )

    def __init__(self) -> None:
        self.b0 = 0x80
        self.b1 = 0
        self.seq = 0
        self.ts = 0
        self.ssrc = 0
        self.csrc = b""
        self.elements: list[tuple[int, bytes]] = []
        self.ext: bytes | None = b""
        self.mid: str | None = None
        self.body = b""
        self.payload_size = 0
        self.ast = -1
        self.desc: object = None  # the VP8 descriptor, once a video publication read it

    @property
    def payload_type(self) -> int:
        return self.b1 & 0x7F

    @property
    def marker(self) -> bool:
        return bool(self.b1 & 0x80)

    @property
    def padding_size(self) -> int:
        return self.body[-1] if (self.b0 & 0x20) and self.body else 0

    @property
    def payload(self) -> bytes:
        """The payload without RTP padding."""
        pad = self.padding_size
        return self.body[:-pad] if pad else self.body


def parse_rtp(data: bytes, mid_id: int = 0, strip: tuple[int, ...] = (), ast_id: int = 0) -> RtpView:
    """Parse ``data`` into an :class:`RtpView`.

    ``mid_id`` is the negotiated id of the MID extension (0 when not negotiated): its
    element is taken out (each viewer gets its own) and its value kept in ``view.mid``.
    Elements whose id is in ``strip`` (a publisher's RIDs, which no viewer negotiated) are
    left out of ``view.ext`` too. The one-byte elements that remain are kept as raw bytes
    (``view.ext``) so that a viewer's block is one concatenation away; ``view.elements``
    lists every element but the MID. With ``ast_id``, ``view.ast`` says where the
    abs-send-time value sits in ``view.ext``.
    """
    n = len(data)
    if n < RTP_HEADER_SIZE:
        raise RtpError("RTP packet shorter than its header")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError("RTP version is not 2")
    view = RtpView()
    view.b1 = b1
    view.seq = seq
    view.ts = ts
    view.ssrc = ssrc
    pos = RTP_HEADER_SIZE
    cc = b0 & 0x0F
    if cc:
        end = pos + 4 * cc
        if end > n:
            raise RtpError("RTP CSRC list is truncated")
        view.csrc = data[pos:end]
        pos = end
    if b0 & 0x10:
        if pos + 4 > n:
            raise RtpError("RTP header extension is truncated")
        profile, words = _EXT_HEADER.unpack_from(data, pos)
        pos += 4
        end = pos + 4 * words
        if end > n:
            raise RtpError("RTP header extension is truncated")
        if profile == ONE_BYTE_PROFILE:
            _parse_one_byte(view, data, pos, end, mid_id, strip, ast_id)
        else:
            elements = []
            for x_id, value in parse_extension_elements(profile, data[pos:end]):
                if x_id == mid_id:
                    view.mid = _mid_value(value)
                else:
                    elements.append((x_id, value))
            view.elements = elements
            kept = [e for e in elements if e[0] not in strip]
            view.ext = encode_one_byte_elements(kept)
            if ast_id and view.ext is not None:
                view.ast = _value_position(kept, ast_id, 3)
        pos = end
    # Keep V and P, drop X and CC: they are recomputed for each outgoing packet.
    view.b0 = b0 & 0xE0
    view.body = data[pos:]
    pad = 0
    if b0 & 0x20:
        if pos >= n:
            raise RtpError("RTP padding without payload")
        pad = data[-1]
        if pad == 0 or pad > n - pos:
            raise RtpError("RTP padding length is invalid")
    view.payload_size = n - pos - pad
    return view


def _mid_value(value: bytes) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise RtpError("RTP MID extension is not ASCII") from None


def _value_position(elements: list[tuple[int, bytes]], x_id: int, size: int) -> int:
    """Where the value of element ``x_id`` starts in these elements' one-byte encoding."""
    pos = 0
    for eid, value in elements:
        if eid == x_id:
            return pos + 1 if len(value) == size else -1
        pos += 1 + len(value)
    return -1


def _parse_one_byte(view: RtpView, data: bytes, pos: int, end: int, mid_id: int, strip: tuple[int, ...],
                    ast_id: int) -> None:
    """Walk one-byte elements in place; keep the raw bytes of all but the MID and the
    stripped ones (hot path)."""
    elements = []
    keep_from = pos  # start of the raw run being kept
    kept = b""
    last = pos  # end of the last element: what follows is padding
    while pos < end:
        byte = data[pos]
        if byte == 0:  # padding
            pos += 1
            continue
        x_id = byte >> 4
        if x_id == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
            break
        length = (byte & 0x0F) + 1
        start = pos
        pos += 1 + length
        if pos > end:
            raise RtpError("RTP header extension element is truncated")
        if x_id == mid_id:
            view.mid = _mid_value(data[start + 1 : pos])
            kept += data[keep_from:start]
            keep_from = pos
        elif x_id in strip:
            elements.append((x_id, data[start + 1 : pos]))
            kept += data[keep_from:start]
            keep_from = pos
        else:
            if x_id == ast_id and length == 3:
                view.ast = len(kept) + (start - keep_from) + 1
            elements.append((x_id, data[start + 1 : pos]))
            last = pos
    if last > keep_from:
        kept += data[keep_from:last]
    view.elements = elements
    view.ext = kept


def parse_extension_elements(profile: int, raw: bytes) -> list[tuple[int, bytes]]:
    """Split an RFC 8285 extension block (without its 4-byte header) into elements."""
    elements: list[tuple[int, bytes]] = []
    n = len(raw)
    pos = 0
    if profile == ONE_BYTE_PROFILE:
        while pos < n:
            byte = raw[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            x_id = byte >> 4
            if x_id == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
                break
            length = (byte & 0x0F) + 1
            pos += 1
            if pos + length > n:
                raise RtpError("RTP header extension element is truncated")
            elements.append((x_id, raw[pos : pos + length]))
            pos += length
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < n:
            x_id = raw[pos]
            if x_id == 0:
                pos += 1
                continue
            if pos + 1 >= n:
                raise RtpError("RTP header extension element is truncated")
            length = raw[pos + 1]
            pos += 2
            if pos + length > n:
                raise RtpError("RTP header extension element is truncated")
            elements.append((x_id, raw[pos : pos + length]))
            pos += length
    # Any other profile is a non-RFC 8285 extension: nothing we can rewrite, drop it.
    return elements


def encode_one_byte_elements(elements: Iterable[tuple[int, bytes]]) -> bytes | None:
    """Encode elements in the one-byte form, or return ``None`` if one does not fit it."""
    out = b""
    for x_id, value in elements:
        length = len(value)
        if not 1 <= x_id <= 14 or not 1 <= length <= 16:
            return None
        out += bytes((x_id << 4 | (length - 1),)) + value
    return out


def mid_element(mid_id: int, mid: str) -> bytes:
    """The one-byte-form element carrying ``mid`` (empty when the MID is not negotiated)."""
    if not mid_id:
        return b""
    value = mid.encode("ascii")
    if not 1 <= mid_id <= 14 or not 1 <= len(value) <= 16:
        raise ValueError(f"MID {mid!r} with id {mid_id} does not fit a one-byte element")
    return bytes((mid_id << 4 | (len(value) - 1),)) + value


def extension_block(elements: bytes) -> bytes:
    """Wrap encoded one-byte elements into an extension block with header and padding."""
    size = len(elements)
    pad = _EXT_PAD[size & 3]
    return _EXT_HEADER.pack(ONE_BYTE_PROFILE, (size + len(pad)) >> 2) + elements + pad


def encode_extension_block(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """Encode any elements, in the one-byte form when they fit, else the two-byte form."""
    if not elements:
        return b""
    one = encode_one_byte_elements(elements)
    if one is not None:
        return extension_block(one)
    raw = b"".join(bytes((x_id, len(value))) + value for x_id, value in elements)
    pad = _EXT_PAD[len(raw) & 3]
    return _EXT_HEADER.pack(TWO_BYTE_PROFILE, (len(raw) + len(pad)) >> 2) + raw + pad


def pack_rtp(b0: int, b1: int, seq: int, ts: int, ssrc: int, csrc: bytes, ext_block: bytes, body: bytes) -> bytes:
    """Serialize one RTP packet: the only RTP serializer (forwarding, RTX, tests).

    RFC 3550 section 5.1 order: the fixed header, the CSRC list, the header extension,
    then the payload (and padding). ``b0`` carries V and P; X and CC are set here from
    ``ext_block`` and ``csrc``. ``b1`` is M and PT.
    """
    return _HEADER.pack(b0 | (0x10 if ext_block else 0) | (len(csrc) >> 2), b1, seq, ts, ssrc) + csrc + ext_block + body


def viewer_extension_block(view: RtpView, mid_elem: bytes, allowed: frozenset[int] | None,
                           ext: bytes | None = None) -> bytes:
    """The extension block one viewer gets: the packet's elements plus the viewer's MID.

    ``allowed`` is the set of extension ids the viewer negotiated, or ``None`` when it
    negotiated every id the publisher may send (the usual case, and the fast path).
    ``ext`` replaces ``view.ext`` (a retransmission stamped with a later send time).
    """
    if ext is None:
        ext = view.ext
    if allowed is None and ext is not None:
        elements = ext + mid_elem
        if not elements:
            return b""
        size = len(elements)
        pad = _EXT_PAD[size & 3]
        return _EXT_HEADER.pack(ONE_BYTE_PROFILE, (size + len(pad)) >> 2) + elements + pad
    source = view.elements if ext is None else parse_extension_elements(ONE_BYTE_PROFILE, ext)
    kept = [e for e in source if allowed is None or e[0] in allowed]
    if mid_elem:
        kept.append((mid_elem[0] >> 4, mid_elem[1:]))
    return encode_extension_block(kept)


def abs_send_time(now: float) -> bytes:
    """The abs-send-time value for ``now`` (seconds): 6.18 fixed point, 24 bits."""
    return (int(now * 262144) & 0xFFFFFF).to_bytes(3, "big")


def stamped(view: RtpView, send_time: bytes) -> bytes | None:
    """``view.ext`` with its abs-send-time value replaced (``view.ext`` when it has none).

    A viewer's receive-side bandwidth estimator (REMB) compares abs-send-time with
    arrival times; forwarded packets carry the send time of the server that sends them,
    so one clock covers every publisher's packets, and retransmissions are not taken for
    packets delayed by a queue.
    """
    ext = view.ext
    p = view.ast
    if p < 0 or ext is None:
        return ext
    return ext[:p] + send_time + ext[p + 3 :]


def unwrap_rtx(view: RtpView, media_ssrc: int, payload_type: int) -> bool:
    """Turn an RTX retransmission (RFC 4588) back into the original packet, in place.

    Returns False for RTX packets that carry no media (bandwidth-probing padding), which
    must not be forwarded.
    """
    payload = view.payload
    if len(payload) < 3:
        return False
    view.seq = (payload[0] << 8) | payload[1]
    view.ssrc = media_ssrc
    view.b1 = (view.b1 & 0x80) | payload_type
    # The original packet never had the probe padding: drop it with the OSN.
    view.b0 &= ~0x20
    view.body = payload[2:]
    view.payload_size = len(view.body)
    return True


def rtx_body(original_seq: int, payload: bytes) -> bytes:
    """The RTX payload for retransmitting ``payload`` as ``original_seq`` (RFC 4588)."""
    return _U16.pack(original_seq) + payload
