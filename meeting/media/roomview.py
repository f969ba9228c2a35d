"""What a peer and its transport need of the media room they belong to.

:class:`~meeting.media.sfu.MediaRoom` is the one implementation; peers see it only through
this face, so the room can own its peers without the two modules importing each other.
"""

from __future__ import annotations

import random
from typing import Iterator, Protocol

from aiortc import RTCIceServer

from meeting.media.forwarder import Publication
from meeting.media.ice import CandidatePolicy


class RoomView(Protocol):
    """A media room as its peers see it: shared settings, publications, counters."""

    policy: CandidatePolicy
    announce: tuple[str, ...]
    receive_loss: float  # test hook: drop this fraction of received RTP
    rng: random.Random
    dropped: int
    overload_drops: int
    undecryptable: int
    loop_lag_ms_max: int

    def peer_ice_servers(self) -> list[RTCIceServer]:
        """STUN/TURN servers for a new peer connection (TURN credentials minted fresh)."""

    def publications(self) -> Iterator[tuple[str, str, str]]:
        """(participant, source, kind) of every stream published in the room."""

    def publication(self, key: tuple[str, str]) -> Publication | None:
        """A participant's publication of a source, if present."""

    def publication_started(self, pub: Publication) -> None:
        """A peer began publishing (the room's recorder may tap it)."""

    def publication_ended(self, pub: Publication) -> None:
        """A peer stopped publishing (its counters join the room's)."""

    def demands_for(self, pub: Publication) -> list[float]:
        """What each viewer of ``pub`` would take of it (bit/s), for its publisher's REMB."""

    def renegotiate(self) -> None:
        """The room's streams changed: every peer offers again if it must."""
