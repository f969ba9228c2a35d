"""Per-publication fan-out of RTP packets, with the per-viewer rewrite state.

A :class:`Publication` is one stream a participant sends (their mic, camera or screen).
Each viewer that receives it has a :class:`ViewerStream`: the viewer's own m-line, with
its own SSRC, RTX SSRC and MID. Forwarding a packet means rewriting its 12-byte header
(sequence number and timestamp moved into the viewer stream's space, the viewer's SSRC)
and its header extensions (the viewer's MID), then sending it through the viewer's
transport. Nothing is depacketized, buffered or decoded.

Around that hot path the publication keeps what a receiver would keep: reception
statistics and NACKs for the publisher, a history of recent video packets to answer the
viewers' NACKs with RTX, keyframe requests relayed upstream (rate-limited), and the
publisher's NTP/RTP timestamp pair so each viewer stream gets sender reports in its own
timestamp space (lip sync).

The I/O side (meeting.media.sfu) hands in received datagrams and RTCP, and provides the
coroutines that send; time comes in as ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import random
from typing import Awaitable, Callable

from meeting.media.feedback import KeyframeLimiter, NackTracker, ReceptionStats
from meeting.media.rtp import (
    RtpError,
    RtpView,
    mid_element,
    pack_rtp,
    pack_nack,
    pack_pli,
    pack_receiver_report,
    pack_remb,
    pack_report_block,
    pack_sdes_cname,
    pack_sender_report,
    parse_rtp,
    rtx_body,
    seq_diff,
    unwrap_rtx,
    viewer_extension_block,
    vp8_keyframe_start,
)

SendFn = Callable[[bytes], Awaitable[None]]
# Sees every media packet a publication takes in (in arrival order, RTX already unwrapped),
# with its arrival time; must return at once (the recorder only queues it).
PacketTap = Callable[[RtpView, float], None]

HISTORY_SIZE = 512  # packets kept per video publication to answer NACKs (~5 s at 100 pkt/s)
_HISTORY_MASK = HISTORY_SIZE - 1
# After a viewer stream is anchored, packets older than the anchor must not be forwarded
# to it; checking for that is only needed while such packets can still arrive.
_FRESH_PACKETS = 2 * HISTORY_SIZE
# A viewer waiting for its first keyframe asks again if none came this long after asking.
KEYFRAME_RETRY = 1.0

_NTP_UNIT = 1 << 32


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
        "anchor_seq",
        "fresh",
        "seq_offset",
        "ts_offset",
        "next_seq",
        "next_ts",
        "last_time",
        "rtx_seq",
        "packets",
        "octets",
        "retransmitted",
        "nacks",
        "keyframe_requests",
        "asked_keyframe_at",
    )

    def __init__(
        self,
        *,
        mid: str,
        kind: str,
        ssrc: int,
        rtx_ssrc: int | None,
        send: SendFn,
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
        self.publication: Publication | None = None
        self.anchor_seq: int | None = None
        self.fresh = 0
        self.seq_offset = 0
        self.ts_offset = 0
        # Where the next binding continues, so a recycled m-line stays continuous.
        # Random starts in the lower half avoid SRTP trouble at the 16-bit wrap.
        self.next_seq = rng.randrange(0x8000)
        self.next_ts = rng.randrange(1 << 32)
        self.last_time: float | None = None
        self.rtx_seq = rng.randrange(0x8000)
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.nacks = 0
        self.keyframe_requests = 0
        self.asked_keyframe_at = float("-inf")

    @property
    def anchored(self) -> bool:
        return self.anchor_seq is not None

    def sender_report(self, now: float) -> bytes | None:
        """An SR + SDES compound for this stream, or None until a mapping is known.

        The NTP time is the publisher's, extrapolated to ``now``, and the RTP timestamp
        is the publisher's moved into this stream's timestamp space, so a viewer that
        syncs audio and video of one publisher by their SRs lines them up as sent.
        """
        pub = self.publication
        if pub is None or self.anchor_seq is None or pub.sr_ntp is None:
            return None
        elapsed = now - pub.sr_time
        ntp = pub.sr_ntp + int(elapsed * _NTP_UNIT)
        rtp_ts = pub.sr_rtp + self.ts_offset + int(elapsed * pub.clock_rate)
        return pack_sender_report(self.ssrc, ntp, rtp_ts, self.packets, self.octets) + pack_sdes_cname(
            self.ssrc, self.cname
        )


class Publication:
    """One published stream and its fan-out to viewer streams."""

    def __init__(
        self,
        *,
        participant: str,
        source: str,
        kind: str,
        upstream: SendFn,
        rtcp_ssrc: int,
        clock_rate: int | None = None,
        codec: str | None = None,
        keyframe_interval: float = 0.3,
        max_bitrate: int = 1_500_000,
    ) -> None:
        self.participant = participant
        self.source = source
        self.kind = kind
        self.video = kind == "video"
        self.codec = codec or ("VP8" if self.video else "opus")
        self.clock_rate = clock_rate or (90000 if self.video else 48000)
        self.upstream = upstream
        self.rtcp_ssrc = rtcp_ssrc
        # Negotiated with the publisher (set by the I/O side from its answer).
        self.media_ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.rtx_apt: dict[int, int] = {}  # RTX payload type -> media payload type
        self.mid_id = 0
        self.audio_level_id = 0  # RFC 6464 extension id, for the recorder's speaker timeline
        # The REMB the publisher gets for video: a cap, not an estimate (see receiver_report).
        self.max_bitrate = max_bitrate

        self.viewers: list[ViewerStream] = []
        self.tap: PacketTap | None = None  # set while the room is being recorded
        self.waiting = 0  # viewers that still wait for a keyframe to start
        self.history: list[RtpView | None] = [None] * HISTORY_SIZE if self.video else []
        self.stats = ReceptionStats(self.clock_rate)
        self.nack = NackTracker() if self.video else None
        self.keyframes = KeyframeLimiter(keyframe_interval)
        self.deadline = float("inf")
        self.max_seq: int | None = None
        self.max_ts = 0
        self.max_time = 0.0

        # Publisher's last sender report: NTP time, RTP time, and when it arrived.
        self.sr_ntp: int | None = None
        self.sr_rtp = 0
        self.sr_time = 0.0
        self.sr_lsr = 0

        # counters
        self.received = 0
        self.rtx_received = 0
        self.forwarded = 0
        # RTP payload bytes (headers left out: they differ per leg), for the metrics.
        self.received_octets = 0
        self.forwarded_octets = 0
        self.retransmitted = 0
        self.malformed = 0
        self.anchors = 0  # viewer streams (re)started on a keyframe
        self.held_back = 0  # packets not sent to a viewer that waits for a keyframe
        self.nacks_sent = 0
        self.nacks_received = 0
        self.keyframe_requests_received = 0

    # --- wiring -----------------------------------------------------------------------

    def set_source(self, media_ssrc: int, rtx_ssrc: int | None, rtx_apt: dict[int, int]) -> None:
        """Set the publisher's SSRCs; a new media SSRC restarts every viewer's anchor."""
        if media_ssrc != self.media_ssrc and self.media_ssrc is not None:
            self._restart()
        self.media_ssrc = media_ssrc
        self.rtx_ssrc = rtx_ssrc
        self.rtx_apt = dict(rtx_apt)

    def attach(self, viewer: ViewerStream, now: float) -> None:
        """Start feeding ``viewer`` (from the next keyframe, for video)."""
        if viewer.publication is self:
            return
        if viewer.publication is not None:
            viewer.publication.detach(viewer)
        viewer.publication = self
        viewer.anchor_seq = None
        self.viewers.append(viewer)
        # Group viewers with the same MID so consecutive ones reuse one extension block.
        self.viewers.sort(key=lambda v: v.mid_elem)
        self.waiting += 1
        if viewer.ready:
            self.viewer_ready(viewer, now)

    def viewer_ready(self, viewer: ViewerStream, now: float) -> None:
        """The viewer's transport can carry media: ask the publisher for a keyframe."""
        if self.video and viewer.anchor_seq is None:
            viewer.asked_keyframe_at = now
            self.request_keyframe(now)

    def detach(self, viewer: ViewerStream) -> None:
        """Stop feeding ``viewer``, remembering where its numbering continues."""
        if viewer.publication is not self:
            return
        self._close_binding(viewer)
        self.viewers.remove(viewer)
        viewer.publication = None

    def close(self) -> None:
        for viewer in list(self.viewers):
            self.detach(viewer)

    def _close_binding(self, viewer: ViewerStream) -> None:
        if viewer.anchor_seq is None:
            self.waiting -= 1
            return
        if self.max_seq is not None:
            viewer.next_seq = (self.max_seq + viewer.seq_offset + 1) & 0xFFFF
            viewer.next_ts = (self.max_ts + viewer.ts_offset) & 0xFFFFFFFF
            viewer.last_time = self.max_time
        viewer.anchor_seq = None

    def _restart(self) -> None:
        """The publisher restarted its stream (new SSRC): re-anchor every viewer."""
        for viewer in self.viewers:
            if viewer.anchor_seq is not None:
                self._close_binding(viewer)
                self.waiting += 1
        if self.video:
            self.history = [None] * HISTORY_SIZE
            self.nack = NackTracker()
        self.stats = ReceptionStats(self.clock_rate)
        self.max_seq = None
        self.sr_ntp = None

    def _anchor(self, viewer: ViewerStream, view: RtpView, now: float) -> None:
        """Map this packet to the viewer stream's next sequence number and timestamp."""
        ts = viewer.next_ts
        if viewer.last_time is not None:
            # Keep the viewer's timestamps moving with wall time across a re-binding.
            ts += max(1, int((now - viewer.last_time) * self.clock_rate))
        viewer.seq_offset = (viewer.next_seq - view.seq) & 0xFFFF
        viewer.ts_offset = (ts - view.ts) & 0xFFFFFFFF
        viewer.anchor_seq = view.seq
        viewer.fresh = _FRESH_PACKETS
        self.waiting -= 1
        self.anchors += 1

    # --- publisher -> server ------------------------------------------------------------

    async def ingest(self, data: bytes, arrival_ms: int, now: float, is_rtx: bool = False) -> None:
        """Handle one decrypted RTP datagram from the publisher."""
        try:
            view = parse_rtp(data, self.mid_id)
        except RtpError:
            self.malformed += 1
            return
        if is_rtx:
            self.rtx_received += 1
            apt = self.rtx_apt.get(view.b1 & 0x7F)
            if apt is None or self.media_ssrc is None or not unwrap_rtx(view, self.media_ssrc, apt):
                return
        elif view.payload_size == 0:
            return  # padding-only probe: nothing to forward
        self.received += 1
        self.received_octets += view.payload_size
        seq = view.seq
        self.stats.add(seq, view.ts, now, is_rtx)
        if self.video:
            lost = self.nack.on_packet(seq, now)
            if lost:
                self.nacks_sent += 1
                await self.upstream(pack_nack(self.rtcp_ssrc, view.ssrc, lost))
                self._update_deadline()
            self.history[seq & _HISTORY_MASK] = view
        if self.max_seq is None or seq_diff(seq, self.max_seq) > 0:
            self.max_seq = seq
            self.max_ts = view.ts
            self.max_time = now
        if now >= self.deadline:
            await self.service(now)
        if self.tap is not None:
            self.tap(view, now)
        if self.viewers:
            await self._fan_out(view, now)

    async def _fan_out(self, view: RtpView, now: float) -> None:
        b0 = view.b0
        b1 = view.b1
        seq = view.seq
        ts = view.ts
        csrc = view.csrc
        body = view.body
        size = view.payload_size
        last_elem = None
        block = b""
        keyframe = None
        sent = 0
        for v in self.viewers:
            if not v.ready:
                continue
            if v.anchor_seq is None:
                if self.video:
                    if keyframe is None:
                        keyframe = vp8_keyframe_start(view.payload) if self.codec == "VP8" else True
                    if not keyframe:
                        self.held_back += 1
                        if now - v.asked_keyframe_at > KEYFRAME_RETRY:
                            v.asked_keyframe_at = now
                            self.request_keyframe(now)
                        continue
                self._anchor(v, view, now)
            elif v.fresh:
                if (seq - v.anchor_seq) & 0x8000:
                    continue  # older than the viewer's first packet
                v.fresh -= 1
            if v.mid_elem != last_elem or v.allowed_ext is not None:
                block = viewer_extension_block(view, v.mid_elem, v.allowed_ext)
                last_elem = v.mid_elem
            data = pack_rtp(b0, b1, (seq + v.seq_offset) & 0xFFFF, (ts + v.ts_offset) & 0xFFFFFFFF, v.ssrc,
                            csrc, block, body)
            try:
                await v.send(data)
            except ConnectionError:
                v.ready = False
                continue
            v.packets += 1
            v.octets += size
            sent += 1
        self.forwarded += sent
        self.forwarded_octets += sent * size

    def handle_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        """Remember the publisher's NTP/RTP pair (for viewers' SRs and our RR's LSR)."""
        self.sr_ntp = ntp
        self.sr_rtp = rtp_ts
        self.sr_time = now
        self.sr_lsr = (ntp >> 16) & 0xFFFFFFFF

    def report_block(self, now: float) -> bytes | None:
        """A reception report block about the publisher's media SSRC, for our RR."""
        if self.media_ssrc is None or self.stats.base_seq is None:
            return None
        dlsr = 0
        if self.sr_ntp is not None:
            dlsr = min(int((now - self.sr_time) * 65536), 0xFFFFFFFF)
        s = self.stats
        return pack_report_block(
            self.media_ssrc,
            s.take_fraction_lost(),
            s.cumulative_lost,
            s.extended_max_seq,
            int(s.jitter),
            self.sr_lsr if self.sr_ntp is not None else 0,
            dlsr,
        )

    def receiver_report(self, now: float) -> bytes | None:
        """RR about the publisher's stream, plus a REMB for video.

        The REMB carries ``max_bitrate`` rather than a delay-based estimate: aiortc's
        RemoteBitrateEstimator costs ~20 us per packet (more than the rest of ingest),
        and the browser's own loss-based controller, fed by these receiver reports,
        already backs off under loss. The cap keeps a publisher within what viewers,
        who all get the same stream (no simulcast), can be expected to take.
        """
        block = self.report_block(now)
        if block is None:
            return None
        report = pack_receiver_report(self.rtcp_ssrc, [block])
        if self.video and self.max_bitrate and self.media_ssrc is not None:
            report += pack_remb(self.rtcp_ssrc, self.max_bitrate, [self.media_ssrc])
        return report

    # --- timers (serviced on packet arrival and by the periodic RTCP task) ----------

    def _update_deadline(self) -> None:
        deadline = float("inf")
        if self.nack is not None:
            d = self.nack.next_deadline()
            if d is not None:
                deadline = d
        d = self.keyframes.next_deadline()
        if d is not None and d < deadline:
            deadline = d
        self.deadline = deadline

    async def service(self, now: float) -> None:
        """Send what timers made due: repeated NACKs, a deferred keyframe request."""
        if self.nack is not None and self.media_ssrc is not None:
            again = self.nack.due(now)
            if again:
                self.nacks_sent += 1
                await self.upstream(pack_nack(self.rtcp_ssrc, self.media_ssrc, again))
        if self.keyframes.due(now):
            await self._send_pli()
        self._update_deadline()

    # --- viewers -> server -> publisher ----------------------------------------------

    def request_keyframe(self, now: float) -> None:
        """A viewer needs a keyframe: ask the publisher, at most once per interval.

        The PLI itself is sent by :meth:`service`, which the next packet from the
        publisher triggers (milliseconds later for video), so no task or timer is needed.
        """
        self.keyframe_requests_received += 1
        if not self.video:
            return
        self.keyframes.ask()
        self._update_deadline()

    async def _send_pli(self) -> None:
        if self.media_ssrc is not None:
            await self.upstream(pack_pli(self.rtcp_ssrc, self.media_ssrc))

    async def retransmit(self, viewer: ViewerStream, lost: list[int]) -> None:
        """Answer a viewer's NACK from the history, as RTX when the viewer has RTX."""
        self.nacks_received += 1
        viewer.nacks += 1
        if not self.video or viewer.anchor_seq is None or not viewer.ready:
            return
        history = self.history
        for out_seq in lost:
            in_seq = (out_seq - viewer.seq_offset) & 0xFFFF
            view = history[in_seq & _HISTORY_MASK]
            if view is None or view.seq != in_seq:
                continue
            if viewer.fresh and (in_seq - viewer.anchor_seq) & 0x8000:
                continue  # before this viewer's first packet (or another binding's)
            block = viewer_extension_block(view, viewer.mid_elem, viewer.allowed_ext)
            ts = (view.ts + viewer.ts_offset) & 0xFFFFFFFF
            rtx_pt = viewer.rtx_payload_types.get(view.b1 & 0x7F)
            if rtx_pt is not None and viewer.rtx_ssrc is not None:
                # RFC 4588: the original sequence number leads the payload; no padding.
                data = pack_rtp(view.b0 & ~0x20, (view.b1 & 0x80) | rtx_pt, viewer.rtx_seq, ts, viewer.rtx_ssrc,
                                view.csrc, block, rtx_body(out_seq, view))
                viewer.rtx_seq = (viewer.rtx_seq + 1) & 0xFFFF
            else:
                data = pack_rtp(view.b0, view.b1, out_seq, ts, viewer.ssrc, view.csrc, block, view.body)
            try:
                await viewer.send(data)
            except ConnectionError:
                viewer.ready = False
                return
            viewer.retransmitted += 1
            self.retransmitted += 1
