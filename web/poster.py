"""A recording's poster: one JPEG still from the middle of the composed file, so the player
shows the meeting before it plays instead of a black box.

Made on first request in a worker thread (decoding is blocking work) and kept in a small
in-memory cache; nothing is written next to the recording, whose folder retention owns.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import av

WIDTH = 640  # the poster's width; the height follows the recording's shape
CACHE_ENTRIES = 32


class PosterError(RuntimeError):
    """No picture could be taken from the file."""


def poster_jpeg(path: Path, at: float) -> bytes:
    """The frame at ``at`` seconds (or the last one before the end) as a JPEG. Blocking."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise PosterError("the file has no video")
        stream = container.streams.video[0]
        if at > 0 and stream.time_base:
            container.seek(int(at / stream.time_base), stream=stream, backward=True)
        chosen = None
        try:
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= at:
                    break
        except av.error.FFmpegError:
            pass  # a damaged tail: the last good frame will do
        if chosen is None:
            raise PosterError("no frame could be decoded")
    height = max(2, round(WIDTH * chosen.height / chosen.width / 2) * 2)
    picture = chosen.reformat(width=WIDTH, height=height, format="yuvj420p")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = WIDTH, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    picture.pts = 0
    data = b"".join(bytes(packet) for packet in encoder.encode(picture))
    data += b"".join(bytes(packet) for packet in encoder.encode(None))
    if not data:
        raise PosterError("the encoder gave nothing")
    return data


class PosterCache:
    """Posters by recording id and file, the least recently used dropped first."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._posters: OrderedDict[tuple[str, float], bytes] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, recording_id: str, path: Path, duration: float) -> bytes:
        """The poster of a recording's file; made once per file version (its mtime)."""
        stamp = (await asyncio.to_thread(path.stat)).st_mtime
        key = (recording_id, stamp)
        async with self._lock:  # one decode at a time: posters are small, CPU is shared
            if key not in self._posters:
                self._posters[key] = await asyncio.to_thread(poster_jpeg, path, max(0.0, duration / 2))
                while len(self._posters) > self.entries:
                    self._posters.popitem(last=False)
            self._posters.move_to_end(key)
            return self._posters[key]
