"""Per-publication fan-out of RTP packets, with the per-viewer rewrite state.

A :class:`Publication` is one stream a participant sends (their mic, camera or screen),
arriving as one or more layers (:class:`~meeting.media.layer.Layer`: simulcast encodings,
lowest quality first). Each viewer that receives it has a :class:`ViewerStream`: the
viewer's own m-line, with its own SSRC, RTX SSRC and MID, and a
:class:`~meeting.media.switcher.Switcher` that says which layer (and temporal layers) it
forwards and keeps the viewer's numbering continuous across switches. Forwarding a packet
means rewriting its 12-byte header (sequence number and timestamp moved into the viewer
stream's space, the viewer's SSRC), its header extensions (the viewer's MID, the server's
send time) and, after a switch, the VP8 picture id, then sending it through the viewer's
transport. Nothing is depacketized, buffered or decoded.

Around that hot path the publication keeps what a receiver would keep, per layer:
reception statistics and NACKs for the publisher, keyframe requests relayed upstream
(rate-limited), the publisher's NTP/RTP timestamp pair so each viewer stream gets sender
reports in its own timestamp space (lip sync). Each viewer stream keeps what it sent, to
answer its NACKs with RTX within the viewer's retransmission budget.

Which layer a viewer gets is decided elsewhere (meeting.media.quality, through
:meth:`Publication.select`); what the publisher is asked to send (its REMB) is
``upstream_bitrate``, set from what its viewers can take.

The I/O side (meeting.media.transport) hands in decrypted packets and RTCP, and provides
the functions that send, all synchronous: a packet is forwarded to every viewer within the
socket's callback that received it, with no await. Time comes in as ``now`` (seconds,
monotonic).
"""

from __future__ import annotations

from typing import Callable

from meeting.media.layer import Layer
from meeting.media.rtcp import pack_nack, pack_pli, pack_receiver_report, pack_remb
from meeting.media.rtp import (
    RtpError, RtpView, abs_send_time, pack_rtp, parse_rtp, stamped, unwrap_rtx, viewer_extension_block,
)
from meeting.media.viewer import SendNow, ViewerStream
from meeting.media.vp8 import NO_TID, Vp8Descriptor, keyframe_size, parse_descriptor

# Sees every media packet of the publication's best layer (in arrival order, RTX already
# unwrapped), with its arrival time; must return at once (the recorder only queues it).
PacketTap = Callable[[RtpView, float], None]

# A viewer waiting for a keyframe asks again if none came this long after asking.
KEYFRAME_RETRY = 1.0
# What a publisher is asked for (REMB) until its viewers have said what they can take.
START_BITRATE = 1_500_000

class Publication:
    """One published stream, its layers, and its fan-out to viewer streams."""

    def __init__(
        self,
        *,
        participant: str,
        source: str,
        kind: str,
        upstream: SendNow,
        rtcp_ssrc: int,
        clock_rate: int | None = None,
        codec: str | None = None,
        keyframe_interval: float = 0.3,
    ) -> None:
        self.participant = participant
        self.source = source
        self.kind = kind
        self.video = kind == "video"
        self.codec = codec or ("VP8" if self.video else "opus")
        self.clock_rate = clock_rate or (90000 if self.video else 48000)
        self.upstream = upstream
        self.rtcp_ssrc = rtcp_ssrc
        self.keyframe_interval = keyframe_interval
        self.layers: list[Layer] = [self._new_layer(0, None)]
        # Negotiated with the publisher (set by the I/O side from its answer).
        self.rtx_apt: dict[int, int] = {}  # RTX payload type -> media payload type
        self.mid_id = 0
        self.audio_level_id = 0  # RFC 6464 extension id, for the recorder's speaker timeline
        self.ast_id = 0  # abs-send-time extension id: stamped anew on the way out
        self.rid_id = 0  # RID and repaired-RID extension ids: which layer a packet is
        self.rrid_id = 0
        self.strip_ids: tuple[int, ...] = ()  # those ids: never forwarded
        # The REMB the publisher gets for video: what its viewers can take (set by the room).
        self.upstream_bitrate = START_BITRATE

        self.viewers: list[ViewerStream] = []
        self.tap: PacketTap | None = None  # set while the room is being recorded
        self.tap_layer = 0  # the layer the tap gets: the best one flowing
        self.tap_next: int | None = None  # a better one, from its next keyframe

        # counters
        self.received = 0
        self.rtx_received = 0
        self.forwarded = 0
        # RTP payload bytes (headers left out: they differ per leg), for the metrics.
        self.received_octets = 0
        self.forwarded_octets = 0
        self.retransmitted = 0
        self.rtx_refused = 0  # NACKs not answered: the viewer's budget was spent
        self.probe_packets = 0
        self.malformed = 0
        self.anchors = 0  # viewer streams (re)started on a keyframe
        self.held_back = 0  # packets not sent to a viewer that waits for a keyframe
        self.nacks_sent = 0
        self.nacks_received = 0
        self.keyframe_requests_received = 0

    def _new_layer(self, index: int, rid: str | None) -> Layer:
        return Layer(index, rid, self.clock_rate, self.video, self.keyframe_interval)

    # --- wiring -----------------------------------------------------------------------

    @property
    def media_ssrc(self) -> int | None:
        """The first layer's media SSRC (the only one without simulcast)."""
        return self.layers[0].media_ssrc

    @property
    def keyframes_sent(self) -> int:
        return sum(layer.keyframes.sent for layer in self.layers)

    @property
    def lost_upstream(self) -> int:
        return sum(max(0, layer.stats.cumulative_lost) for layer in self.layers)

    def set_layers(self, rids: list[str] | None) -> None:
        """The publisher's encodings, lowest quality first (None: one stream, no RIDs).

        Layers that keep their RID keep their state; viewers of a layer that is gone
        start again on the first layer.
        """
        wanted: list[str | None] = list(rids) if rids else [None]
        if [layer.rid for layer in self.layers] == wanted:
            return
        old = {layer.rid: layer for layer in self.layers}
        self.layers = []
        for index, rid in enumerate(wanted):
            layer = old.get(rid) or self._new_layer(index, rid)
            layer.index = index
            self.layers.append(layer)
        for viewer in self.viewers:
            sw = viewer.sw
            if sw.current is not None and sw.current >= len(self.layers):
                sw.restart()
            if sw.pending is not None and sw.pending >= len(self.layers):
                sw.pending = 0
        self.tap_layer = len(self.layers) - 1
        self.tap_next = None
        self._regroup()

    def layer_for_rid(self, rid: str | None) -> Layer | None:
        for layer in self.layers:
            if layer.rid == rid:
                return layer
        return None

    def set_source(self, media_ssrc: int, rtx_ssrc: int | None, rtx_apt: dict[int, int],
                   layer: Layer | None = None) -> None:
        """Set a layer's SSRCs (the first layer's by default); a new media SSRC restarts
        its viewers at its next keyframe."""
        layer = layer or self.layers[0]
        if layer.set_ssrc(media_ssrc):
            for viewer in layer.viewers:
                if viewer.sw.current == layer.index:
                    viewer.sw.restart()
        layer.rtx_ssrc = rtx_ssrc
        self.rtx_apt = dict(rtx_apt)

    def attach(self, viewer: ViewerStream, now: float) -> None:
        """Start feeding ``viewer``: the lowest layer flowing, from its next keyframe
        (for video), until :meth:`select` says otherwise."""
        if viewer.publication is self:
            return
        if viewer.publication is not None:
            viewer.publication.detach(viewer)
        viewer.publication = self
        viewer.sw.set_media(self.clock_rate, self.video)
        viewer.sw.target(None)
        viewer.sw.target(self.first_layer(now))
        self.viewers.append(viewer)
        self._regroup()
        if viewer.ready:
            self.viewer_ready(viewer, now)

    def first_layer(self, now: float) -> int:
        """The layer a new viewer starts on: the lowest one flowing (quick to start)."""
        for layer in self.layers:
            if layer.live(now):
                return layer.index
        return 0

    def viewer_ready(self, viewer: ViewerStream, now: float) -> None:
        """The viewer's transport can carry media: ask the publisher for a keyframe."""
        pending = viewer.sw.pending
        if self.video and pending is not None and pending < len(self.layers):
            viewer.asked_keyframe_at = now
            self.request_keyframe(now, self.layers[pending])

    def select(self, viewer: ViewerStream, layer: int | None, max_tid: int, now: float) -> None:
        """Forward ``layer`` (None: nothing, paused) with temporal layers up to ``max_tid``
        to ``viewer``; a new layer starts at its next keyframe, asked for now."""
        if viewer.publication is not self:
            return
        sw = viewer.sw
        if layer is not None and layer >= len(self.layers):
            layer = len(self.layers) - 1
        before = (sw.current, sw.pending)
        sw.target(layer, max_tid)
        if (sw.current, sw.pending) == before:
            return
        if sw.pending is not None and self.video and viewer.ready:
            viewer.asked_keyframe_at = now
            self.request_keyframe(now, self.layers[sw.pending])
        self._regroup()

    def detach(self, viewer: ViewerStream) -> None:
        """Stop feeding ``viewer``; its switcher remembers where its numbering continues."""
        if viewer.publication is not self:
            return
        self.viewers.remove(viewer)
        viewer.sw.target(None)
        viewer.publication = None
        self._regroup()

    def close(self) -> None:
        for viewer in list(self.viewers):
            self.detach(viewer)

    def _regroup(self) -> None:
        """Each layer's list of the viewers that forward it or wait for it.

        New lists, never changed in place: a fan-out in progress (a switch regroups in the
        middle of one) keeps iterating the list it started with. Viewers with the same MID are kept together
        so consecutive ones reuse one extension block.
        """
        viewers = sorted(self.viewers, key=lambda v: v.mid_elem)
        for layer in self.layers:
            i = layer.index
            layer.viewers = [v for v in viewers if v.sw.current == i or v.sw.pending == i]

    # --- publisher -> server ------------------------------------------------------------

    def ingest(self, data: bytes, arrival_ms: int, now: float, is_rtx: bool = False,
                     layer: Layer | None = None) -> None:
        """Handle one decrypted RTP datagram from the publisher (of ``layer``, by default
        the first)."""
        if layer is None:
            layer = self.layers[0]
        try:
            view = parse_rtp(data, self.mid_id, self.strip_ids, self.ast_id)
        except RtpError:
            self.malformed += 1
            layer.malformed += 1
            return
        if is_rtx:
            self.rtx_received += 1
            layer.rtx_received += 1
            apt = self.rtx_apt.get(view.b1 & 0x7F)
            if apt is None or layer.media_ssrc is None or not unwrap_rtx(view, layer.media_ssrc, apt):
                return
        elif view.payload_size == 0:
            return  # padding-only probe: nothing to forward
        self.received += 1
        layer.received += 1
        self.received_octets += view.payload_size
        seq = view.seq
        layer.stats.add(seq, view.ts, now, is_rtx)
        layer.last_time = now
        desc: Vp8Descriptor | None = None
        if self.video:
            lost = layer.nack.on_packet(seq, now)  # type: ignore[union-attr]
            if lost:
                self.nacks_sent += 1
                self.upstream(pack_nack(self.rtcp_ssrc, view.ssrc, lost))
                layer.deadline = layer.next_deadline()
            if self.codec == "VP8":
                desc = view.desc = parse_descriptor(view.body)
            if desc is not None:
                tid = desc.tid
                layer.octets[tid] += view.payload_size
                if tid != NO_TID:
                    layer.temporal = True
                if desc.start:
                    layer.frames += 1
                    if desc.keyframe:
                        self._keyframe(layer, view, now)
            else:
                layer.octets[NO_TID] += view.payload_size
            if view.ast >= 0:
                view.ext = stamped(view, abs_send_time(now))
        else:
            layer.octets[NO_TID] += view.payload_size
        if now >= layer.deadline:
            self._service(layer, now)
        if self.tap is not None and layer.index == self.tap_layer:
            self.tap(view, now)
        if layer.viewers:
            self._fan_out(layer, view, desc, now)

    def _keyframe(self, layer: Layer, view: RtpView, now: float) -> None:
        layer.last_keyframe = now
        size = keyframe_size(view.payload)
        if size is not None:
            layer.width, layer.height = size
        if self.tap_next == layer.index:
            # The tap moves to a better layer where that layer can be decoded from.
            self.tap_layer = layer.index
            self.tap_next = None

    def _fan_out(self, layer: Layer, view: RtpView, desc: Vp8Descriptor | None, now: float) -> None:
        b0 = view.b0
        b1 = view.b1
        csrc = view.csrc
        size = view.payload_size
        index = layer.index
        last_elem = None
        block = b""
        sent = 0
        moved = False
        for v in layer.viewers:
            if not v.ready:
                continue
            sw = v.sw
            switches = sw.switches
            out = sw.forward(view, desc, index, now)
            if out is None:
                if sw.pending == index and self.video:
                    self.held_back += 1
                    if now - v.asked_keyframe_at > KEYFRAME_RETRY:
                        v.asked_keyframe_at = now
                        self.request_keyframe(now, layer)
                continue
            if sw.switches != switches:
                moved = True
                self.anchors += 1
            if v.mid_elem != last_elem or v.allowed_ext is not None:
                block = viewer_extension_block(view, v.mid_elem, v.allowed_ext)
                last_elem = v.mid_elem
            data = pack_rtp(b0, b1, out[0], out[1], v.ssrc, csrc, block, out[2])
            try:
                v.send(data)
            except ConnectionError:
                v.ready = False
                continue
            v.packets += 1
            v.octets += size
            sent += 1
        self.forwarded += sent
        if moved:
            self._regroup()
        self.forwarded_octets += sent * size

    def handle_sender_report(self, ntp: int, rtp_ts: int, now: float, layer: Layer | None = None) -> None:
        """Remember the publisher's NTP/RTP pair on ``layer`` (by default the first)."""
        (layer or self.layers[0]).on_sender_report(ntp, rtp_ts, now)

    def report_blocks(self, now: float) -> list[bytes]:
        """Reception report blocks about each layer's media SSRC, for our RR."""
        return [block for layer in self.layers if (block := layer.report_block(now)) is not None]

    def receiver_report(self, now: float) -> bytes | None:
        """RR about the publisher's streams, plus a REMB for video.

        The REMB carries ``upstream_bitrate``, what the best-placed viewers can take,
        rather than a delay-based estimate of the publisher's own link: aiortc's
        RemoteBitrateEstimator costs ~20 us per packet (more than the rest of ingest), and
        the browser's own loss-based controller, fed by these receiver reports, already
        backs off under loss.
        """
        blocks = self.report_blocks(now)
        if not blocks:
            return None
        report = pack_receiver_report(self.rtcp_ssrc, blocks)
        ssrcs = [layer.media_ssrc for layer in self.layers if layer.media_ssrc is not None]
        if self.video and self.upstream_bitrate and ssrcs:
            report += pack_remb(self.rtcp_ssrc, self.upstream_bitrate, ssrcs)
        return report

    # --- measurements (the periodic media task) ----------------------------------------

    def measure(self, now: float) -> None:
        """Update each layer's bitrates; point the recorder's tap at the best layer flowing."""
        for layer in self.layers:
            layer.measure(now)
        if self.tap is None or len(self.layers) == 1:
            return
        best = next((layer.index for layer in reversed(self.layers) if layer.live(now)), None)
        if best is None or best == self.tap_layer:
            self.tap_next = None
            return
        if best < self.tap_layer and self.layers[self.tap_layer].live(now):
            return
        if self.tap_next != best:
            self.tap_next = best
            self.request_keyframe(now, self.layers[best])

    # --- timers (serviced on packet arrival and by the periodic RTCP task) ----------

    def service(self, now: float) -> None:
        """Send what timers made due on every layer: repeated NACKs, deferred keyframe requests."""
        for layer in self.layers:
            self._service(layer, now)

    def _service(self, layer: Layer, now: float) -> None:
        if layer.nack is not None and layer.media_ssrc is not None:
            again = layer.nack.due(now)
            if again:
                self.nacks_sent += 1
                self.upstream(pack_nack(self.rtcp_ssrc, layer.media_ssrc, again))
        if layer.keyframes.due(now) and layer.media_ssrc is not None:
            self.upstream(pack_pli(self.rtcp_ssrc, layer.media_ssrc))
        layer.deadline = layer.next_deadline()

    # --- viewers -> server -> publisher ----------------------------------------------

    def request_keyframe(self, now: float, layer: Layer | None = None) -> None:
        """A keyframe of ``layer`` is needed (by default of the layer the recorder taps):
        ask the publisher, at most once per interval.

        The PLI itself is sent by :meth:`service`, which the next packet from the
        publisher triggers (milliseconds later for video), so no task or timer is needed.
        """
        self.keyframe_requests_received += 1
        if not self.video:
            return
        if layer is None:
            layer = self.layers[min(self.tap_layer, len(self.layers) - 1)]
        layer.keyframes.ask()
        layer.deadline = layer.next_deadline()

    def viewer_keyframe(self, viewer: ViewerStream, now: float) -> None:
        """A viewer lost its picture (PLI/FIR): a keyframe of the layer it gets, or waits for."""
        index = viewer.sw.current if viewer.sw.current is not None else viewer.sw.pending
        if index is not None and index < len(self.layers):
            self.request_keyframe(now, self.layers[index])

    def retransmit(self, viewer: ViewerStream, lost: list[int], now: float) -> None:
        """Answer a viewer's NACK with what it was sent, as RTX when the viewer has RTX."""
        self.nacks_received += 1
        viewer.nacks += 1
        if not self.video or not viewer.ready:
            return
        send_time = abs_send_time(now)
        budget = viewer.rtx_budget
        unanswered = False
        for out_seq in lost:
            entry = viewer.sw.sent(out_seq)
            if entry is None:
                unanswered = True
                continue
            if budget is not None and not budget.take(len(entry[2])):
                self.rtx_refused += 1
                unanswered = True
                continue
            if not viewer.resend(entry, send_time):
                return
            self.retransmitted += 1
        if unanswered and now - viewer.asked_keyframe_at > KEYFRAME_RETRY:
            # A hole that will not be filled: the viewer's decoder waits for a keyframe. Ask
            # now rather than after the browser gives up retrying, seconds later on a slow link.
            viewer.asked_keyframe_at = now
            self.viewer_keyframe(viewer, now)

    def probe(self, viewer: ViewerStream, size: int, now: float) -> int:
        """Send ``viewer`` about ``size`` bytes of packets it already has, again, as RTX.

        Receivers discard them; their bandwidth estimate counts them: this is how a viewer
        is seen to take more before it is sent more. Returns the bytes sent.
        """
        if not self.video or not viewer.ready or viewer.rtx_ssrc is None or size <= 0:
            return 0
        send_time = abs_send_time(now)
        done = 0
        for entry in viewer.sw.recent(64):
            if done >= size:
                break
            if not viewer.resend(entry, send_time):
                break
            done += len(entry[2])
            self.probe_packets += 1
        return done
