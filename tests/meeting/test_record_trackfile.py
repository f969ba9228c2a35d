"""The recording folder's format: what the recorder writes is what the composer reads back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from meeting.recording.trackfile import (
    LEVEL_BIN_MS, MANIFEST, LevelWriter, ManifestWriter, Track, level_bin, levels_file_name, read_levels,
    read_manifest, track_file_name,
)


def test_manifest_and_levels_round_trip(tmp_path: Path) -> None:
    mic = Track.new(tmp_path, 1, "p-ann", "Ann Ö", "mic", "audio", "opus", 0.5)
    camera = Track.new(tmp_path, 2, "p-ann", "Ann Ö", "camera", "video", "VP8", 0.25)
    screen = Track.new(tmp_path, 12, "p-ben", "Ben", "screen", "video", "VP8", 4.0)
    assert (mic.file.name, mic.levels.name if mic.levels else None) == ("t01-mic.webm", "t01-mic.levels")
    assert (camera.levels, screen.file.name) == (None, "t12-screen.webm")
    assert (track_file_name(3, "mic"), levels_file_name(3, "mic")) == ("t03-mic.webm", "t03-mic.levels")

    manifest = ManifestWriter(tmp_path)
    for track in (camera, mic, screen):
        manifest.track_started(track)
    manifest.track_ended(2, 6.0)
    manifest.track_ended(1, 5.9876)
    manifest.stopped(6.25)
    manifest.close()

    levels = LevelWriter(mic.levels)  # type: ignore[arg-type]
    heard = [(500, 60), (610, 30), (650, 40), (799, 20), (800, 127), (1210, 50), (1399, 45)]
    for ms, level in heard:
        levels.add(ms, level)
    levels.close()

    read = read_manifest(tmp_path)
    assert read.stopped == 6.25
    assert read.tracks == (  # by number, each with its end once closed (to the millisecond)
        replace(mic, end=5.988),
        replace(camera, end=6.0),
        screen,  # still open when the manifest was read: no end
    )
    # The loudest level (lowest -dBov) of each 200 ms bin that heard anything.
    assert read_levels(mic.levels) == {400: 60, 600: 20, 800: 127, 1200: 45}
    assert all(b == level_bin(b) and b % LEVEL_BIN_MS == 0 for b in read_levels(mic.levels))


def test_a_torn_or_foreign_line_is_skipped_and_missing_files_read_empty(tmp_path: Path) -> None:
    track = Track.new(tmp_path, 1, "p", "Pat", "mic", "audio", "opus", 1.0)
    manifest = ManifestWriter(tmp_path)
    manifest.track_started(track)
    manifest.close()
    with open(tmp_path / MANIFEST, "a", encoding="utf-8") as file:
        file.write('{"track": "x", "file": 3}\n[1, 2]\n{"something": "newer"}\n{"track": 1, "en')  # a crash mid-line
    read = read_manifest(tmp_path)
    assert read.tracks == (track,) and read.stopped is None
    assert read_manifest(tmp_path / "nowhere").tracks == ()
    assert read_levels(None) == {} and read_levels(tmp_path / "missing.levels") == {}
    (tmp_path / "bad.levels").write_text("200 40\nnot a line\n-5 3\n400 12 9\n400 30\n")
    assert read_levels(tmp_path / "bad.levels") == {200: 40, 400: 30}
