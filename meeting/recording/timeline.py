"""Who spoke when in a recording: speech segments per participant, from audio levels.

Levels gathered while recording (RFC 6464, in the tracks' levels files) are used when a
track has them; otherwise those the composer measured while decoding it.
"""

from __future__ import annotations

from typing import Any

from meeting.recording.sources import AudioSource
from meeting.recording.trackfile import LEVEL_BIN_MS, read_levels

SPEAKING_LEVEL = 45  # -dBov at or below which a level bin counts as speech
MERGE_GAP_MS = 600  # speech bins closer than this make one segment


def speaker_timeline(audio: list[AudioSource], span: float) -> list[dict[str, Any]]:
    """Who spoke when: ``[{"name", "segments": [[start, end], ...], "total"}]`` in seconds.

    Levels gathered while recording (RFC 6464, in ``*.levels``) are used when a track has
    them; otherwise the levels measured while decoding it.
    """
    # Levels by participant (one connection each); rows by name at the end.
    bins: dict[str, dict[int, int]] = {}
    names: dict[str, str] = {}
    for source in audio:
        levels = read_levels(source.track.levels) or source.levels
        names[source.track.participant] = source.track.name
        person = bins.setdefault(source.track.participant, {})
        for b, level in levels.items():
            if level < person.get(b, 128):
                person[b] = level
    timeline = []
    limit = span * 1000
    for participant, levels in bins.items():
        segments: list[list[float]] = []
        for b in sorted(levels):
            if levels[b] > SPEAKING_LEVEL or b >= limit:
                continue
            end = min(limit, b + LEVEL_BIN_MS)
            if segments and b - segments[-1][1] <= MERGE_GAP_MS:
                segments[-1][1] = end
            else:
                segments.append([b, end])
        if segments:
            timeline.append({
                "name": names[participant],
                "segments": [[round(a / 1000, 1), round(e / 1000, 1)] for a, e in segments],
                "total": round(sum(e - a for a, e in segments) / 1000, 1),
            })
    return one_row_per_name(timeline)


def one_row_per_name(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same timeline with one row per name as recorded: someone whose page reconnected
    came back as another participant, and is still one person to whoever reads it. Rows
    stored before this merge are read through it too."""
    spans: dict[str, list[list[float]]] = {}
    for row in timeline:
        spans.setdefault(row["name"], []).extend([float(a), float(e)] for a, e in row["segments"])
    merged = []
    for name, segments in spans.items():
        joined: list[list[float]] = []
        for start, end in sorted(segments):
            if joined and start - joined[-1][1] <= MERGE_GAP_MS / 1000:
                joined[-1][1] = max(joined[-1][1], end)
            else:
                joined.append([start, end])
        if joined:
            merged.append({"name": name, "segments": [[round(a, 1), round(e, 1)] for a, e in joined],
                           "total": round(sum(e - a for a, e in joined), 1)})
    merged.sort(key=lambda entry: entry["segments"][0][0])
    return merged

