"""The synthetic load of a benchmark room, and the latency of a path with no server at all.

Every participant is a :class:`~bench.synthetic.SyntheticParticipant` that counts packets
and frames from the cleartext SRTP header without decoding (cheap, so that a room
measures the server, not the participants), with large socket buffers, announcing the
address the servers are measured on.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from bench.synthetic import EncodedMedia, LatencyStamps, SyntheticParticipant
from meeting.media.offer import Offer, TrackSlot

# SO_RCVBUF of the synthetic peers' sockets (the servers keep their own defaults): the
# viewers live in one Python event loop, and must not be where packets get lost.
CLIENT_RECEIVE_BUFFER = 4 << 20


def allowed_network(address: str) -> str:
    """The peer network that goes with a media address: loopback, or that one address."""
    return "127.0.0.0/8" if address.startswith("127.") else f"{address}/32"


def load_participant(name: str, media: EncodedMedia, stamps: LatencyStamps | None,
                     address: str) -> SyntheticParticipant:
    """A participant of the load: counts without decoding, stamps for latency."""
    return SyntheticParticipant(
        name, media, decode=False, stamps=stamps, announce=(address,),
        allowed_networks=(allowed_network(address),), receive_buffer=CLIENT_RECEIVE_BUFFER,
    )


@dataclass
class Gathering:
    """The synthetic people of one room on one server."""

    publishers: list[Any] = field(default_factory=list)  # peers whose senders carry published media
    legs: list[tuple[Any, str]] = field(default_factory=list)  # (receiving peer, publisher's name)
    everyone: list[Any] = field(default_factory=list)


async def gather_people(room: str, publishers: int, viewers: int, media: EncodedMedia, stamps: LatencyStamps,
                        address: str, join: Callable[[Any, list[str]], Awaitable[None]],
                        disperse: Callable[[str, Gathering], Awaitable[None]]) -> Gathering:
    """Publishers p0.. publish mic and camera, viewers v.. only watch, each put in by
    ``join(person, sources)``; every viewer-publisher pair is a leg. When one cannot join,
    those who did leave through ``disperse``."""
    gathering = Gathering()
    try:
        for i in range(publishers + viewers):
            publishing = i < publishers
            person = load_participant(f"p{i}" if publishing else f"v{i}", media, stamps, address)
            gathering.everyone.append(person)
            if publishing:
                gathering.publishers.append(person)
            await join(person, ["mic", "camera"] if publishing else [])
    except Exception:
        await disperse(room, gathering)
        raise
    pubs = [p.name for p in gathering.publishers]
    gathering.legs = [(v, p) for v in gathering.everyone for p in pubs if p != v.name]
    return gathering


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``cond()`` holds; RuntimeError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def p50(samples: list[float]) -> float | None:
    """The median of latency samples in seconds, as ms (None without samples)."""
    return statistics.median(samples) * 1000 if samples else None


async def direct_latency(media: EncodedMedia, seconds: float, address: str) -> tuple[float | None, float | None]:
    """Median latency publisher -> viewer over a direct aiortc connection (no server): what
    a server's added latency is measured against."""
    stamps = LatencyStamps()
    publisher = load_participant("pub", media, stamps, address)
    viewer = load_participant("view", media, stamps, address)
    try:
        # The publisher offers its two tracks; the viewer answers as a receiver.
        offer = await publisher.offer_to_publish(("mic", "camera"))
        mids = [t.mid for t in publisher.pc.getTransceivers()]
        slots = tuple(
            TrackSlot(mid=mid, kind=kind, source=source, direction="receive", participant="pub")
            for mid, kind, source in zip(mids, ("audio", "video"), ("mic", "camera"))
        )
        answer = await viewer.answer(Offer(sdp=offer, slots=slots))
        await publisher.accept_publish_answer(answer)
        await wait_until(lambda: viewer.frames_from("pub", "camera") > 10, 20, "direct media")
        for samples in stamps.samples.values():
            samples.clear()
        await asyncio.sleep(seconds)  # the measuring window
        return p50(stamps.samples["video"]), p50(stamps.samples["audio"])
    finally:
        await publisher.close()
        await viewer.close()
