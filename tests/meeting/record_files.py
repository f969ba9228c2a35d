"""Recording folders for tests, written as the recorder writes them (through ``trackfile``)."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av

from bench.synthetic import EncodedMedia
from meeting.recording.trackfile import TRACK_FORMAT, LevelWriter, ManifestWriter, Track

MS = Fraction(1, 1000)


def write_track(folder: Path, tracks: list[Track], number: int, who: str, source: str, start: float,
                seconds: float, media: EncodedMedia, levels: list[tuple[int, int]] | None = None) -> Track:
    """A per-track file from pre-encoded media (and its levels, if given), added to ``tracks``."""
    kind = "audio" if source == "mic" else "video"
    track = Track.new(folder, number, who, who.title(), source, kind, "VP8" if kind == "video" else "opus", start)
    with av.open(str(track.file), "w", format=TRACK_FORMAT) as container:
        if kind == "video":
            stream = container.add_stream("vp8", rate=30)
            stream.width, stream.height = media.width, media.height
            frames, step = media.video, 1000 / media.fps
        else:
            stream = container.add_stream("opus", rate=48000)
            stream.layout = "stereo"
            frames, step = media.audio, 20
        stream.time_base = MS
        for i in range(int(seconds * 1000 / step)):
            packet = av.Packet(frames[i % len(frames)])
            packet.stream = stream
            packet.time_base = MS
            packet.pts = packet.dts = round(i * step)
            packet.is_keyframe = kind == "audio" or media.video_keyframes[i % len(frames)]
            container.mux(packet)
    if levels is not None and track.levels is not None:
        writer = LevelWriter(track.levels)
        for ms, level in levels:
            writer.add(ms, level)
        writer.close()
    else:
        track = replace(track, levels=None)
    tracks.append(track)
    return track


def write_manifest(folder: Path, tracks: list[Track], stopped: float | None = None) -> None:
    """The folder's manifest: every track started, and the clean stop if ``stopped`` is given."""
    writer = ManifestWriter(folder)
    for track in tracks:
        writer.track_started(track)
    if stopped is not None:
        writer.stopped(stopped)
    writer.close()


def person_recorded(folder: Path, media: EncodedMedia, seconds: float, stopped: bool = True) -> list[Track]:
    """A recording folder with one person's mic and camera for ``seconds``."""
    folder.mkdir(parents=True, exist_ok=True)
    tracks: list[Track] = []
    write_track(folder, tracks, 1, "ann", "mic", 0.0, seconds, media)
    write_track(folder, tracks, 2, "ann", "camera", 0.0, seconds, media)
    write_manifest(folder, tracks, seconds if stopped else None)
    return tracks
