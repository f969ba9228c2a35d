"""Where each person goes in a composed recording: pure geometry, no media.

Without a screen share everyone present gets an equal tile in a grid (the last row
centred). With one, the screen takes the large tile on the left and the people a column
on the right. Every coordinate and size is even, as 4:2:0 pictures need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

GAP = 8  # pixels between tiles and around the edge
STRIP_FRACTION = 0.22  # width of the people column beside a screen share


@dataclass(frozen=True)
class Tile:
    """A rectangle of the output picture and what it shows (a person's key, or a screen)."""

    key: str
    x: int
    y: int
    w: int
    h: int
    screen: bool = False


def _even(value: float) -> int:
    return max(2, int(value) & ~1)


def layout(people: Sequence[str], screen: str | None, width: int, height: int) -> list[Tile]:
    """The tiles for this moment: ``people`` in order of arrival, ``screen`` if one is shared."""
    if screen is None:
        return grid(people, 0, 0, width, height)
    if not people:
        return [Tile(screen, GAP, GAP, _even(width - 2 * GAP), _even(height - 2 * GAP), screen=True)]
    strip = _even(width * STRIP_FRACTION)
    tiles = [Tile(screen, GAP, GAP, _even(width - strip - 2 * GAP), _even(height - 2 * GAP), screen=True)]
    tiles += column(people, width - strip, 0, strip, height)
    return tiles


def grid(keys: Sequence[str], x0: int, y0: int, width: int, height: int) -> list[Tile]:
    """Equal tiles for ``keys`` filling the area, as square a grid as the count allows."""
    n = len(keys)
    if n == 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell_w = (width - GAP) / cols
    cell_h = (height - GAP) / rows
    tiles = []
    for index, key in enumerate(keys):
        row, col = divmod(index, cols)
        in_row = min(cols, n - row * cols)
        # The last, shorter row is centred.
        offset = (cols - in_row) * cell_w / 2
        x = x0 + GAP + offset + col * cell_w
        y = y0 + GAP + row * cell_h
        tiles.append(Tile(key, _even(x), _even(y), _even(cell_w - GAP), _even(cell_h - GAP)))
    return tiles


def column(keys: Sequence[str], x0: int, y0: int, width: int, height: int) -> list[Tile]:
    """Tiles stacked in a column, 4:3 at most, centred vertically."""
    n = len(keys)
    w = width - GAP
    h = min((height - GAP) / n - GAP, w * 3 / 4)
    top = y0 + (height - n * (h + GAP) + GAP) / 2
    return [Tile(key, _even(x0), _even(top + i * (h + GAP)), _even(w), _even(h)) for i, key in enumerate(keys)]


def fit(src_w: int, src_h: int, tile_w: int, tile_h: int) -> tuple[int, int, int, int]:
    """Scale a picture into a tile keeping its shape: ``(x, y, w, h)`` inside the tile."""
    if src_w <= 0 or src_h <= 0:
        return 0, 0, tile_w, tile_h
    scale = min(tile_w / src_w, tile_h / src_h)
    w = min(tile_w, _even(src_w * scale))
    h = min(tile_h, _even(src_h * scale))
    return ((tile_w - w) // 2) & ~1, ((tile_h - h) // 2) & ~1, w, h
