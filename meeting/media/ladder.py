"""The qualities a viewer may get of each publication, and how a budget is shared among them.

Pure, no I/O:

- :func:`ladder` lists the qualities of one publication a viewer may get, cheapest
  first: the lowest layer at 7.5, 15 and 30 frames per second (VP8 temporal layers),
  then the better layers (from 15 fps), up to the layer the viewer's tile needs. A
  thumbnail needs the low layer; a pinned, speaker or screen tile the best one.
- :func:`allocate` shares a viewer's budget: first every stream's cheapest quality in order
  of priority (tile size), then one step at a time round the streams, so three small
  tiles all get 15 fps before one gets 30. A stream is paused (its tile says so) when
  the budget left for it is under its cheapest quality and under ``PAUSE_FLOOR``: a
  stream that cannot be made cheaper (one layer, no temporal layers) is not paused for
  costing more than that, its publisher is asked for less instead. A paused stream
  resumes by itself (:class:`meeting.media.quality.Downlink` holds it paused a moment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

from meeting.media.vp8 import NO_TID, temporal_rate

TILE_FIT = 0.8  # a layer suits a tile when it is at least this share of the tile's width
UNKNOWN_TILE = 1920 * 1080  # priority of a stream whose tile size is not known
PAUSE_FLOOR = 150_000  # a stream is paused only when less than this is left for it, bit/s
DEFAULT_TOP = 1_000_000  # nominal bitrate of a best layer never measured
DEFAULT_LOWER = 150_000  # and of a lower one
BITS_PER_PIXEL = 0.08  # nominal bitrate of a layer of known size: pixels x 30 fps x this


@dataclass(frozen=True)
class LayerInfo:
    """What a viewer's controller knows of one layer of a publication."""

    index: int
    width: int = 0  # of its last keyframe (0: not known)
    height: int = 0
    live: bool = True  # packets arrived lately
    rates: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # bit/s per temporal layer
    temporal: bool = False  # its frames carry temporal layer ids
    peak: float = 0.0  # its best total rate lately

    def rate(self, max_tid: int = NO_TID) -> float:
        return temporal_rate(self.rates, max_tid)

    def nominal(self, top: bool) -> float:
        """What the full layer costs when flowing: measured, else guessed from its size."""
        if self.peak > 0:
            return max(self.peak, self.rate())
        if self.width and self.height:
            return self.width * self.height * 30 * BITS_PER_PIXEL
        return DEFAULT_TOP if top else DEFAULT_LOWER


@dataclass(frozen=True)
class Step:
    """One quality: a layer with temporal layers up to ``max_tid``, and what it costs."""

    layer: int
    max_tid: int
    bitrate: float  # what the viewer receives, bit/s
    sends: float = 0.0  # what the publisher must send for it (this layer and those under it)


@dataclass(frozen=True)
class Want:
    """One video stream a viewer receives: its qualities, and how much it matters."""

    key: Hashable
    ladder: tuple[Step, ...]  # the qualities flowing now, cheapest first
    priority: float = UNKNOWN_TILE  # larger first: the tile's area in pixels
    current: tuple[int, int] | None = None  # (layer, max_tid) forwarded now; None: nothing
    demand_ladder: tuple[Step, ...] = ()  # every quality the tile needs, flowing or not


def wanted_layer(layers: Sequence[LayerInfo], tile_width: int | None) -> int:
    """The layer a tile needs: the smallest whose width covers ``TILE_FIT`` of the tile.

    ``tile_width`` is in device pixels; None (not told) wants the best layer, 0 (not
    shown) the lowest.
    """
    if not layers:
        return 0
    if tile_width is None:
        return layers[-1].index
    if tile_width <= 0:
        return layers[0].index
    for layer in layers[:-1]:
        if layer.width and layer.width >= TILE_FIT * tile_width:
            return layer.index
        if not layer.width and tile_width <= 400:
            return layer.index  # size not known yet: a lower layer is made for small tiles
    return layers[-1].index


def ladder(layers: Sequence[LayerInfo], tile_width: int | None, flowing_only: bool = True) -> tuple[Step, ...]:
    """The qualities a viewer may get of one publication, cheapest first.

    ``layers`` are the publication's, lowest first. With ``flowing_only`` only layers
    that are live count, at their measured rates; without, every layer counts, at its
    nominal rate where it is not measured (what the viewer would take if it flowed).
    """
    usable = [layer for layer in layers if layer.live or not flowing_only]
    if not usable:
        return ()
    want = wanted_layer(usable, tile_width)
    top = layers[-1].index
    steps: list[Step] = []
    under = 0.0  # what the publisher sends of the layers below this one
    for layer in usable:
        if layer.index > want:
            break
        full = layer.nominal(layer.index == top)
        measured = layer.rate() > 0
        if layer.temporal and measured:
            caps: tuple[int, ...] = (0, 1, 2) if not steps else (1, 2)
            caps = tuple(t for t in caps if layer.rates[t] > 0) or (NO_TID,)
        else:
            caps = (NO_TID,)
        for cap in caps:
            rate = layer.rate(cap) if measured else full
            if steps and rate <= steps[-1].bitrate:
                continue  # never a step that costs no more than the one before
            steps.append(Step(layer.index, cap, rate, under + full))
        under += full
    return tuple(steps)


def allocate(budget: float, wants: Sequence[Want], start: dict[Hashable, int] | None = None,
             limit: dict[Hashable, int] | None = None) -> tuple[dict[Hashable, int], float]:
    """Share ``budget`` (bit/s): each stream's step index (-1: paused), and the total.

    Streams go in order of priority. From ``start`` (step indexes already given, whose
    cost counts) or from nothing, every stream first gets its cheapest step if it fits
    (counted at ``PAUSE_FLOOR`` at most), then streams move up one step at a time, round
    and round, while the next step fits. ``limit`` caps a stream's step index.
    """
    order = sorted(wants, key=lambda w: (-w.priority, str(w.key)))
    levels: dict[Hashable, int] = {}
    spent = 0.0
    for w in order:
        level = start.get(w.key, -1) if start else -1
        levels[w.key] = level
        if level >= 0:
            spent += _cost(w.ladder, level)
    for w in order:
        if levels[w.key] < 0 and w.ladder and (limit is None or limit.get(w.key, 0) >= 0):
            cost = _cost(w.ladder, 0)
            if spent + cost <= budget:
                levels[w.key] = 0
                spent += cost
    moved = True
    while moved:
        moved = False
        for w in order:
            i = levels[w.key]
            top = len(w.ladder) - 1 if limit is None else min(len(w.ladder) - 1, limit.get(w.key, len(w.ladder)))
            if i < 0 or i >= top:
                continue
            cost = w.ladder[i + 1].bitrate - w.ladder[i].bitrate
            if spent + cost <= budget:
                levels[w.key] = i + 1
                spent += cost
                moved = True
    return levels, spent


def _cost(steps: tuple[Step, ...], level: int) -> float:
    """What ``steps[level]`` counts for in a budget: the first step at most PAUSE_FLOOR."""
    floor = steps[0].bitrate
    return steps[level].bitrate - floor + min(floor, PAUSE_FLOOR)


def current_index(w: Want) -> int:
    """The step of ``w.ladder`` closest under what it gets now (-1: it gets nothing)."""
    if w.current is None:
        return -1
    layer, tid = w.current
    best = -1
    for i, step in enumerate(w.ladder):
        if step.layer < layer or (step.layer == layer and step.max_tid <= tid):
            best = i
    return best
