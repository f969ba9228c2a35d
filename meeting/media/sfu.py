"""The media plane: one aiortc peer connection per participant, RTP forwarded between them.

The server is always the offerer. Each participant's offer has "publish" m-lines (the
browser sends: its mic, camera, maybe screen) and "receive" m-lines (the browser
receives: every source every other participant publishes). Changes are renegotiated
with new server offers, serialized per peer by :class:`meeting.media.negotiation.Negotiation`.

aiortc is used for signaling, ICE, DTLS and SRTP; its media pipeline is not. On every
transceiver the server creates:

- ``RTCRtpReceiver.receive`` and ``RTCRtpSender.send`` are replaced by no-ops, so no
  jitter buffer, decoder thread, encoder or sender loop ever starts for forwarded media;
- on the (single, bundled) ``RTCDtlsTransport``, ``_handle_rtp_data`` and
  ``_handle_rtcp_data`` are replaced: decrypted RTP goes to the publication that owns
  its SSRC (:mod:`meeting.media.forwarder`), RTCP to the publication or viewer stream it is
  about; forwarded packets leave through the viewer's ``_send_rtp`` (SRTP protect);
- the aioice connection gets the announce-address and remote-candidate policy of
  :mod:`meeting.media.ice`, and its ``data_received`` is wrapped to drop datagrams when the
  event loop is far behind (aioice's receive queue is unbounded).

All of these are private aiortc/aioice names; aiortc is pinned to 1.16.0 and the tests
in ``tests/meeting`` fail if any of them changes shape.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Protocol

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from meeting.config import MediaConfig
from meeting.media.forwarder import PacketTap, Publication, ViewerStream
from meeting.media.ice import (
    CandidatePolicy,
    apply_ice_policy,
    filter_sdp_candidates,
    parse_candidate,
    rtc_ice_servers,
)
from meeting.media.negotiation import Line, MakeOffer, Negotiation, NegotiationError, plan_lines
from meeting.media.rtp import (
    AUDIO_LEVEL_URI,
    MID_URI,
    PSFB_FIR,
    PSFB_PLI,
    RTCP_PSFB,
    RTCP_RTPFB,
    RTCP_SR,
    RTPFB_NACK,
    RtpError,
    iter_rtcp,
    mid_element,
    pack_sdes_cname,
    parse_rtp,
    unpack_fir_fci,
    unpack_nack_fci,
    unpack_sender_info,
)
from meeting.media.sdpanswer import AnsweredLine, AnswerError, check_answer

logger = logging.getLogger(__name__)

SOURCES = {"mic": "audio", "camera": "video", "screen": "video"}

# What the server offers. Forwarding never transcodes, so every peer connection offers
# the same codecs with the same payload types, and a publisher's packets suit every
# viewer unchanged. VP8 only: H264 would need every viewer to decode the profile a
# publisher picked, and aiortc's H264 packetizer is not needed for forwarding anyway.
_CODEC_PREFERENCES = {
    "audio": [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"],
    "video": [
        c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")
    ],
}

_OFFERED_EXTENSION_IDS = {kind: {x.id for x in HEADER_EXTENSIONS[kind]} for kind in ("audio", "video")}

# Datagrams a peer connection may have waiting for the event loop (~1 s of one publisher).
MAX_BACKLOG = 150

_MSID_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


class SdpError(ValueError):
    """A malformed or unusable answer, or no offer outstanding; nothing changed."""


class CandidateError(ValueError):
    """A malformed ICE candidate; nothing changed."""


class RoomFullError(RuntimeError):
    """The room already has ``MediaConfig.max_participants`` participants."""


class MediaObserver(Protocol):
    """Sees a room's media packets, one tap per publication (the recorder).

    Both methods run on the event loop; the tap they hand out runs on it too, once per
    packet, and must only queue the packet.
    """

    def publication_started(self, pub: Publication) -> PacketTap | None:
        """A publication is in the room (or was when observing began): the tap for it."""

    def publication_ended(self, pub: Publication) -> None:
        """The publication left the room, or observing stopped: its tap gets no more packets."""


@dataclass(frozen=True)
class TrackSlot:
    """One m-line as the browser must see it."""

    mid: str
    kind: str  # "audio" | "video"
    source: str  # "mic" | "camera" | "screen"
    direction: str  # "publish" (the browser sends on this mid) | "receive" (browser receives)
    participant: str  # owner of the media: the peer itself for "publish", the publisher for "receive"


@dataclass(frozen=True)
class Offer:
    sdp: str
    slots: tuple[TrackSlot, ...]  # every active m-line of this offer


async def _inert(*args: Any, **kwargs: Any) -> None:
    """Stands in for aiortc's media start-up on server transceivers (see module doc)."""
    return None


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


class _Room:
    def __init__(self, room_id: str) -> None:
        self.id = room_id
        self.peers: dict[str, Peer] = {}
        self.dropped = 0  # packets dropped by the receive-loss test hook
        self.overload_drops = 0  # datagrams dropped because the server fell behind
        self.loop_lag_ms_max = 0  # worst event-loop lateness seen by the RTCP timers
        self.retired: dict[str, int] = {}  # counters of publications that ended
        self.observer: MediaObserver | None = None  # the room's recorder, while it records

    def publications(self) -> Iterable[tuple[str, str, str]]:
        for pid, peer in self.peers.items():
            for source, pub in peer._publications.items():
                yield pid, source, pub.kind

    def publication(self, key: tuple[str, str]) -> Publication | None:
        peer = self.peers.get(key[0])
        return peer._publications.get(key[1]) if peer is not None else None

    def retire(self, pub: Publication) -> None:
        for name, value in _publication_counters(pub).items():
            self.retired[name] = self.retired.get(name, 0) + value


def _publication_counters(pub: Publication) -> dict[str, int]:
    return {
        "packets_received": pub.received,
        "packets_forwarded": pub.forwarded,
        "packets_retransmitted": pub.retransmitted,
        "rtx_received": pub.rtx_received,
        "nacks_sent": pub.nacks_sent,
        "nacks_received": pub.nacks_received,
        "keyframe_requests_sent": pub.keyframes.sent,
        "malformed": pub.malformed,
        "viewer_starts": pub.anchors,
        "packets_held_for_keyframe": pub.held_back,
        "packets_lost_upstream": max(0, pub.stats.cumulative_lost),
    }


class Sfu:
    """The forwarding server: rooms of peers, each with one peer connection."""

    def __init__(
        self, media: MediaConfig, *, receive_loss: float = 0.0, rng: random.Random | None = None
    ) -> None:
        if not 0.0 <= receive_loss < 1.0:
            raise ValueError("receive_loss must be in [0, 1)")
        self.media = media
        self.policy = CandidatePolicy.from_config(media.allowed_peer_networks)
        self.announce = tuple(media.announce_addresses)
        self.ice_servers = rtc_ice_servers(media.ice_servers)
        # Test hook: drop this fraction of received RTP datagrams, as a lossy network would.
        self.receive_loss = receive_loss
        self.rng = rng or random.Random()
        self._rooms: dict[str, _Room] = {}
        self._retired: dict[str, int] = {}
        self._observers: dict[str, MediaObserver] = {}
        self._closed = False

    async def join(
        self,
        room_id: str,
        participant_id: str,
        send_offer: Callable[[Offer], Awaitable[None]],
        publish: Iterable[str] = ("mic", "camera"),
        on_state: Callable[[str], None] | None = None,
    ) -> "Peer":
        """Add a participant: create its peer, send its first offer, renegotiate the others.

        ``send_offer`` is awaited with the first offer before this returns; later offers
        are sent from background tasks. ``on_state`` is called with every new
        ``connection_state`` ("connecting", "connected", "failed", "closed"). Joining with
        an id already in the room replaces that participant (a page reload).
        """
        if self._closed:
            raise RuntimeError("the SFU is closed")
        sources = list(dict.fromkeys(publish))
        for source in sources:
            if source not in SOURCES:
                raise ValueError(f"unknown source {source!r}")
        room = self._rooms.get(room_id)
        if room is not None and participant_id in room.peers:
            await self.leave(room_id, participant_id)
            room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
            room.observer = self._observers.get(room_id)
        if len(room.peers) >= self.media.max_participants:
            raise RoomFullError(f"room {room_id} is full")
        peer = Peer(self, room, participant_id, send_offer, on_state)
        room.peers[participant_id] = peer
        for source in sources:
            peer._add_publication(source)
        try:
            await peer._offer(peer._negotiation.changed(), raise_errors=True)
        except BaseException:
            room.peers.pop(participant_id, None)
            await peer._close()
            if not room.peers:
                self._drop_room(room)
            raise
        for other in room.peers.values():
            if other is not peer:
                other._changed()
        return peer

    async def leave(self, room_id: str, participant_id: str) -> None:
        """Remove a participant (idempotent): close its peer, renegotiate the others."""
        room = self._rooms.get(room_id)
        if room is None:
            return
        peer = room.peers.pop(participant_id, None)
        if peer is None:
            return
        await peer._close()
        for other in room.peers.values():
            other._changed()
        if not room.peers:
            self._drop_room(room)

    async def close(self) -> None:
        """Close every peer."""
        self._closed = True
        for room in list(self._rooms.values()):
            for pid in list(room.peers):
                peer = room.peers.pop(pid)
                await peer._close()
            self._drop_room(room)

    def observe(self, room_id: str, observer: MediaObserver) -> None:
        """Tap every publication of the room, present and future, until :meth:`unobserve`.

        When nobody observes, the per-packet cost is one attribute test in
        ``Publication.ingest``.
        """
        self.unobserve(room_id)
        self._observers[room_id] = observer
        room = self._rooms.get(room_id)
        if room is None:
            return
        room.observer = observer
        for peer in room.peers.values():
            for pub in peer._publications.values():
                pub.tap = observer.publication_started(pub)

    def unobserve(self, room_id: str) -> None:
        """Stop tapping the room (idempotent); the observer hears every publication end."""
        observer = self._observers.pop(room_id, None)
        room = self._rooms.get(room_id)
        if observer is None or room is None or room.observer is not observer:
            return
        room.observer = None
        for peer in room.peers.values():
            for pub in peer._publications.values():
                if pub.tap is not None:
                    pub.tap = None
                    observer.publication_ended(pub)

    def peer(self, room_id: str, participant_id: str) -> "Peer | None":
        """The peer of a participant, if present."""
        room = self._rooms.get(room_id)
        return room.peers.get(participant_id) if room else None

    def stats(self, detail: bool = False, reset_peaks: bool = False) -> dict:
        """Counters per room and in total (rooms that ended count in the totals).

        With ``detail`` each room also lists its current publications' counters.
        ``loop_lag_ms_max`` is the worst lateness of the event loop seen by the periodic
        RTCP timers (the server's own queueing delay); ``reset_peaks`` restarts it.
        """
        rooms = {}
        totals = dict(self._retired)
        for room in self._rooms.values():
            counters = self._room_counters(room)
            rooms[room.id] = counters
            if detail:
                counters["detail"] = {
                    f"{pid}/{source}": _publication_counters(pub)
                    for pid, peer in room.peers.items()
                    for source, pub in peer._publications.items()
                }
            for name, value in counters.items():
                if isinstance(value, int):
                    totals[name] = totals.get(name, 0) + value
        for name in ("participants", "publications", "viewer_streams"):
            totals.pop(name, None)
        totals["loop_lag_ms_max"] = max((r["loop_lag_ms_max"] for r in rooms.values()), default=0)
        if reset_peaks:
            for room in self._rooms.values():
                room.loop_lag_ms_max = 0
        totals["rooms"] = len(rooms)
        totals["participants"] = sum(r["participants"] for r in rooms.values())
        return {"rooms": rooms, "totals": totals}

    def _room_counters(self, room: _Room) -> dict:
        counters = dict.fromkeys(_publication_counters_names(), 0)
        for name, value in room.retired.items():
            counters[name] = counters.get(name, 0) + value
        publications = streams = 0
        for peer in room.peers.values():
            for pub in peer._publications.values():
                publications += 1
                streams += len(pub.viewers)
                for name, value in _publication_counters(pub).items():
                    counters[name] += value
        counters["packets_dropped_by_hook"] = room.dropped
        counters["packets_dropped_overload"] = room.overload_drops
        counters["loop_lag_ms_max"] = room.loop_lag_ms_max
        counters["participants"] = len(room.peers)
        counters["publications"] = publications
        counters["viewer_streams"] = streams
        return counters

    def _drop_room(self, room: _Room) -> None:
        if self._rooms.get(room.id) is room and not room.peers:
            del self._rooms[room.id]
            for name, value in self._room_counters(room).items():
                if name not in ("participants", "publications", "viewer_streams", "loop_lag_ms_max"):
                    self._retired[name] = self._retired.get(name, 0) + value


def _publication_counters_names() -> list[str]:
    return [
        "packets_received",
        "packets_forwarded",
        "packets_retransmitted",
        "rtx_received",
        "nacks_sent",
        "nacks_received",
        "keyframe_requests_sent",
        "malformed",
        "viewer_starts",
        "packets_held_for_keyframe",
        "packets_lost_upstream",
    ]


class Peer:
    """One participant's peer connection and its share of the media plane."""

    def __init__(
        self,
        sfu: Sfu,
        room: _Room,
        participant_id: str,
        send_offer: Callable[[Offer], Awaitable[None]],
        on_state: Callable[[str], None] | None,
    ) -> None:
        self.participant_id = participant_id
        self._sfu = sfu
        self._room = room
        self._send_offer = send_offer
        self._on_state = on_state
        # Always explicit ICE servers: the bare default asks a public STUN server.
        self._pc = RTCPeerConnection(
            RTCConfiguration(iceServers=list(sfu.ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._lines: list[_Line] = []
        self._publications: dict[str, Publication] = {}
        self._ingest: dict[int, tuple[Publication, bool]] = {}  # SSRC -> (publication, is RTX)
        self._ingest_by_mid: dict[str, Publication] = {}
        self._streams: dict[int, ViewerStream] = {}  # viewer stream SSRC -> stream
        self._negotiation = Negotiation()
        self._dtls: Any = None
        self._connected = False
        self._local_sdp = ""
        self._cname = "meetnow"
        self._mid_ext_id = 0
        self._tasks: set[asyncio.Task] = set()
        self._rtcp_task: asyncio.Task | None = None
        self._closed = False
        self.candidates_ignored = 0

    # --- public API ----------------------------------------------------------------------

    @property
    def connection_state(self) -> str:
        """Mirrors ``RTCPeerConnection.connectionState``."""
        return self._pc.connectionState

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
        filtered, dropped = filter_sdp_candidates(sdp, self._sfu.policy)
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
        if candidate is None or (isinstance(candidate, str) and candidate.strip() == ""):
            if not self._closed and self._dtls is not None:
                await self._dtls.transport.addRemoteCandidate(None)
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
        if self._closed or self._dtls is None:
            return
        if not self._sfu.policy.allows_candidate(parsed.ip, parsed.protocol):
            self.candidates_ignored += 1
            return
        # Every m-line is bundled on one transport, whichever mid the browser names.
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        await self._dtls.transport.addRemoteCandidate(parsed)

    async def publish(self, source: str) -> None:
        """Start receiving ``source`` from this participant; renegotiates the room."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        if self._closed or source in self._publications:
            return
        self._add_publication(source)
        self._changed_room()

    async def unpublish(self, source: str) -> None:
        """Stop receiving ``source``: viewers stop at once, their m-lines go inactive."""
        pub = self._publications.pop(source, None)
        if pub is None or self._closed:
            return
        self._retire(pub)
        self._changed_room()

    # --- publications ------------------------------------------------------------------

    def _add_publication(self, source: str) -> None:
        kind = SOURCES[source]

        async def upstream(data: bytes) -> None:
            await self._send_rtcp(data)

        pub = self._publications[source] = Publication(
            participant=self.participant_id, source=source, kind=kind, upstream=upstream, rtcp_ssrc=0
        )
        if self._room.observer is not None:
            pub.tap = self._room.observer.publication_started(pub)

    def _retire(self, pub: Publication) -> None:
        if pub.tap is not None:
            pub.tap = None
            if self._room.observer is not None:
                self._room.observer.publication_ended(pub)
        self._room.retire(pub)
        for ssrc in [s for s, (p, _) in self._ingest.items() if p is pub]:
            del self._ingest[ssrc]
        for mid in [m for m, p in self._ingest_by_mid.items() if p is pub]:
            del self._ingest_by_mid[mid]
        pub.close()

    def _configure_publication(self, pub: Publication, line: _Line, info: AnsweredLine) -> None:
        pub.rtcp_ssrc = line.transceiver.sender._ssrc
        codec = info.media_codec
        if codec is not None:
            pub.codec = codec.name
            pub.clock_rate = codec.clock_rate
        pub.mid_id = info.extensions.get(MID_URI, 0)
        pub.audio_level_id = info.extensions.get(AUDIO_LEVEL_URI, 0)
        self._mid_ext_id = pub.mid_id or self._mid_ext_id
        for ssrc in [s for s, (p, _) in self._ingest.items() if p is pub]:
            del self._ingest[ssrc]
        if info.ssrc is not None:
            pub.set_source(info.ssrc, info.rtx_ssrc, info.rtx_map())
            self._ingest[info.ssrc] = (pub, False)
            if info.rtx_ssrc is not None:
                self._ingest[info.rtx_ssrc] = (pub, True)
        else:
            pub.rtx_apt = info.rtx_map()
        self._ingest_by_mid[info.mid] = pub

    # --- negotiation -----------------------------------------------------------------------

    def _changed(self) -> None:
        """The room changed: renegotiate if this peer's m-lines must change."""
        if self._closed:
            return
        if self._up_to_date():
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
        publish = {(self.participant_id, s): p.kind for s, p in self._publications.items()}
        receive = {
            (pid, source): kind for pid, source, kind in self._room.publications() if pid != self.participant_id
        }
        return publish, receive

    def _changed_room(self) -> None:
        for peer in list(self._room.peers.values()):
            peer._changed()

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
            sdp = self._pc.localDescription.sdp
            slots = self._slots()
        except Exception:
            if self._closed:
                return
            logger.exception("%s: could not make an offer", self.participant_id)
            self._negotiation.offer_failed()
            if raise_errors:
                raise
            return
        self._local_sdp = sdp
        self._cname = _cname_of(sdp) or self._cname
        self._negotiation.offer_sent()
        try:
            await self._send_offer(Offer(sdp=sdp, slots=slots))
        except Exception:
            # The offer may or may not have reached the browser; it stays outstanding
            # (the signaling layer is expected to leave() a peer whose socket died).
            logger.exception("%s: sending an offer failed", self.participant_id)
            if raise_errors:
                raise

    def _plan(self, now: float) -> None:
        """Map the wanted streams onto m-lines for the next offer (see plan_lines)."""
        wanted_publish, wanted_receive = self._wanted()
        for role, wanted in (("publish", wanted_publish), ("receive", wanted_receive)):
            lines = [Line(i, ln.kind, ln.key) for i, ln in enumerate(self._lines) if ln.role == role]
            plan = plan_lines(lines, wanted)
            for index in plan.release:
                self._release(self._lines[index])
            for key, index in plan.assign.items():
                if index is None:
                    line = self._add_line(wanted[key], role)
                else:
                    line = self._lines[index]
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
        transceiver.setCodecPreferences(_CODEC_PREFERENCES[kind])
        transceiver.receiver.receive = _inert
        transceiver.sender.send = _inert
        if self._dtls is None:
            self._install_transport(transceiver)
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
            line.transceiver.sender._stream_id = _MSID_UNSAFE.sub("_", key[0])[:64] or "-"

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
            pub = self._publications.get(line.key[1])
            if pub is not None and pub.media_ssrc is None:
                self._configure_publication(pub, line, line.answer)
            return
        pub = self._room.publication(line.key)
        stream = line.stream
        if pub is not None and stream is not None and stream.publication is not pub:
            pub.attach(stream, now)

    def _slots(self) -> tuple[TrackSlot, ...]:
        slots = []
        for line in self._lines:
            if line.key is None or line.mid is None:
                continue
            participant, source = line.key
            slots.append(
                TrackSlot(
                    mid=line.mid,
                    kind=line.kind,
                    source=source,
                    direction=line.role,
                    participant=participant,
                )
            )
        return tuple(slots)

    def _apply_answer(self, answered: dict[str, AnsweredLine]) -> None:
        now = time.monotonic()
        for line in self._lines:
            info = answered.get(line.mid)
            if info is None:
                continue
            line.answer = info
            if line.key is None:
                line.pending = False
                continue
            if line.role == "publish":
                line.pending = False
                pub = self._publications.get(line.key[1])
                if pub is not None and info.direction != "inactive":
                    self._configure_publication(pub, line, info)
                continue
            if not line.pending:
                continue
            line.pending = False
            pub = self._room.publication(line.key)
            if pub is None or info.direction == "inactive":
                continue
            stream = self._viewer_stream(line, info)
            if stream is not None:
                pub.attach(stream, now)

    def _viewer_stream(self, line: _Line, info: AnsweredLine) -> ViewerStream | None:
        sender = line.transceiver.sender
        mid_id = info.extensions.get(MID_URI, 0)
        stream = line.stream
        if stream is None:
            stream = line.stream = ViewerStream(
                mid=info.mid,
                kind=line.kind,
                ssrc=sender._ssrc,
                rtx_ssrc=sender._rtx_ssrc,
                send=self._dtls._send_rtp,  # SRTP-protects and sends; no wrapper on the hot path
                mid_id=mid_id,
                cname=self._cname,
            )
            self._streams[stream.ssrc] = stream
        stream.mid_elem = mid_element(mid_id, info.mid)
        stream.rtx_payload_types = info.rtx_for()
        stream.rtx_ssrc = sender._rtx_ssrc if stream.rtx_payload_types else None
        # Publishers and viewers answer the same offer, so the extension ids agree; an
        # answer that dropped some extension gets the others only (slow path).
        ids = set(info.extensions.values()) - {mid_id}
        offered = _OFFERED_EXTENSION_IDS[line.kind] - {mid_id}
        stream.allowed_ext = None if ids >= offered else frozenset(ids)
        stream.cname = self._cname
        stream.ready = self._connected
        return stream

    # --- transport hooks -----------------------------------------------------------------

    def _install_transport(self, transceiver: RTCRtpTransceiver) -> None:
        dtls = transceiver.receiver.transport
        self._dtls = dtls
        connection = dtls.transport.iceGatherer._connection
        apply_ice_policy(connection, self._sfu.announce, self._sfu.policy)
        self._bound_backlog(connection)
        dtls._handle_rtp_data = self._on_rtp
        dtls._handle_rtcp_data = self._on_rtcp
        dtls.on("statechange", self._on_dtls_state)

    def _bound_backlog(self, connection: Any) -> None:
        """Drop incoming datagrams when the event loop is this far behind.

        aioice queues every datagram in an unbounded asyncio.Queue until the DTLS loop
        reads it. When the server is overloaded that queue holds seconds of media, which
        viewers would then get late; dropping at the door keeps latency bounded and lets
        NACK/PLI repair the gap.
        """
        queue = connection._queue
        original = connection.data_received
        room = self._room

        def data_received(data: bytes, component: int) -> None:
            if queue.qsize() >= MAX_BACKLOG:
                room.overload_drops += 1
                return
            original(data, component)

        connection.data_received = data_received

    async def _send_rtcp(self, data: bytes) -> None:
        if self._connected:
            try:
                await self._dtls._send_rtp(data)
            except ConnectionError:
                pass

    async def _on_rtp(self, data: bytes, arrival_time_ms: int = 0) -> None:
        """Decrypted RTP from this peer's browser (the hot path starts here)."""
        sfu = self._sfu
        if sfu.receive_loss and sfu.rng.random() < sfu.receive_loss:
            self._room.dropped += 1
            return
        entry = self._ingest.get(int.from_bytes(data[8:12], "big"))
        if entry is None:
            entry = self._learn_ssrc(data)
            if entry is None:
                return
        await entry[0].ingest(data, arrival_time_ms, time.monotonic(), entry[1])

    def _learn_ssrc(self, data: bytes) -> tuple[Publication, bool] | None:
        """An SSRC the answer did not list: find its m-line by the MID extension."""
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
        if is_rtx:
            pub.rtx_ssrc = view.ssrc
        else:
            pub.set_source(view.ssrc, pub.rtx_ssrc, pub.rtx_apt)
        self._ingest[view.ssrc] = (pub, is_rtx)
        return pub, is_rtx

    async def _on_rtcp(self, data: bytes) -> None:
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
                if entry is not None and not entry[1]:
                    entry[0].handle_sender_report(ntp, rtp_ts, now)
                continue
            media_ssrc = int.from_bytes(payload[4:8], "big")
            if packet_type == RTCP_RTPFB and count == RTPFB_NACK:
                stream = self._streams.get(media_ssrc)
                if stream is not None and stream.publication is not None:
                    await stream.publication.retransmit(stream, unpack_nack_fci(payload[8:]))
            elif packet_type == RTCP_PSFB and count in (PSFB_PLI, PSFB_FIR):
                targets = [media_ssrc] if count == PSFB_PLI else unpack_fir_fci(payload[8:])
                for ssrc in targets:
                    stream = self._streams.get(ssrc)
                    if stream is not None and stream.publication is not None:
                        stream.keyframe_requests += 1
                        stream.publication.request_keyframe(now)
            # Receiver reports and REMB from viewers are not acted on: without simulcast
            # there is nothing to switch, and capping a publisher for its slowest viewer
            # would degrade everyone.

    def _on_dtls_state(self) -> None:
        state = self._dtls.state if self._dtls is not None else "closed"
        if state == "connected" and not self._connected:
            self._connected = True
            now = time.monotonic()
            for line in self._lines:
                stream = line.stream
                if stream is not None:
                    stream.ready = True
                    if stream.publication is not None:
                        stream.publication.viewer_ready(stream, now)
            if self._rtcp_task is None:
                self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
        elif state in ("closed", "failed"):
            self._connected = False
            for line in self._lines:
                if line.stream is not None:
                    line.stream.ready = False

    def _on_connection_state(self) -> None:
        if self._on_state is not None:
            try:
                self._on_state(self._pc.connectionState)
            except Exception:
                logger.exception("%s: on_state callback failed", self.participant_id)

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
                if lag_ms > self._room.loop_lag_ms_max:
                    self._room.loop_lag_ms_max = lag_ms
                for pub in list(self._publications.values()):
                    await pub.service(now)
                    rr = pub.receiver_report(now)
                    if rr is not None:
                        await self._send_rtcp(rr + pack_sdes_cname(pub.rtcp_ssrc, self._cname))
                for line in self._lines:
                    stream = line.stream
                    if stream is not None and stream.ready and stream.publication is not None:
                        sr = stream.sender_report(now)
                        if sr is not None:
                            await self._send_rtcp(sr)
        except asyncio.CancelledError:
            pass

    # --- teardown ----------------------------------------------------------------------

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._negotiation.close()
        for pub in list(self._publications.values()):
            self._retire(pub)
        self._publications.clear()
        for line in self._lines:
            if line.stream is not None and line.stream.publication is not None:
                line.stream.publication.detach(line.stream)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if self._rtcp_task is not None:
            tasks.append(self._rtcp_task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._pc.close()


def _cname_of(sdp: str) -> str | None:
    match = re.search(r"^a=ssrc:\d+ cname:(\S+)", sdp, re.MULTILINE)
    return match.group(1) if match else None
