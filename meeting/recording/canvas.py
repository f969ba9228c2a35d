"""Painting a composed recording's pictures: who is on screen when, and each frame's tiles.

:class:`Scene` knows from the tracks' extents who is present at any moment and asks
``meeting.recording.layout`` for their tiles; :func:`paint` fills a :class:`Canvas` (three
planes of bytes) with each tile's newest picture, scaled to fit with its shape kept, or a
coloured placeholder for people without one.
"""

from __future__ import annotations

import zlib
from typing import Any

import av

from meeting.recording.layout import Tile, fit, layout
from meeting.recording.sources import AudioSource, Extent, VideoSource

BACKGROUND = (16, 128, 128)  # near-black, in Y, U, V
PLACEHOLDER_TILE = (40, 128, 128)  # the tile of someone without a picture, in Y, U, V
# Muted colours (Y, U, V) for people without a picture, chosen by a hash of the name.
PLACEHOLDERS = ((70, 150, 110), (90, 110, 150), (80, 160, 140), (100, 100, 120), (75, 140, 95), (95, 125, 160))


class Canvas:
    """The output picture as three planes of bytes, painted tile by tile."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.planes = [bytearray(width * height), bytearray(width * height // 4), bytearray(width * height // 4)]
        self._clear = [bytes([BACKGROUND[i]]) * len(self.planes[i]) for i in range(3)]

    def clear(self) -> None:
        for plane, blank in zip(self.planes, self._clear):
            plane[:] = blank

    def fill(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        for i, plane in enumerate(self.planes):
            shift = 1 if i else 0
            stride = self.width >> shift
            row = bytes([color[i]]) * (w >> shift)
            for r in range(y >> shift, (y + h) >> shift):
                start = r * stride + (x >> shift)
                plane[start : start + len(row)] = row

    def paste(self, frame: Any, x: int, y: int) -> None:
        """Copy a yuv420p frame's pixels with their top-left corner at (x, y)."""
        w, h = frame.width, frame.height
        for i, plane in enumerate(self.planes):
            shift = 1 if i else 0
            src = memoryview(frame.planes[i])
            line = frame.planes[i].line_size
            stride = self.width >> shift
            pw, ph = w >> shift, h >> shift
            x0, y0 = x >> shift, y >> shift
            for r in range(ph):
                start = (y0 + r) * stride + x0
                plane[start : start + pw] = src[r * line : r * line + pw]

    def frame(self) -> Any:
        out = av.VideoFrame(self.width, self.height, "yuv420p")
        for i, plane in enumerate(self.planes):
            target = out.planes[i]
            w = self.width >> (1 if i else 0)
            if target.line_size == w:
                target.update(bytes(plane))
            else:  # the frame's rows are padded: copy row by row
                rows = self.height >> (1 if i else 0)
                padded = bytearray(target.buffer_size)
                for r in range(rows):
                    padded[r * target.line_size : r * target.line_size + w] = plane[r * w : (r + 1) * w]
                target.update(bytes(padded))
        return out


def placeholder_color(name: str) -> tuple[int, int, int]:
    """The colour of someone's placeholder: always the same for the same name."""
    return PLACEHOLDERS[zlib.crc32(name.encode()) % len(PLACEHOLDERS)]


class Scene:
    """Who is present when, and the tiles for any moment of the recording."""

    def __init__(self, video: list[VideoSource], audio: list[AudioSource], width: int, height: int) -> None:
        self.video = video
        self.width, self.height = width, height
        spans: dict[str, list[Extent]] = {}
        self.names: dict[str, str] = {}
        for source in [*video, *audio]:
            spans.setdefault(source.track.participant, []).append(source.extent)
            self.names[source.track.participant] = source.track.name
        self.spans = spans
        # People in order of first appearance.
        self.order = sorted(spans, key=lambda p: min(e.first for e in spans[p]))
        self._cache: dict[tuple, list[Tile]] = {}

    def tiles(self, t: float) -> tuple[list[Tile], dict[str, VideoSource]]:
        """The tiles at recording time ``t``, and the video source shown in each (by tile key)."""
        present = [p for p in self.order if any(e.covers(t) for e in self.spans[p])]
        cameras: dict[str, VideoSource] = {}
        screen: VideoSource | None = None
        for source in self.video:
            if not source.extent.covers(t):
                continue
            if source.track.source == "screen":
                if screen is None or source.extent.first > screen.extent.first:
                    screen = source
            else:
                cameras[source.track.participant] = source
        screen_key = f"screen:{screen.track.number}" if screen else None
        key = (tuple(present), screen_key)
        tiles = self._cache.get(key)
        if tiles is None:
            tiles = self._cache[key] = layout(present, screen_key, self.width, self.height)
        shown = dict(cameras)
        if screen is not None and screen_key is not None:
            shown[screen_key] = screen
        return tiles, shown


def paint(canvas: Canvas, scene: Scene, t: float) -> None:
    """Paint the picture at recording time ``t``: every tile's newest frame or a placeholder."""
    canvas.clear()
    tiles, shown = scene.tiles(t)
    for tile in tiles:
        source = shown.get(tile.key)
        frame = source.at(t) if source is not None else None
        if frame is None:
            name = scene.names.get(tile.key, tile.key)
            canvas.fill(tile.x, tile.y, tile.w, tile.h, PLACEHOLDER_TILE)
            side = min(tile.w, tile.h) // 3 & ~1
            canvas.fill(tile.x + (tile.w - side) // 2 & ~1, tile.y + (tile.h - side) // 2 & ~1, side, side,
                        placeholder_color(name))
            continue
        x, y, w, h = fit(frame.width, frame.height, tile.w, tile.h)
        canvas.paste(source.scaled(frame, w, h), tile.x + x, tile.y + y)

