"""Composing a recording: the grid layout, and track files made into one verified MP4."""

from __future__ import annotations

from array import array
from pathlib import Path

import av
import pytest

from meeting.recording.compose import ComposeError, compose, verify
from meeting.recording.layout import fit, layout
from meeting.recording.trackfile import Track, read_manifest
from bench.synthetic import EncodedMedia, encoded_media
from tests.meeting.record_files import write_manifest, write_track


def _overlap(a, b) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


@pytest.mark.parametrize("count", range(1, 11))
def test_grid_gives_everyone_an_equal_tile_inside_the_picture(count: int) -> None:
    people = [f"p{i}" for i in range(count)]
    tiles = layout(people, None, 1280, 720)
    assert [t.key for t in tiles] == people
    assert len({(t.w, t.h) for t in tiles}) == 1
    for tile in tiles:
        assert 0 <= tile.x and tile.x + tile.w <= 1280 and 0 <= tile.y and tile.y + tile.h <= 720
        assert all(v % 2 == 0 for v in (tile.x, tile.y, tile.w, tile.h))
    assert not any(_overlap(a, b) for i, a in enumerate(tiles) for b in tiles[i + 1:])
    # Tiles use the picture: together they cover most of it.
    assert sum(t.w * t.h for t in tiles) > 0.5 * 1280 * 720


def test_a_screen_share_takes_the_large_tile_and_people_a_column() -> None:
    tiles = layout(["ann", "ben", "cat"], "screen:3", 1280, 720)
    screen, *people = tiles
    assert screen.screen and screen.key == "screen:3" and screen.x < people[0].x
    assert screen.w * screen.h > 3 * sum(t.w * t.h for t in people)
    assert [t.key for t in people] == ["ann", "ben", "cat"]
    assert not any(_overlap(a, b) for i, a in enumerate(tiles) for b in tiles[i + 1:])
    assert all(t.x + t.w <= 1280 and t.y + t.h <= 720 for t in tiles)
    alone = layout([], "screen:3", 1280, 720)
    assert len(alone) == 1 and alone[0].w > 1200
    assert layout([], None, 1280, 720) == []


def test_fit_keeps_the_pictures_shape() -> None:
    assert fit(640, 480, 1264, 704) == (162, 0, 938, 704)
    x, y, w, h = fit(1920, 1080, 400, 400)
    assert (w, h) == (400, 224) and x == 0 and y == 88
    assert fit(0, 0, 100, 50) == (0, 0, 100, 50)


# --- composing track files ----------------------------------------------------------------

def luma(frame: av.VideoFrame) -> bytes:
    plane = frame.planes[0]
    return b"".join(bytes(plane)[r * plane.line_size: r * plane.line_size + frame.width] for r in range(frame.height))


def textured(y: bytes, width: int, x: int, row: int, size: int = 24) -> bool:
    """Whether the square at (x, row) has picture in it (the background is flat near-black)."""
    values = [y[(row + r) * width + x + c] for r in range(size) for c in range(size)]
    # Flat areas (letterbox, gaps, placeholders) vary by a step or two at most; the test
    # picture is low-contrast noise, blurred further by a capped keyframe at 300 kbit/s.
    return max(values) - min(values) > 12


def frames_at(path: Path, times: list[float]) -> dict[float, bytes]:
    wanted = sorted(times)
    out: dict[float, bytes] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            while wanted and frame.time >= wanted[0]:
                out[wanted.pop(0)] = luma(frame)
            if not wanted:
                break
    return out


def audio_peaks(path: Path) -> list[float]:
    """Peak amplitude (0..1) per second of the file's audio."""
    peaks: dict[int, float] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples = array("f")
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
            second = int(frame.time)
            peaks[second] = max(peaks.get(second, 0.0), max(map(abs, samples), default=0.0))
    return [peaks[s] for s in sorted(peaks)]


@pytest.fixture(scope="module")
def media() -> EncodedMedia:
    return encoded_media(320, 240, fps=30, bitrate=300_000, seconds=4.0)


async def test_tracks_compose_into_one_verified_file_whose_layout_follows_who_is_there(
        tmp_path: Path, media: EncodedMedia) -> None:
    manifest: list[Track] = []
    # Ann from the start, speaking in the first second (levels gathered while recording);
    # Ben from 2 s (no levels: measured from his audio); Ann shares her screen from 4 s.
    write_track(tmp_path, manifest, 1, "ann", "mic", 0.0, 6.0, media, levels=[(0, 20), (200, 25), (400, 30), (600, 18), (800, 22), (1000, 127), (3000, 127)])
    write_track(tmp_path, manifest, 2, "ann", "camera", 0.0, 6.0, media)
    write_track(tmp_path, manifest, 3, "ben", "mic", 2.0, 4.0, media)
    write_track(tmp_path, manifest, 4, "ben", "camera", 2.0, 4.0, media)
    write_track(tmp_path, manifest, 5, "ann", "screen", 4.0, 2.0, media)
    write_manifest(tmp_path, manifest, stopped=6.0)

    result = compose(tmp_path, key="test")

    output = Path(result.output)
    assert output == tmp_path / "recording.mp4" and not (tmp_path / "recording.mp4.part").exists()
    assert result.duration == pytest.approx(6.0, abs=0.2) and result.tracks == 5 and result.size > 10_000
    with av.open(str(output)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert (container.streams.video[0].width, container.streams.video[0].height) == (1280, 720)
    frames = frames_at(output, [1.0, 3.0, 5.0])
    one, two, stage = frames[1.0], frames[3.0], frames[5.0]
    # Alone, Ann fills the picture's middle; the sides are letterbox.
    assert textured(one, 1280, 580, 300, size=96) and not textured(one, 1280, 20, 348)
    # With Ben, two tiles side by side: picture in each half, a gap between them.
    assert textured(two, 1280, 260, 300, size=96) and textured(two, 1280, 920, 300, size=96)
    assert not textured(two, 1280, 636, 348, size=8)  # the 8-pixel gap at x 636..643
    # The screen share takes the large tile over the middle; people move to a column.
    assert textured(stage, 1280, 580, 300, size=96) and textured(stage, 1280, 1120, 300)
    assert not textured(stage, 1280, 1100, 20)
    peaks = audio_peaks(output)
    assert len(peaks) == 6 and min(peaks) > 0.05  # everyone's voice, none silent
    assert result.timeline[0] == {"name": "Ann", "segments": [[0.0, 1.0]], "total": 1.0}
    ben = result.timeline[1]
    assert ben["name"] == "Ben" and ben["segments"][0][0] == pytest.approx(2.0, abs=0.25)
    assert ben["segments"][-1][1] == pytest.approx(6.0, abs=0.25)


async def test_a_truncated_track_and_an_unstopped_manifest_still_compose(tmp_path: Path, media: EncodedMedia) -> None:
    manifest: list[Track] = []
    write_track(tmp_path, manifest, 1, "ann", "mic", 0.2, 3.0, media)
    write_track(tmp_path, manifest, 2, "ann", "camera", 0.2, 3.0, media)
    camera = tmp_path / "t02-camera.webm"
    camera.write_bytes(camera.read_bytes()[: camera.stat().st_size * 2 // 3])  # a crash mid-write
    # No "stopped" line and a torn last line: the server died.
    write_manifest(tmp_path, manifest)
    with open(tmp_path / "manifest.jsonl", "a") as torn:
        torn.write('{"track": 1, "en')
    assert len(read_manifest(tmp_path).tracks) == 2
    result = compose(tmp_path, key="test")
    assert result.duration == pytest.approx(3.2, abs=0.1)  # the longest track's end sets the span
    assert verify(result.output, 3.2) == pytest.approx(result.duration)


def test_verify_refuses_a_file_of_the_wrong_length_or_shape(tmp_path: Path, media: EncodedMedia) -> None:
    manifest: list[Track] = []
    write_track(tmp_path, manifest, 1, "ann", "mic", 0.0, 2.0, media)
    with pytest.raises(ComposeError, match="one video and one audio"):
        verify(tmp_path / "t01-mic.webm", 2.0)
    write_manifest(tmp_path, manifest)
    result = compose(tmp_path, span=2.0)
    with pytest.raises(ComposeError, match="lasts"):
        verify(result.output, 5.0)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ComposeError, match="does not open"):
        verify(bad, 2.0)


@pytest.mark.parametrize("sources", [("camera",), ()], ids=["camera only", "nothing published"])
def test_a_recording_without_audio_composes_with_a_silent_track(
        tmp_path: Path, media: EncodedMedia, sources: tuple[str, ...]) -> None:
    manifest: list[Track] = []
    for number, source in enumerate(sources, 1):
        write_track(tmp_path, manifest, number, "ann", source, 0.0, 2.0, media)
    write_manifest(tmp_path, manifest, stopped=2.0)
    result = compose(tmp_path, key="test")
    assert result.duration == pytest.approx(2.0, abs=0.2) and result.tracks == len(sources)
    assert result.timeline == []
    peaks = audio_peaks(Path(result.output))
    assert len(peaks) == 2 and max(peaks) == 0.0  # a silent audio track, as players expect one
    picture = frames_at(Path(result.output), [1.0])[1.0]
    assert textured(picture, 1280, 580, 300, size=96) == bool(sources)
