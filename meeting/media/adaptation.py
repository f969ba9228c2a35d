"""One viewer's adaptation, wired: RTCP and tile sizes in, layer choices applied, probes sent.

:class:`Adaptation` belongs to one peer connection, as a viewer. It turns what the viewer's
browser reports (REMB, receiver reports) and what its page says about tile sizes into
inputs of the pure controller (meeting.media.quality.Downlink), applies its choices to the
viewer's streams (:meth:`Publication.select`), tells the page when a tile's video is
paused or back, paces bandwidth probes, and keeps the viewer's retransmission budget.

:func:`upstream_for` is the other direction: what one publication's publisher is asked to
send, from what every viewer of it would take.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from meeting.media.forwarder import Publication
from meeting.media.viewer import ViewerStream
from meeting.media.layer import Layer
from meeting.media.ladder import UNKNOWN_TILE, LayerInfo, Want, ladder
from meeting.media.quality import Downlink, publisher_floor, upstream_bitrate
from meeting.media.rtcp import ReportBlock
from meeting.media.vp8 import NO_TID

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (publisher, source)
PausedFn = Callable[[str, str, bool], None]

TICK = 0.2  # seconds between decisions
PAD_INTERVAL = 0.02  # seconds between probe packets' bursts
PAD_CATCH_UP = 0.1  # a probe behind its rate catches up at most this many seconds' worth at once
# Retransmissions may take this share of a viewer's budget, or what its media leaves of it
# if more, and never less than RTX_MIN. The budget (the viewer's REMB) counts them too: more
# would fill a weak link's queue, whose drops bring more NACKs, and so on.
RTX_SHARE = 0.15
RTX_MIN = 20_000  # bit/s
SCREEN_PRIORITY = 4.0  # a shared screen counts as this many times its tile's area


class ByteBucket:
    """A byte budget refilled at ``rate`` bytes/s up to ``burst`` bytes (time passed in)."""

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now
        self.now = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, size: int) -> bool:
        """Spend ``size`` bytes; False (nothing spent) when the budget is short."""
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


def layer_info(layer: Layer, now: float) -> LayerInfo:
    """What the controller needs to know of a layer now."""
    r = layer.rates
    return LayerInfo(layer.index, layer.width, layer.height, layer.live(now), (r[0], r[1], r[2], r[3]),
                     layer.temporal, layer.peak)


class Adaptation:
    """One viewer's controller, its inputs and the application of its choices."""

    def __init__(self, on_paused: PausedFn | None = None) -> None:
        self.controller = Downlink()
        self.on_paused = on_paused
        self.tiles: dict[Key, tuple[int, int]] = {}  # device pixels, as the page last said
        self.paused: set[Key] = set()
        self.demands: dict[Key, float] = {}
        self.probe_rate: float | None = None
        self.estimate = 0.0
        self.rtx_budget = ByteBucket(RTX_MIN / 8, RTX_MIN / 16)
        self.sending = 0.0  # video bit/s sent lately, retransmissions and probes included
        self.media_rate = 0.0  # the same without them
        self._counted: dict[int, tuple[int, int]] = {}  # stream ssrc -> (octets, rtx octets)
        self._measured_at: float | None = None
        self._pad_from: tuple[float, int] | None = None  # the last pacing: when, bytes sent by then
        self._pad_owed = 0.0  # bytes the probe is behind its rate
        self._pad_next = 0

    # --- inputs ------------------------------------------------------------------------------

    def set_tiles(self, tiles: dict[Key, tuple[int, int]]) -> None:
        """The page's tile sizes (device pixels) of the videos it shows."""
        self.tiles = dict(tiles)

    def on_remb(self, bitrate: int, now: float) -> None:
        self.controller.on_remb(bitrate, now, self.sending)

    def on_report(self, blocks: Iterable[ReportBlock], streams: dict[int, ViewerStream], now: float) -> None:
        """Report blocks from the viewer about the streams it gets: video loss, round trip."""
        losses = []
        rtt = None
        for block in blocks:
            stream = streams.get(block.ssrc)
            if stream is None:
                continue
            measured = stream.round_trip(block.lsr, block.dlsr, now)
            if measured is not None:
                rtt = measured if rtt is None else min(rtt, measured)
            if stream.kind == "video" and stream.anchored:
                losses.append(block.fraction_lost / 256)
        loss = sum(losses) / len(losses) if losses else None
        self.controller.on_report(loss, rtt, now)

    # --- decisions ---------------------------------------------------------------------------

    def tick(self, now: float, streams: list[ViewerStream]) -> None:
        """Measure what the viewer is sent, decide, and apply the choices to ``streams``
        (the viewer's video streams)."""
        self._measure(now, streams)
        wants = []
        by_key: dict[Key, ViewerStream] = {}
        for stream in streams:
            pub = stream.publication
            if pub is None:
                continue
            key = (pub.participant, pub.source)
            infos = [layer_info(layer, now) for layer in pub.layers]
            tile = self.tiles.get(key)
            width = tile[0] if tile is not None else None
            priority = float(tile[0] * tile[1]) if tile is not None else float(UNKNOWN_TILE)
            if pub.source == "screen":
                priority *= SCREEN_PRIORITY
            sw = stream.sw
            target = sw.pending if sw.pending is not None else sw.current
            current = (target, sw.bind_tid) if target is not None else None
            wants.append(Want(key, ladder(infos, width), priority, current, ladder(infos, width, flowing_only=False)))
            by_key[key] = stream
        decision = self.controller.decide(now, self.sending, wants)
        self.estimate = decision.estimate
        self.demands = decision.demands
        if decision.probe != self.probe_rate:
            self._pad_from = None  # a new probe (or none) starts owing nothing
        self.probe_rate = decision.probe
        rtx = max(RTX_SHARE * decision.estimate, decision.estimate - self.media_rate, RTX_MIN) / 8
        self.rtx_budget.rate = rtx
        self.rtx_budget.burst = rtx / 2
        self.rtx_budget.refill(now)
        for want in wants:
            stream = by_key[want.key]
            pub = stream.publication
            assert pub is not None
            step = decision.choices.get(want.key)
            if not want.ladder:
                continue  # nothing flows (camera off, not started): nothing to choose
            if step is None:
                pub.select(stream, None, NO_TID, now)
                self._tell(want.key, True)
            else:
                pub.select(stream, step.layer, step.max_tid, now)
                self._tell(want.key, False)
        for key in list(self.paused):
            if key not in by_key:
                self.paused.discard(key)

    def _tell(self, key: Key, paused: bool) -> None:
        if paused == (key in self.paused):
            return
        if paused:
            self.paused.add(key)
        else:
            self.paused.discard(key)
        if self.on_paused is not None:
            try:
                self.on_paused(key[0], key[1], paused)
            except Exception:
                logger.exception("telling a page its video is paused failed")

    def _measure(self, now: float, streams: list[ViewerStream]) -> None:
        octets = rtx = 0
        counted = {}
        for stream in streams:
            before = self._counted.get(stream.ssrc, (stream.octets, stream.rtx_octets))
            octets += stream.octets - before[0]
            rtx += stream.rtx_octets - before[1]
            counted[stream.ssrc] = (stream.octets, stream.rtx_octets)
        self._counted = counted
        if self._measured_at is None:
            self._measured_at = now
            return
        dt = now - self._measured_at
        if dt <= 0:
            return
        self._measured_at = now
        weight = min(1.0, dt / 0.6)
        self.media_rate += (octets * 8 / dt - self.media_rate) * weight
        self.sending += ((octets + rtx) * 8 / dt - self.sending) * weight

    # --- probes ------------------------------------------------------------------------------

    def pad(self, now: float, streams: list[ViewerStream]) -> None:
        """While a probe is on, send the viewer packets it already has, so that what it is
        sent in all (media, retransmissions, padding) runs at the probe's rate."""
        rate = self.probe_rate
        if rate is None:
            return
        total = sum(s.octets + s.rtx_octets for s in streams)
        if self._pad_from is None:
            self._pad_from = (now, total)
            self._pad_owed = 0.0
            return
        then, before = self._pad_from
        self._pad_from = (now, total)
        # Bytes behind the probe's rate, kept within PAD_CATCH_UP's worth either way: a
        # pause of the loop is not made up in one burst, nor a keyframe's excess owed back.
        cap = rate * PAD_CATCH_UP / 8
        self._pad_owed = max(-cap, min(cap, self._pad_owed + rate * (now - then) / 8 - (total - before)))
        size = int(self._pad_owed)
        candidates = [s for s in streams if s.publication is not None and s.rtx_ssrc is not None and s.anchored]
        if not candidates or size <= 0:
            return
        self._pad_next = (self._pad_next + 1) % len(candidates)
        for stream in candidates[self._pad_next :] + candidates[: self._pad_next]:
            pub = stream.publication
            assert pub is not None
            size -= pub.probe(stream, size, now)
            if size <= 0:
                break


def upstream_for(pub: Publication, demands: Iterable[float], now: float) -> int:
    """The REMB for ``pub``'s publisher: its best-placed viewer's demand, at least what keeps
    every layer flowing (see :func:`publisher_floor`), and everything at its best while it
    is recorded."""
    infos = [layer_info(layer, now) for layer in pub.layers]
    top = len(infos) - 1
    floor = publisher_floor(infos)
    recording = 0.0
    if pub.tap is not None:
        recording = sum(info.nominal(info.index == top) for info in infos) * 1.2
    return upstream_bitrate(demands, floor, recording)
