"""One peer's bundled transport: decrypted RTP and RTCP in, routed to publications and viewer streams.

aiortc terminates ICE, DTLS and SRTP; below that, meetnow takes the packets itself
(:mod:`meeting.internals` holds the hooks). A :class:`PeerTransport` knows which SSRC
belongs to which publication and layer (the browser sends; simulcast layers are told
apart by their RID) and which to which viewer stream (the browser receives), hands RTP to
:meth:`Publication.ingest` (the hot path), turns RTCP into NACK answers, keyframe requests
and the viewer's bandwidth reports (REMB, receiver reports), and sends receiver and sender
reports about once a second. A second timer, five times a second, measures the peer's
publications, sets what each publisher is asked to send, and lets the peer's
:class:`~meeting.media.adaptation.Adaptation` choose what it is sent (and pace its probes).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from meeting import internals
from meeting.media.adaptation import PAD_INTERVAL, TICK, Adaptation, PausedFn, upstream_for
from meeting.media.roomview import RoomView
from meeting.media.forwarder import Publication
from meeting.media.viewer import SendNow, ViewerStream
from meeting.media.ice import CandidatePolicy, apply_ice_policy
from meeting.media.layer import Layer
from meeting.media.rtp import RtpError, parse_rtp
from meeting.media.rtcp import (
    PSFB_FIR,
    PSFB_PLI,
    PSFB_REMB,
    RTCP_PSFB,
    RTCP_RR,
    RTCP_RTPFB,
    RTCP_SR,
    RTPFB_NACK,
    iter_rtcp,
    pack_sdes_cname,
    unpack_fir_fci,
    unpack_nack_fci,
    unpack_remb_fci,
    unpack_report_blocks,
    unpack_sender_info,
)

logger = logging.getLogger(__name__)


def _not_connected(data: bytes) -> None:
    raise ConnectionError("the transport is not connected yet")


# Datagrams a peer connection may have waiting for the event loop (~1 s of one publisher).
MAX_BACKLOG = 150


class PeerTransport:
    """Routes one peer connection's media packets; owns its RTCP timer."""

    def __init__(self, room: RoomView, participant_id: str, on_paused: PausedFn | None = None) -> None:
        self.room = room
        self.participant_id = participant_id
        self.dtls: Any = None
        self.send_now: SendNow = _not_connected  # the forwarder's: RTP to this browser, no await
        self._send_rtcp: SendNow = _not_connected
        self.connected = False
        self.cname = "meetnow"
        self.publications: dict[str, Publication] = {}  # by source, owned by the peer
        self.streams: dict[int, ViewerStream] = {}  # viewer stream SSRC -> stream
        # SSRC -> (publication, layer, is RTX)
        self._ingest: dict[int, tuple[Publication, Layer, bool]] = {}
        self._ingest_by_mid: dict[str, Publication] = {}
        self._mid_ext_id = 0
        self.adaptation = Adaptation(on_paused)
        self._rtcp_task: asyncio.Task[None] | None = None
        self._media_task: asyncio.Task[None] | None = None
        self._closed = False

    # --- wiring ------------------------------------------------------------------------------

    def install(self, transceiver: Any, announce: tuple[str, ...], policy: CandidatePolicy) -> None:
        """Take over the (single, bundled) DTLS transport of the peer's first transceiver."""
        dtls = transceiver.receiver.transport
        self.dtls = dtls
        connection = internals.ice_connection(dtls)
        apply_ice_policy(connection, announce, policy)
        internals.bound_backlog(connection, MAX_BACKLOG, self._overloaded)
        internals.hook_dtls(dtls, self._on_rtp, self._on_rtcp)
        dtls.on("statechange", self._on_dtls_state)

    def _overloaded(self) -> None:
        self.room.overload_drops += 1

    def route(self, pub: Publication, mid: str, ssrc: int | None, rtx_ssrc: int | None,
              rtx_apt: dict[int, int]) -> None:
        """Send the publication the packets of these SSRCs (or of its MID and RIDs, once seen).

        SSRCs learnt from RIDs are kept across renegotiations: a browser stops sending RIDs
        once our receiver reports show the SSRC is known, so they could not be learnt again.
        """
        learnt = {}
        if len(pub.layers) > 1:
            learnt = {known: entry for known, entry in self._ingest.items()
                      if entry[0] is pub and entry[1] in pub.layers}
        self.unroute(pub, keep_mid=True)
        self._ingest.update(learnt)
        self._mid_ext_id = pub.mid_id or self._mid_ext_id
        if ssrc is not None and len(pub.layers) == 1:
            layer = pub.layers[0]
            pub.set_source(ssrc, rtx_ssrc, rtx_apt, layer)
            self._ingest[ssrc] = (pub, layer, False)
            if rtx_ssrc is not None:
                self._ingest[rtx_ssrc] = (pub, layer, True)
        else:
            pub.rtx_apt = dict(rtx_apt)
        self._ingest_by_mid[mid] = pub

    def unroute(self, pub: Publication, keep_mid: bool = False) -> None:
        """Forget the publication's SSRCs (and its MID unless ``keep_mid``)."""
        for ssrc in [s for s, entry in self._ingest.items() if entry[0] is pub]:
            del self._ingest[ssrc]
        if not keep_mid:
            for mid in [m for m, p in self._ingest_by_mid.items() if p is pub]:
                del self._ingest_by_mid[mid]

    # --- in: RTP ------------------------------------------------------------------------------

    def _on_rtp(self, data: bytes) -> None:
        """Decrypted RTP from this peer's browser (the hot path starts here)."""
        room = self.room
        if room.receive_loss and room.rng.random() < room.receive_loss:
            room.dropped += 1
            return
        entry = self._ingest.get(int.from_bytes(data[8:12], "big"))
        if entry is None:
            entry = self._learn_ssrc(data)
            if entry is None:
                return
        entry[0].ingest(data, 0, time.monotonic(), entry[2], entry[1])

    def _learn_ssrc(self, data: bytes) -> tuple[Publication, Layer, bool] | None:
        """An SSRC the answer did not list (every simulcast layer's): find its m-line by the
        MID extension and its layer by the RID (or, for RTX, repaired RID) extension."""
        if not self._mid_ext_id or len(data) < 12:
            return None
        try:
            view = parse_rtp(data, self._mid_ext_id)
        except RtpError:
            return None
        pub = self._ingest_by_mid.get(view.mid or "")
        if pub is None:
            return None
        is_rtx = (view.b1 & 0x7F) in pub.rtx_apt
        layer: Layer | None = pub.layers[0]
        if len(pub.layers) > 1:
            wanted = pub.rrid_id if is_rtx else pub.rid_id
            rid = next((v for x, v in view.elements if x == wanted), None)
            if rid is None:
                return None  # a layer that does not say which it is yet: wait for one that does
            layer = pub.layer_for_rid(rid.decode("ascii", "replace"))
            if layer is None:
                return None
        assert layer is not None
        if is_rtx:
            layer.rtx_ssrc = view.ssrc
        else:
            pub.set_source(view.ssrc, layer.rtx_ssrc, pub.rtx_apt, layer)
        entry = self._ingest[view.ssrc] = (pub, layer, is_rtx)
        return entry

    # --- in: RTCP -----------------------------------------------------------------------------

    def _on_rtcp(self, data: bytes) -> None:
        """Decrypted RTCP from this peer's browser, as publisher and as viewer."""
        now = time.monotonic()
        for packet_type, count, payload in iter_rtcp(data):
            if len(payload) < 8:
                continue
            if packet_type == RTCP_SR:
                try:
                    ssrc, ntp, rtp_ts = unpack_sender_info(payload)
                except ValueError:
                    continue
                entry = self._ingest.get(ssrc)
                if entry is not None and not entry[2]:
                    entry[0].handle_sender_report(ntp, rtp_ts, now, entry[1])
                # Its report blocks are about the streams this browser receives.
                self.adaptation.on_report(unpack_report_blocks(payload, count, sender_report=True),
                                          self.streams, now)
                continue
            if packet_type == RTCP_RR:
                self.adaptation.on_report(unpack_report_blocks(payload, count), self.streams, now)
                continue
            media_ssrc = int.from_bytes(payload[4:8], "big")
            if packet_type == RTCP_RTPFB and count == RTPFB_NACK:
                stream = self.streams.get(media_ssrc)
                if stream is not None and stream.publication is not None:
                    stream.publication.retransmit(stream, unpack_nack_fci(payload[8:]), now)
            elif packet_type == RTCP_PSFB and count in (PSFB_PLI, PSFB_FIR):
                targets = [media_ssrc] if count == PSFB_PLI else unpack_fir_fci(payload[8:])
                for ssrc in targets:
                    stream = self.streams.get(ssrc)
                    if stream is not None and stream.publication is not None:
                        stream.keyframe_requests += 1
                        stream.publication.viewer_keyframe(stream, now)
            elif packet_type == RTCP_PSFB and count == PSFB_REMB:
                try:
                    bitrate, _ = unpack_remb_fci(payload[8:])
                except ValueError:
                    continue
                self.adaptation.on_remb(bitrate, now)

    # --- out ---------------------------------------------------------------------------------

    def send_rtcp(self, data: bytes) -> None:
        """Send one RTCP compound to the browser now, if the transport is up."""
        try:
            self._send_rtcp(data)
        except ConnectionError:
            pass

    def _undecryptable(self) -> None:
        self.room.undecryptable += 1

    def _on_dtls_state(self) -> None:
        state = self.dtls.state if self.dtls is not None else "closed"
        if state == "connected" and not self.connected:
            self.connected = True
            self.send_now = internals.rtp_sender(self.dtls)
            self._send_rtcp = internals.rtp_sender(self.dtls, rtcp=True)
            internals.receive_now(self.dtls, self._on_rtp, self._on_rtcp, self._undecryptable)
            now = time.monotonic()
            for stream in self.streams.values():
                stream.send = self.send_now
                stream.ready = True
                stream.rtx_budget = self.adaptation.rtx_budget
                if stream.publication is not None:
                    stream.publication.viewer_ready(stream, now)
            if self._rtcp_task is None and not self._closed:
                self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
                self._media_task = asyncio.ensure_future(self._run_media())
        elif state in ("closed", "failed"):
            self.connected = False
            self.send_now = self._send_rtcp = _not_connected
            for stream in self.streams.values():
                stream.ready = False

    async def _run_rtcp(self) -> None:
        """Receiver reports to the publisher, sender reports to the viewer, ~1 per second."""
        jitter = random.Random()
        try:
            while not self._closed:
                # RFC 3550 randomizes the interval over [0.5, 1.5] times its nominal value.
                delay = 0.5 + jitter.random()
                due = time.monotonic() + delay
                await asyncio.sleep(delay)
                now = time.monotonic()
                # How late the event loop woke us: the server's own queueing delay.
                lag_ms = int((now - due) * 1000)
                if lag_ms > self.room.loop_lag_ms_max:
                    self.room.loop_lag_ms_max = lag_ms
                for pub in list(self.publications.values()):
                    pub.service(now)
                    rr = pub.receiver_report(now)
                    if rr is not None:
                        self.send_rtcp(rr + pack_sdes_cname(pub.rtcp_ssrc, self.cname))
                for stream in list(self.streams.values()):
                    if stream.ready and stream.publication is not None:
                        sr = stream.sender_report(now)
                        if sr is not None:
                            self.send_rtcp(sr)
        except asyncio.CancelledError:
            pass

    def video_streams(self) -> list[ViewerStream]:
        """The video streams this browser receives now."""
        return [s for s in self.streams.values() if s.kind == "video" and s.publication is not None and s.ready]

    async def _run_media(self) -> None:
        """Measure, set what publishers are asked for, adapt what this viewer gets, pace probes."""
        next_tick = 0.0
        try:
            while not self._closed:
                probing = self.adaptation.probe_rate is not None
                await asyncio.sleep(PAD_INTERVAL if probing else TICK)
                now = time.monotonic()
                try:
                    if now >= next_tick:
                        next_tick = now + TICK
                        for pub in list(self.publications.values()):
                            pub.measure(now)
                            if pub.video:
                                pub.upstream_bitrate = upstream_for(pub, self.room.demands_for(pub), now)
                        self.adaptation.tick(now, self.video_streams())
                    if self.adaptation.probe_rate is not None:
                        self.adaptation.pad(now, self.video_streams())
                except Exception:  # a bug here must not end adaptation for the whole call
                    logger.exception("%s: media adaptation failed", self.participant_id[:4])
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        """Stop the timers; the peer connection itself is closed by the peer."""
        self._closed = True
        tasks = [t for t in (self._rtcp_task, self._media_task) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
