"""One viewer's outgoing copy of a publication: its numbering, what it was sent, its reports.

A :class:`ViewerStream` is the viewer's own m-line: its SSRC, RTX SSRC and MID, a
:class:`~meeting.media.switcher.Switcher` (which layer it forwards, numbering continuous
across switches, what it sent), the sender reports it gets in its own timestamp space, and
sending a packet again (a NACK's answer, a bandwidth probe). The publication it copies
(:mod:`meeting.media.forwarder`) does the fan-out.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable, Protocol, Sequence

from meeting.media.layer import Layer
from meeting.media.rtcp import ntp_middle, pack_sdes_cname, pack_sender_report
from meeting.media.rtp import RtpView, mid_element, pack_rtp, rtx_body, stamped, viewer_extension_block
from meeting.media.switcher import Switcher

# Sends one RTP packet to a viewer now (SRTP and the socket, no await): the fan-out calls it
# once per viewer per packet, so it must not cost a coroutine each time.
SendNow = Callable[[bytes], None]

_NTP_UNIT = 1 << 32


class Copied(Protocol):
    """What a viewer stream and the viewer's side (transport, adaptation) ask of the
    publication it copies (:class:`meeting.media.forwarder.Publication`)."""

    participant: str
    source: str
    clock_rate: int

    @property
    def layers(self) -> Sequence[Layer]: ...

    def viewer_ready(self, viewer: ViewerStream, now: float) -> None: ...

    def select(self, viewer: ViewerStream, layer: int | None, max_tid: int, now: float) -> None: ...

    def detach(self, viewer: ViewerStream) -> None: ...

    def viewer_keyframe(self, viewer: ViewerStream, now: float) -> None: ...

    def retransmit(self, viewer: ViewerStream, lost: list[int], now: float) -> None: ...

    def probe(self, viewer: ViewerStream, size: int, now: float) -> int: ...


class ByteBudget(Protocol):
    """How many bytes a viewer may still be sent again (retransmissions, probes)."""

    def take(self, size: int) -> bool:
        """Spend ``size`` bytes of it; False (nothing spent) when it is short."""


class ViewerStream:
    """One viewer's outgoing copy of a publication (a server "send" m-line)."""

    __slots__ = (
        "mid",
        "kind",
        "ssrc",
        "rtx_ssrc",
        "rtx_payload_types",
        "mid_elem",
        "allowed_ext",
        "cname",
        "send",
        "ready",
        "publication",
        "sw",
        "rtx_seq",
        "packets",
        "octets",
        "rtx_octets",
        "retransmitted",
        "nacks",
        "keyframe_requests",
        "asked_keyframe_at",
        "rtx_budget",
        "sr_sent",
    )

    def __init__(
        self,
        *,
        mid: str,
        kind: str,
        ssrc: int,
        rtx_ssrc: int | None,
        send: SendNow,
        mid_id: int = 0,
        allowed_ext: frozenset[int] | None = None,
        rtx_payload_types: dict[int, int] | None = None,
        cname: str = "meetnow",
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random
        self.mid = mid
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        # media payload type -> RTX payload type, as the viewer negotiated them
        self.rtx_payload_types = rtx_payload_types or {}
        self.mid_elem = mid_element(mid_id, mid)
        self.allowed_ext = allowed_ext
        self.cname = cname
        self.send = send
        # Set by the I/O side once the viewer accepted the m-line and its DTLS is up.
        self.ready = False
        self.publication: Copied | None = None
        video = kind == "video"
        self.sw = Switcher(90000 if video else 48000, video, rng)
        self.rtx_seq = rng.randrange(0x8000)
        self.packets = 0
        self.octets = 0
        self.rtx_octets = 0  # payload bytes sent again (NACK answers, probes)
        self.retransmitted = 0
        self.nacks = 0
        self.keyframe_requests = 0
        self.asked_keyframe_at = float("-inf")
        self.rtx_budget: ByteBudget | None = None  # the viewer's, shared by its streams
        self.sr_sent: deque[tuple[int, float]] = deque(maxlen=4)  # (LSR value, when sent)

    @property
    def anchored(self) -> bool:
        """Whether it forwards a layer now."""
        return self.sw.current is not None

    @property
    def layer(self) -> Layer | None:
        """The layer it forwards now."""
        pub = self.publication
        index = self.sw.current
        if pub is None or index is None or index >= len(pub.layers):
            return None
        return pub.layers[index]

    def sender_report(self, now: float) -> bytes | None:
        """An SR + SDES compound for this stream, or None until a mapping is known.

        The NTP time is the publisher's, extrapolated to ``now``, and the RTP timestamp
        is the publisher's moved into this stream's timestamp space, so a viewer that
        syncs audio and video of one publisher by their SRs lines them up as sent.
        """
        pub = self.publication
        layer = self.layer
        if pub is None or layer is None or layer.sr_ntp is None:
            return None
        elapsed = now - layer.sr_time
        ntp = layer.sr_ntp + int(elapsed * _NTP_UNIT)
        rtp_ts = layer.sr_rtp + self.sw.ts_off + int(elapsed * pub.clock_rate)
        self.sr_sent.append((ntp_middle(ntp), now))
        return pack_sender_report(self.ssrc, ntp, rtp_ts, self.packets, self.octets) + pack_sdes_cname(
            self.ssrc, self.cname
        )

    def round_trip(self, lsr: int, dlsr: int, now: float) -> float | None:
        """Round-trip time from a report block that echoes one of our sender reports."""
        if not lsr:
            return None
        for value, sent_at in self.sr_sent:
            if value == lsr:
                return max(0.0, now - sent_at - dlsr / 65536)
        return None

    def resend(self, entry: tuple[int, int, bytes, RtpView], send_time: bytes) -> bool:
        """Send a packet it was sent (from ``sw.sent``) again, as RTX when it has RTX; False
        once its transport is gone."""
        out_seq, out_ts, body, view = entry
        block = viewer_extension_block(view, self.mid_elem, self.allowed_ext, stamped(view, send_time))
        pad = view.padding_size
        payload = body[:-pad] if pad else body
        rtx_pt = self.rtx_payload_types.get(view.b1 & 0x7F)
        if rtx_pt is not None and self.rtx_ssrc is not None:
            # RFC 4588: the original sequence number leads the payload; no padding.
            data = pack_rtp(view.b0 & ~0x20, (view.b1 & 0x80) | rtx_pt, self.rtx_seq, out_ts, self.rtx_ssrc,
                            view.csrc, block, rtx_body(out_seq, payload))
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        else:
            data = pack_rtp(view.b0, view.b1, out_seq, out_ts, self.ssrc, view.csrc, block, body)
        try:
            self.send(data)
        except ConnectionError:
            self.ready = False
            return False
        self.retransmitted += 1
        self.rtx_octets += len(payload)
        return True
