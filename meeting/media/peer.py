"""One participant's peer connection: offers, answers, candidates and the m-lines they wire.

The server is always the offerer. Each participant's offer has "publish" m-lines (the
browser sends: its mic, camera, maybe screen) and "receive" m-lines (the browser
receives: every source every other participant publishes). Changes are renegotiated
with new server offers, serialized by :class:`meeting.media.negotiation.Negotiation`.
An m-line that is no longer needed goes inactive and is reused by the next stream of its
kind, so a long meeting does not grow its SDP without bound.

Publish video m-lines ask for simulcast (meeting.media.simulcast): a browser sends its
camera and screen in two layers, and each viewer is sent the one that suits it
(meeting.media.adaptation).

aiortc does ICE, DTLS and SRTP; its media pipeline stays off (:func:`meeting.internals.silence`)
and the packets are moved by :class:`meeting.media.transport.PeerTransport`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from meeting import internals
from meeting.media.adaptation import PausedFn
from meeting.media.roomview import RoomView
from meeting.media.forwarder import Publication
from meeting.media.viewer import ViewerStream
from meeting.media.ice import filter_sdp_candidates, parse_candidate
from meeting.media.negotiation import Line, MakeOffer, Negotiation, NegotiationError, plan_lines
from meeting.media.offer import (
    CODEC_PREFERENCES,
    OFFERED_EXTENSION_IDS,
    CandidateError,
    Offer,
    SdpError,
    TrackSlot,
    cname_of,
    stream_id,
)
from meeting.media.rtp import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    REPAIRED_RID_URI,
    RID_URI,
    mid_element,
)
from meeting.media.sdpanswer import AnsweredLine, AnswerError, check_answer
from meeting.media.simulcast import offer_simulcast
from meeting.media.transport import PeerTransport

logger = logging.getLogger(__name__)

SOURCES = {"mic": "audio", "camera": "video", "screen": "video"}

class _Line:
    """One m-line of a peer connection and what it carries."""

    __slots__ = ("transceiver", "kind", "role", "key", "pending", "stream", "answer")

    def __init__(self, transceiver: RTCRtpTransceiver, kind: str, role: str) -> None:
        self.transceiver = transceiver
        self.kind = kind
        self.role = role  # "publish" | "receive", from the browser's point of view
        self.key: tuple[str, str] | None = None  # (participant, source)
        self.pending = False  # assigned in the outstanding offer, applied on its answer
        self.stream: ViewerStream | None = None  # receive lines: kept across re-bindings
        self.answer: AnsweredLine | None = None  # the latest answer for this m-line

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid


class Peer:
    """One participant's peer connection and its share of the media plane."""

    def __init__(
        self,
        room: RoomView,
        participant_id: str,
        send_offer: Callable[[Offer], Awaitable[None]],
        on_state: Callable[[str], None] | None,
        on_paused: PausedFn | None = None,
    ) -> None:
        self.participant_id = participant_id
        self._room = room
        self._send_offer = send_offer
        self._on_state = on_state
        # Always explicit ICE servers: the bare default asks a public STUN server.
        self._pc = RTCPeerConnection(
            RTCConfiguration(iceServers=room.peer_ice_servers(), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._lines: list[_Line] = []
        self.transport = PeerTransport(room, participant_id, on_paused)
        self.publications = self.transport.publications  # by source
        self._negotiation = Negotiation()
        self._local_sdp = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.candidates_ignored = 0

    # --- public API ----------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        """Mirrors ``RTCPeerConnection.connectionState``."""
        return self._pc.connectionState

    @property
    def signaling_state(self) -> str:
        """Mirrors ``RTCPeerConnection.signalingState`` ("have-local-offer" while one is out)."""
        return self._pc.signalingState

    @property
    def closed(self) -> bool:
        return self._closed

    def transceivers(self) -> list[RTCRtpTransceiver]:
        """The peer connection's transceivers (tests and benchmarks look at them)."""
        return self._pc.getTransceivers()

    async def start(self, publish: list[str]) -> None:
        """Publish the first sources and send the first offer (errors propagate)."""
        for source in publish:
            self._add_publication(source)
        await self._offer(self._negotiation.changed(), raise_errors=True)

    async def accept_answer(self, sdp: str) -> None:
        """Apply the browser's answer to the outstanding offer.

        Raises SdpError, with nothing changed, when no offer is outstanding or the answer
        is malformed or does not fit the offer.
        """
        if self._closed:
            raise SdpError("the peer is closed")
        try:
            self._negotiation.answer_started()
        except NegotiationError as exc:
            raise SdpError(str(exc)) from None
        try:
            answered = check_answer(self._local_sdp, sdp)
        except AnswerError as exc:
            self._negotiation.answer_rejected()
            raise SdpError(str(exc)) from None
        filtered, dropped = filter_sdp_candidates(sdp, self._room.policy)
        self.candidates_ignored += dropped
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=filtered, type="answer"))
        except Exception as exc:
            # check_answer covers what aiortc rejects; reaching this is a gap in it.
            logger.warning("%s: aiortc rejected an answer that passed checks: %r", self.participant_id, exc)
            self._negotiation.answer_rejected()
            raise SdpError(f"answer rejected: {exc}") from None
        if self._closed:
            return
        self._apply_answer({line.mid: line for line in answered})
        self._offer_soon(self._negotiation.answer_applied())

    async def add_candidate(
        self, candidate: str, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        """Add a candidate the browser trickled; ``""`` means end of candidates.

        Raises CandidateError when it is malformed; silently ignores candidates the
        policy rejects (mDNS names, TCP, addresses outside ``allowed_peer_networks``).
        """
        dtls = self.transport.dtls
        if candidate is None or (isinstance(candidate, str) and candidate.strip() == ""):
            if not self._closed and dtls is not None:
                await dtls.transport.addRemoteCandidate(None)
            return
        if sdp_mid is None and sdp_mline_index is None:
            raise CandidateError("candidate needs sdpMid or sdpMLineIndex")
        if sdp_mid is not None and not isinstance(sdp_mid, str):
            raise CandidateError("sdpMid must be a string")
        if sdp_mline_index is not None and (
            not isinstance(sdp_mline_index, int) or isinstance(sdp_mline_index, bool) or sdp_mline_index < 0
        ):
            raise CandidateError("sdpMLineIndex must be a non-negative integer")
        try:
            parsed = parse_candidate(candidate)
        except ValueError as exc:
            raise CandidateError(str(exc)) from None
        if self._closed or dtls is None:
            return
        if not self._room.policy.allows_candidate(parsed.ip, parsed.protocol):
            self.candidates_ignored += 1
            return
        # Every m-line is bundled on one transport, whichever mid the browser names.
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        await dtls.transport.addRemoteCandidate(parsed)

    async def publish(self, source: str) -> None:
        """Start receiving ``source`` from this participant; renegotiates the room."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        if self._closed or source in self.publications:
            return
        self._add_publication(source)
        self._room.renegotiate()

    def set_tiles(self, tiles: dict[tuple[str, str], tuple[int, int]]) -> None:
        """How large this participant's page shows each video: (publisher, source) ->
        (width, height) in device pixels. Tiles it does not list are taken as large."""
        self.transport.adaptation.set_tiles(tiles)

    async def unpublish(self, source: str) -> None:
        """Stop receiving ``source``: viewers stop at once, their m-lines go inactive."""
        pub = self.publications.pop(source, None)
        if pub is None or self._closed:
            return
        self._retire(pub)
        self._room.renegotiate()

    # --- publications ------------------------------------------------------------------

    def _add_publication(self, source: str) -> None:
        pub = self.publications[source] = Publication(
            participant=self.participant_id, source=source, kind=SOURCES[source],
            upstream=self.transport.send_rtcp, rtcp_ssrc=0,
        )
        self._room.publication_started(pub)

    def _retire(self, pub: Publication) -> None:
        self._room.publication_ended(pub)
        self.transport.unroute(pub)
        pub.close()

    def _configure_publication(self, pub: Publication, line: _Line, info: AnsweredLine) -> None:
        pub.rtcp_ssrc = internals.sender_ssrcs(line.transceiver.sender)[0]
        codec = info.media_codec
        if codec is not None:
            pub.codec = codec.name
            pub.clock_rate = codec.clock_rate
        pub.mid_id = info.extensions.get(MID_URI, 0)
        pub.audio_level_id = info.extensions.get(AUDIO_LEVEL_URI, 0)
        pub.ast_id = info.extensions.get(ABS_SEND_TIME_URI, 0)
        pub.rid_id = info.extensions.get(RID_URI, 0)
        pub.rrid_id = info.extensions.get(REPAIRED_RID_URI, 0)
        pub.strip_ids = tuple(i for i in (pub.rid_id, pub.rrid_id) if i)
        pub.set_layers(list(info.rids) or None)
        self.transport.route(pub, info.mid, info.ssrc, info.rtx_ssrc, info.rtx_map())

    # --- negotiation -----------------------------------------------------------------------

    def changed(self) -> None:
        """The room changed: renegotiate if this peer's m-lines must change."""
        if self._closed or self._up_to_date():
            return
        self._offer_soon(self._negotiation.changed())

    def _up_to_date(self) -> bool:
        """Whether the negotiated m-lines already carry exactly the wanted streams.

        Then no offer is needed (a viewer-only participant came or went, or a source
        was unpublished and published again): kept lines are re-wired at most.
        """
        if not self._lines or any(line.pending for line in self._lines):
            return False
        publish, receive = self._wanted()
        current = {(ln.role, ln.key) for ln in self._lines if ln.key is not None}
        if current != {("publish", k) for k in publish} | {("receive", k) for k in receive}:
            return False
        now = time.monotonic()
        for line in self._lines:
            if line.key is not None:
                self._refresh(line, now)
        return True

    def _wanted(self) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
        """The streams this peer publishes, and the streams it should receive (key -> kind)."""
        publish = {(self.participant_id, s): p.kind for s, p in self.publications.items()}
        receive = {
            (pid, source): kind for pid, source, kind in self._room.publications() if pid != self.participant_id
        }
        return publish, receive

    def _offer_soon(self, action: MakeOffer | None) -> None:
        if action is not None and not self._closed:
            task = asyncio.ensure_future(self._offer(action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _offer(self, action: MakeOffer | None, raise_errors: bool = False) -> None:
        if action is None:
            return
        if self._up_to_date():
            # The changes that decided this offer cancelled out before it was made.
            self._offer_soon(self._negotiation.offer_skipped())
            return
        try:
            self._plan(time.monotonic())
            await self._pc.setLocalDescription(await self._pc.createOffer())
            # aiortc keeps its own offer; the browser gets it with simulcast asked for.
            sdp = offer_simulcast(self._pc.localDescription.sdp, {
                line.mid for line in self._lines if line.role == "publish" and line.kind == "video" and line.mid
            })
            slots = self._slots()
        except Exception:
            if self._closed or self.signaling_state == "closed" or self.connection_state in ("failed", "closed"):
                # Closed under the offer: by leave(), or by aiortc itself once ICE consent
                # expired (the session then drops this peer on its failed or closed state).
                return
            logger.exception("%s: could not make an offer", self.participant_id)
            self._negotiation.offer_failed()
            if raise_errors:
                raise
            return
        self._local_sdp = sdp
        self.transport.cname = cname_of(sdp) or self.transport.cname
        self._negotiation.offer_sent()
        try:
            await self._send_offer(Offer(sdp=sdp, slots=slots))
        except Exception:
            # The offer may or may not have reached the browser; it stays outstanding
            # (the session is expected to leave() a peer whose socket died).
            logger.exception("%s: sending an offer failed", self.participant_id)
            if raise_errors:
                raise

    # --- m-lines -------------------------------------------------------------------------

    def _plan(self, now: float) -> None:
        """Map the wanted streams onto m-lines for the next offer (see plan_lines)."""
        wanted_publish, wanted_receive = self._wanted()
        for role, wanted in (("publish", wanted_publish), ("receive", wanted_receive)):
            lines = [Line(i, ln.kind, ln.key) for i, ln in enumerate(self._lines) if ln.role == role]
            plan = plan_lines(lines, wanted)
            for index in plan.release:
                self._release(self._lines[index])
            for key, index in plan.assign.items():
                line = self._add_line(wanted[key], role) if index is None else self._lines[index]
                if line.key != key:
                    self._bind(line, key)
                elif not line.pending:
                    self._refresh(line, now)
        if not self._lines:
            # Nothing to send or receive yet: an idle m-line still carries ICE and DTLS.
            line = self._add_line("audio", "publish")
            line.transceiver.direction = "inactive"

    def _add_line(self, kind: str, role: str) -> _Line:
        transceiver = self._pc.addTransceiver(kind, direction="recvonly" if role == "publish" else "sendonly")
        transceiver.setCodecPreferences(CODEC_PREFERENCES[kind])
        internals.silence(transceiver)
        if self.transport.dtls is None:
            self.transport.install(transceiver, self._room.announce, self._room.policy)
        line = _Line(transceiver, kind, role)
        self._lines.append(line)
        return line

    def _bind(self, line: _Line, key: tuple[str, str]) -> None:
        if line.key is not None:
            self._release(line)
        line.key = key
        line.pending = True
        if line.role == "publish":
            line.transceiver.direction = "recvonly"
        else:
            line.transceiver.direction = "sendonly"
            # The msid stream id groups a publisher's audio and video: browsers sync
            # the tracks of one stream (lip sync), so it is the publisher's id.
            internals.set_stream_id(line.transceiver.sender, stream_id(key[0]))

    def _release(self, line: _Line) -> None:
        if line.role == "receive" and line.stream is not None and line.stream.publication is not None:
            line.stream.publication.detach(line.stream)
        line.key = None
        line.pending = False
        line.transceiver.direction = "inactive"

    def _refresh(self, line: _Line, now: float) -> None:
        """Re-wire a kept, negotiated m-line whose publication was replaced.

        A source unpublished and published again before the next offer keeps its
        m-lines; the new Publication takes over the old one's SSRCs and viewers.
        """
        if line.key is None or line.answer is None or line.answer.direction == "inactive":
            return
        if line.role == "publish":
            pub = self.publications.get(line.key[1])
            if pub is not None and pub.media_ssrc is None:
                self._configure_publication(pub, line, line.answer)
            return
        pub = self._room.publication(line.key)
        stream = line.stream
        if pub is not None and stream is not None and stream.publication is not pub:
            pub.attach(stream, now)

    def _slots(self) -> tuple[TrackSlot, ...]:
        return tuple(
            TrackSlot(mid=line.mid, kind=line.kind, source=line.key[1], direction=line.role,
                      participant=line.key[0])
            for line in self._lines
            if line.key is not None and line.mid is not None
        )

    def _apply_answer(self, answered: dict[str, AnsweredLine]) -> None:
        now = time.monotonic()
        for line in self._lines:
            info = answered.get(line.mid)  # type: ignore[arg-type]
            if info is None:
                continue
            line.answer = info
            if line.key is None:
                line.pending = False
                continue
            if line.role == "publish":
                line.pending = False
                pub = self.publications.get(line.key[1])
                if pub is not None and info.direction != "inactive":
                    self._configure_publication(pub, line, info)
                continue
            if not line.pending:
                continue
            line.pending = False
            pub = self._room.publication(line.key)
            if pub is None or info.direction == "inactive":
                continue
            pub.attach(self._viewer_stream(line, info), now)

    def _viewer_stream(self, line: _Line, info: AnsweredLine) -> ViewerStream:
        ssrc, rtx_ssrc = internals.sender_ssrcs(line.transceiver.sender)
        mid_id = info.extensions.get(MID_URI, 0)
        transport = self.transport
        stream = line.stream
        if stream is None:
            stream = line.stream = ViewerStream(
                mid=info.mid, kind=line.kind, ssrc=ssrc, rtx_ssrc=rtx_ssrc,
                send=transport.send_now,  # SRTP-protects and sends; no wrapper on the hot path
                mid_id=mid_id, cname=transport.cname,
            )
            transport.streams[stream.ssrc] = stream
        stream.mid_elem = mid_element(mid_id, info.mid)
        stream.rtx_payload_types = info.rtx_for()
        stream.rtx_ssrc = rtx_ssrc if stream.rtx_payload_types else None
        # Publishers and viewers answer the same offer, so the extension ids agree; an
        # answer that dropped some extension gets the others only (slow path).
        ext_ids = set(info.extensions.values()) - {mid_id}
        offered = OFFERED_EXTENSION_IDS[line.kind] - {mid_id}
        stream.allowed_ext = None if ext_ids >= offered else frozenset(ext_ids)
        stream.cname = transport.cname
        stream.rtx_budget = transport.adaptation.rtx_budget
        stream.ready = transport.connected
        return stream

    def _on_connection_state(self) -> None:
        if self._on_state is not None:
            try:
                self._on_state(self._pc.connectionState)
            except Exception:
                logger.exception("%s: on_state callback failed", self.participant_id)

    # --- teardown ----------------------------------------------------------------------

    async def close(self) -> None:
        """Close the peer connection and stop its publications (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._negotiation.close()
        for pub in list(self.publications.values()):
            self._retire(pub)
        self.publications.clear()
        for line in self._lines:
            if line.stream is not None and line.stream.publication is not None:
                line.stream.publication.detach(line.stream)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.transport.close()
        await self._pc.close()
