"""The media plane: rooms of peer connections whose RTP is forwarded between them.

An :class:`Sfu` holds what every room of this process shares (ICE policy, announced
addresses, ICE servers) and counts what ended; a :class:`MediaRoom` is one meeting's media,
opened and closed by the meeting's session. Each participant has one
:class:`~meeting.media.peer.Peer`; each stream a participant sends is a
:class:`~meeting.media.forwarder.Publication` that fans out to every other peer's viewer
streams.
"""

from __future__ import annotations

import logging
import random
from typing import Awaitable, Callable, Iterable, Iterator, Protocol

from aiortc import RTCIceServer

from meeting.config import MediaConfig
from meeting.media.forwarder import PacketTap, Publication
from meeting.media.ice import CandidatePolicy, rtc_ice_servers
from meeting.media.offer import Offer
from meeting.media.peer import SOURCES, Peer
from meeting.media.turn import TurnCredentials

logger = logging.getLogger(__name__)

# Counters that describe a room now, not work done: not added to the totals of ended rooms.
_GAUGES = ("participants", "publications", "viewer_streams", "loop_lag_ms_max")


# Peers one media room holds at most, per place of ``MediaConfig.max_participants``: the
# meeting's session lets in that many connected people plus twice as many still setting up
# their media (meeting/session/room.py), and the media room must not refuse the newcomers
# it admits.
PEERS_PER_PLACE = 3


class RoomFullError(RuntimeError):
    """The room already holds ``PEERS_PER_PLACE`` peers per place of ``MediaConfig.max_participants``."""


class MediaObserver(Protocol):
    """Sees a room's media packets, one tap per publication (the recorder).

    Both methods run on the event loop; the tap they hand out runs on it too, once per
    packet, and must only queue the packet.
    """

    def publication_started(self, pub: Publication) -> PacketTap | None:
        """A publication is in the room (or was when observing began): the tap for it."""

    def publication_ended(self, pub: Publication) -> None:
        """The publication left the room, or observing stopped: its tap gets no more packets."""


_COUNTER_NAMES = (
    "packets_received", "packets_forwarded", "packets_retransmitted", "rtx_received", "nacks_sent",
    "nacks_received", "keyframe_requests_sent", "malformed", "viewer_starts",
    "packets_held_for_keyframe", "packets_lost_upstream", "retransmissions_refused", "probe_packets",
    "octets_received", "octets_forwarded",
)


def publication_counters(pub: Publication) -> dict[str, int]:
    """What one publication has done so far (named as in ``_COUNTER_NAMES``)."""
    return dict(zip(_COUNTER_NAMES, (
        pub.received, pub.forwarded, pub.retransmitted, pub.rtx_received, pub.nacks_sent,
        pub.nacks_received, pub.keyframes_sent, pub.malformed, pub.anchors, pub.held_back,
        pub.lost_upstream, pub.rtx_refused, pub.probe_packets, pub.received_octets, pub.forwarded_octets,
    )))


class Sfu:
    """The forwarding server of this process: shared settings and every open media room."""

    def __init__(
        self, media: MediaConfig, *, receive_loss: float = 0.0, rng: random.Random | None = None,
        turn: TurnCredentials | None = None,
    ) -> None:
        if not 0.0 <= receive_loss < 1.0:
            raise ValueError("receive_loss must be in [0, 1)")
        self.media = media
        self.policy = CandidatePolicy.from_config(media.allowed_peer_networks)
        self.announce = tuple(media.announce_addresses)
        self.ice_servers = rtc_ice_servers(media.ice_servers)
        self.turn = turn
        # Test hook: drop this fraction of received RTP datagrams, as a lossy network would.
        self.receive_loss = receive_loss
        self.rng = rng or random.Random()
        self._rooms: dict[str, MediaRoom] = {}
        self._retired: dict[str, int] = {}
        self._closed = False

    def peer_ice_servers(self) -> list[RTCIceServer]:
        """The ICE servers for a new peer: the configured ones, and the TURN servers with a
        credential that has at least half its lifetime left."""
        servers = list(self.ice_servers)
        if self.turn is not None:
            servers += self.turn.for_server()
        return servers

    def open(self, room_id: str) -> MediaRoom:
        """The room's media, opened if it is not open yet."""
        if self._closed:
            raise RuntimeError("the SFU is closed")
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = MediaRoom(self, room_id)
        return room

    def room(self, room_id: str) -> MediaRoom | None:
        """The room's media if it is open."""
        return self._rooms.get(room_id)

    def rooms(self) -> list[MediaRoom]:
        return list(self._rooms.values())

    async def close(self) -> None:
        """Close every room and refuse new ones."""
        self._closed = True
        for room in list(self._rooms.values()):
            await room.close()

    def _closed_room(self, room: MediaRoom) -> None:
        if self._rooms.get(room.id) is room:
            del self._rooms[room.id]
        for name, value in room.counters().items():
            if name not in _GAUGES:
                self._retired[name] = self._retired.get(name, 0) + value

    def stats(self, detail: bool = False, reset_peaks: bool = False) -> dict:
        """Counters per open room and in total (closed rooms count in the totals).

        With ``detail`` each room also lists its current publications' counters.
        ``loop_lag_ms_max`` is the worst lateness of the event loop seen by the periodic
        RTCP timers (the server's own queueing delay); ``reset_peaks`` restarts it.
        """
        rooms = {}
        totals = dict(self._retired)
        for room in self._rooms.values():
            counters = room.counters()
            for name, value in counters.items():
                if name not in _GAUGES:
                    totals[name] = totals.get(name, 0) + value
            if detail:
                counters["detail"] = {  # type: ignore[assignment]
                    f"{pub.participant}/{pub.source}": publication_counters(pub) for pub in room.all_publications()
                }
            rooms[room.id] = counters
        totals["loop_lag_ms_max"] = max((r["loop_lag_ms_max"] for r in rooms.values()), default=0)
        if reset_peaks:
            for room in self._rooms.values():
                room.loop_lag_ms_max = 0
        totals["rooms"] = len(rooms)
        totals["participants"] = sum(r["participants"] for r in rooms.values())
        return {"rooms": rooms, "totals": totals}


class MediaRoom:
    """One meeting's media: its peers, their publications and who records them."""

    def __init__(self, sfu: Sfu, room_id: str) -> None:
        self.sfu = sfu
        self.id = room_id
        self.peers: dict[str, Peer] = {}
        # What every peer of the room shares (see RoomView).
        self.peer_ice_servers = sfu.peer_ice_servers
        self.policy = sfu.policy
        self.announce = sfu.announce
        self.receive_loss = sfu.receive_loss
        self.rng = sfu.rng
        self.dropped = 0  # packets dropped by the receive-loss test hook
        self.overload_drops = 0  # datagrams dropped because the server fell behind
        self.undecryptable = 0  # SRTP/SRTCP that failed to decrypt (or to be handled): dropped
        self.loop_lag_ms_max = 0  # worst event-loop lateness seen by the RTCP timers
        self.observer: MediaObserver | None = None  # the room's recorder, while it records
        self._retired: dict[str, int] = {}  # counters of publications that ended
        self._closed = False

    async def join(
        self,
        participant_id: str,
        send_offer: Callable[[Offer], Awaitable[None]],
        publish: Iterable[str] = ("mic", "camera"),
        on_state: Callable[[str], None] | None = None,
        on_paused: Callable[[str, str, bool], None] | None = None,
    ) -> Peer:
        """Add a participant: create its peer, send its first offer, renegotiate the others.

        ``send_offer`` is awaited with the first offer before this returns; later offers
        are sent from background tasks. ``on_state`` is called with every new
        ``connection_state`` ("connecting", "connected", "failed", "closed"). ``on_paused``
        is called with (publisher, source, paused) when this participant's video of
        someone is paused to save its bandwidth, and again when it resumes. Joining with
        an id already in the room replaces that participant (a page reload).
        """
        if self._closed:
            raise RuntimeError("the media room is closed")
        sources = list(dict.fromkeys(publish))
        for source in sources:
            if source not in SOURCES:
                raise ValueError(f"unknown source {source!r}")
        if participant_id in self.peers:
            await self.leave(participant_id)
        if len(self.peers) >= PEERS_PER_PLACE * self.sfu.media.max_participants:
            raise RoomFullError("the media room is full")
        peer = Peer(self, participant_id, send_offer, on_state, on_paused)
        self.peers[participant_id] = peer
        try:
            await peer.start(sources)
            if self._closed:
                raise RuntimeError("the media room closed while the peer was set up")
        except BaseException:
            if self.peers.get(participant_id) is peer:
                del self.peers[participant_id]
            await peer.close()
            raise
        self.renegotiate(skip=peer)
        return peer

    async def leave(self, participant_id: str) -> None:
        """Remove a participant (idempotent): close its peer, renegotiate the others."""
        peer = self.peers.pop(participant_id, None)
        if peer is None:
            return
        await peer.close()
        self.renegotiate()

    def peer(self, participant_id: str) -> Peer | None:
        """The peer of a participant, if present."""
        return self.peers.get(participant_id)

    def renegotiate(self, skip: Peer | None = None) -> None:
        """Tell every peer the room's streams changed (each offers again if it must)."""
        for peer in list(self.peers.values()):
            if peer is not skip:
                peer.changed()

    async def close(self) -> None:
        """Close every peer; the room's counters join the SFU's totals (idempotent)."""
        if self._closed:
            return
        self.unobserve()
        self._closed = True
        for pid in list(self.peers):
            await self.peers.pop(pid).close()
        self.sfu._closed_room(self)

    # --- publications ----------------------------------------------------------------------

    def all_publications(self) -> Iterator[Publication]:
        for peer in self.peers.values():
            yield from peer.publications.values()

    def publications(self) -> Iterator[tuple[str, str, str]]:
        """(participant, source, kind) of every stream published in the room."""
        for pub in self.all_publications():
            yield pub.participant, pub.source, pub.kind

    def publication(self, key: tuple[str, str]) -> Publication | None:
        peer = self.peers.get(key[0])
        return peer.publications.get(key[1]) if peer is not None else None

    def demands_for(self, pub: Publication) -> list[float]:
        """What each viewer of ``pub`` would take of it (bit/s), for its publisher's REMB."""
        key = (pub.participant, pub.source)
        demands = []
        for pid, peer in self.peers.items():
            if pid != pub.participant:
                demand = peer.transport.adaptation.demands.get(key)
                if demand is not None:
                    demands.append(demand)
        return demands

    def publication_started(self, pub: Publication) -> None:
        if self.observer is not None:
            pub.tap = self.observer.publication_started(pub)

    def publication_ended(self, pub: Publication) -> None:
        if pub.tap is not None:
            pub.tap = None
            if self.observer is not None:
                self.observer.publication_ended(pub)
        for name, value in publication_counters(pub).items():
            self._retired[name] = self._retired.get(name, 0) + value

    # --- recording -------------------------------------------------------------------------

    def observe(self, observer: MediaObserver) -> None:
        """Tap every publication of the room, present and future, until :meth:`unobserve`.

        When nobody observes, the per-packet cost is one attribute test in
        ``Publication.ingest``.
        """
        self.unobserve()
        self.observer = observer
        for pub in self.all_publications():
            pub.tap = observer.publication_started(pub)

    def unobserve(self) -> None:
        """Stop tapping the room (idempotent); the observer hears every publication end."""
        observer, self.observer = self.observer, None
        if observer is None:
            return
        for pub in self.all_publications():
            if pub.tap is not None:
                pub.tap = None
                observer.publication_ended(pub)

    # --- counters --------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """What the room's publications did, ended ones included, and its gauges now."""
        counters = dict.fromkeys(_COUNTER_NAMES, 0)
        for name, value in self._retired.items():
            counters[name] += value
        publications = streams = 0
        for pub in self.all_publications():
            publications += 1
            streams += len(pub.viewers)
            for name, value in publication_counters(pub).items():
                counters[name] += value
        counters["packets_dropped_by_hook"] = self.dropped
        counters["packets_dropped_overload"] = self.overload_drops
        counters["packets_undecryptable"] = self.undecryptable
        counters["loop_lag_ms_max"] = self.loop_lag_ms_max
        counters["participants"] = len(self.peers)
        counters["publications"] = publications
        counters["viewer_streams"] = streams
        return counters
