"""The on-disk format of a recording folder while it waits to be composed: written and read here.

A recording's folder (``<recordings folder>/<recording id>/``) holds:

- ``manifest.jsonl``: one JSON object per line, each flushed and synced as it is written,
  so a crash loses at most a torn last line (which readers skip):

  - ``{"track": n, "file": ..., "levels": ... | null, "participant": ..., "name": ...,
    "source": ..., "kind": "audio" | "video", "codec": ..., "start": s}`` when a track's
    file is opened (``start``: seconds since the recording began);
  - ``{"track": n, "end": s}`` when it is closed;
  - ``{"stopped": s}`` when the recording was stopped cleanly (the recorded span).

- one Matroska (WebM) file per track, ``tNN-<source>.webm``, holding the encoded frames
  as they arrived (times in milliseconds since the track's ``start``);
- for audio tracks, ``tNN-<source>.levels``: the loudest RFC 6464 level (-dBov, 0 loudest,
  127 silence) per ``LEVEL_BIN_MS`` bin, as ``<ms since the recording began> <level>``
  lines.

The recorder (``capture``) writes it through :class:`ManifestWriter` and
:class:`LevelWriter`; the composer (``compose``) reads it back with :func:`read_manifest` and
:func:`read_levels`. Nothing else knows these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
TRACK_FORMAT = "webm"  # the container the per-track files use (also PyAV's format name)
LEVELS_SUFFIX = ".levels"
LEVEL_BIN_MS = 200  # speaker timeline resolution
SILENCE = 127  # RFC 6464's quietest level


def track_file_name(number: int, source: str) -> str:
    """The file a track's media goes to: ``t01-camera.webm``."""
    return f"{_stem(number, source)}.{TRACK_FORMAT}"


def levels_file_name(number: int, source: str) -> str:
    """The file an audio track's levels go to: ``t02-mic.levels``."""
    return f"{_stem(number, source)}{LEVELS_SUFFIX}"


def _stem(number: int, source: str) -> str:
    return f"t{number:02d}-{source}"


def level_bin(ms: int) -> int:
    """The start of the ``LEVEL_BIN_MS`` bin holding ``ms``."""
    return ms - ms % LEVEL_BIN_MS


@dataclass(frozen=True)
class Track:
    """One per-track file as the manifest describes it."""

    number: int
    file: Path
    levels: Path | None  # audio tracks only
    participant: str
    name: str  # the participant's display name when the track began
    source: str  # "mic", "camera", "screen"
    kind: str  # "audio" or "video"
    start: float  # seconds since the recording began
    codec: str = ""
    end: float | None = None  # seconds since the recording began, once closed cleanly

    @classmethod
    def new(cls, folder: Path, number: int, participant: str, name: str, source: str, kind: str,
            codec: str, start: float) -> Track:
        """A track about to be written in ``folder``, named as this format names them."""
        levels = folder / levels_file_name(number, source) if kind == "audio" else None
        return cls(number=number, file=folder / track_file_name(number, source), levels=levels,
                   participant=participant, name=name, source=source, kind=kind, start=start, codec=codec)


@dataclass(frozen=True)
class Manifest:
    """What a recording folder holds, as read back from its manifest."""

    tracks: tuple[Track, ...]  # by track number
    stopped: float | None  # the recorded span, when the recording was stopped cleanly


class ManifestWriter:
    """Appends manifest lines, each flushed and synced before :meth:`write` returns (blocking)."""

    def __init__(self, folder: Path) -> None:
        self._file = open(folder / MANIFEST, "a", encoding="utf-8")

    def track_started(self, track: Track) -> None:
        """The track's file is open and its first frame is at ``track.start``."""
        self._write({
            "track": track.number, "file": track.file.name,
            "levels": track.levels.name if track.levels is not None else None,
            "participant": track.participant, "name": track.name, "source": track.source,
            "kind": track.kind, "codec": track.codec, "start": round(track.start, 3),
        })

    def track_ended(self, number: int, end: float) -> None:
        """The track's file is closed; its last frame is at ``end``."""
        self._write({"track": number, "end": round(end, 3)})

    def stopped(self, span: float) -> None:
        """The recording was stopped cleanly after ``span`` seconds."""
        self._write({"stopped": round(span, 3)})

    def _write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_manifest(folder: Path) -> Manifest:
    """The tracks of a recording folder (blocking); a torn or unknown line is skipped."""
    tracks: dict[int, Track] = {}
    ends: dict[int, float] = {}
    stopped = None
    path = folder / MANIFEST
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            entry = json.loads(line)
            if "stopped" in entry:
                stopped = float(entry["stopped"])
            elif "file" in entry:
                number = int(entry["track"])
                tracks[number] = Track(
                    number=number, file=folder / entry["file"],
                    levels=folder / entry["levels"] if entry.get("levels") else None,
                    participant=str(entry["participant"]), name=str(entry["name"]),
                    source=str(entry["source"]), kind=str(entry["kind"]), start=float(entry["start"]),
                    codec=str(entry.get("codec", "")),
                )
            elif "end" in entry:
                ends[int(entry["track"])] = float(entry["end"])
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError):
            continue  # a torn last line (a crash), or one this version does not know
    done = [replace(t, end=ends[n]) if n in ends else t for n, t in sorted(tracks.items())]
    return Manifest(tuple(done), stopped)


class LevelWriter:
    """Collects an audio track's levels into ``LEVEL_BIN_MS`` bins and appends them (blocking)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="ascii")
        self._bin: int | None = None
        self._level = SILENCE

    def add(self, ms: int, level: int) -> None:
        """A level heard ``ms`` milliseconds after the recording began."""
        b = level_bin(ms)
        if b != self._bin:
            self._emit()
            self._bin, self._level = b, level
        elif level < self._level:
            self._level = level

    def _emit(self) -> None:
        if self._bin is not None:
            self._file.write(f"{self._bin} {self._level}\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Write the bin in progress and close the file."""
        self._emit()
        self._bin = None
        self._file.close()


def read_levels(path: Path | None) -> dict[int, int]:
    """A levels file as ``{bin_ms: level}`` (blocking); empty when missing or unreadable."""
    levels: dict[int, int] = {}
    if path is None or not path.exists():
        return levels
    for line in path.read_text(encoding="ascii", errors="ignore").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            b, level = int(parts[0]), int(parts[1])
            if level < levels.get(b, SILENCE + 1):
                levels[b] = level
    return levels
