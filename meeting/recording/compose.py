"""Composing a recording: the per-track files in, one MP4 (H.264 + AAC) out.

Runs in a worker process (``meeting.recording.jobs`` submits :func:`compose`), never on the
event loop. One pass over the recording's time line:

- audio: every track decoded, placed at its recording time (silence before, after and in
  holes), and mixed with FFmpeg's ``amix`` through a PyAV filter graph, fed in lockstep
  so nothing piles up;
- video: every video track decoded lazily; for each output frame the people present get
  a grid of tiles (``meeting.recording.layout``), a screen share the large tile, each picture
  scaled to fit its tile with its shape kept; people without a picture get a coloured
  tile;
- a speaker timeline from the audio levels gathered while recording (the RFC 6464
  levels in ``*.levels``), or, for tracks without them, from the decoded audio.

MP4 with H.264 and AAC because every current browser plays it in a ``<video>`` (Safari
and iOS included, where WebM support is recent and partial) as do desktop players after
a download; and x264 is several times faster than libvpx at equal quality here, which
keeps composing well ahead of real time on two cores. The ``faststart`` flag puts the
index first so playback and seeking start before the whole file has arrived.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import zlib
from array import array
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import av.filter

from meeting.recording.layout import Tile, fit, layout
from meeting.logfmt import kv
from meeting.recording.capture import LEVEL_BIN_MS, MANIFEST

log = logging.getLogger(__name__)

OUTPUT_NAME = "recording.mp4"
RATE = 48000
SAMPLE_BYTES = 4  # s16 stereo
AAC_FRAME = 1024  # samples per AAC frame
AUDIO_CHUNK = 1920  # samples pushed per input per step (40 ms)
HOLD = 0.5  # seconds a track counts as present after its last frame
SPEAKING_LEVEL = 45  # -dBov at or below which a 200 ms bin counts as speech
MERGE_GAP_MS = 600  # speech bins closer than this make one segment
PROGRESS_EVERY = 10.0  # seconds of wall time between progress lines
BACKGROUND = (16, 128, 128)  # near-black, in Y, U, V
# Muted colours (Y, U, V) for people without a picture, chosen by a hash of the name.
PLACEHOLDERS = ((70, 150, 110), (90, 110, 150), (80, 160, 140), (100, 100, 120), (75, 140, 95), (95, 125, 160))


class ComposeError(RuntimeError):
    """The recording could not be composed, or the result failed verification."""


@dataclass(frozen=True)
class ComposeSettings:
    """Output picture and codecs; modest on purpose so composing outpaces real time."""

    width: int = 1280
    height: int = 720
    fps: int = 15
    preset: str = "veryfast"
    crf: int = 26
    keyframe_seconds: int = 2  # seeking granularity
    audio_bitrate: int = 96_000


@dataclass(frozen=True)
class Track:
    """One per-track file as the manifest describes it."""

    number: int
    file: Path
    levels: Path | None
    participant: str
    name: str
    source: str
    kind: str
    start: float  # seconds since the recording began


@dataclass(frozen=True)
class Manifest:
    tracks: tuple[Track, ...]
    stopped: float | None  # the recorded span, when the recording was stopped cleanly


@dataclass
class ComposeResult:
    """What :func:`compose` made; ``timeline`` is the speaker timeline."""

    output: str
    duration: float
    size: int
    frames: int
    tracks: int
    seconds: float  # wall time spent
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Multiple of real time."""
        return self.duration / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(folder: Path) -> Manifest:
    """The tracks of a recording folder; a torn last line (a crash) is ignored."""
    tracks: dict[int, Track] = {}
    stopped = None
    path = folder / MANIFEST
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "stopped" in entry:
            stopped = float(entry["stopped"])
        elif "file" in entry:
            tracks[entry["track"]] = Track(
                number=int(entry["track"]), file=folder / entry["file"],
                levels=folder / entry["levels"] if entry.get("levels") else None,
                participant=str(entry["participant"]), name=str(entry["name"]),
                source=str(entry["source"]), kind=str(entry["kind"]), start=float(entry["start"]),
            )
    return Manifest(tuple(sorted(tracks.values(), key=lambda t: t.number)), stopped)


@dataclass(frozen=True)
class Extent:
    """When a track has media, in seconds since the recording began."""

    first: float
    last: float

    def covers(self, t: float) -> bool:
        return self.first <= t <= self.last + HOLD


def scan(track: Track) -> Extent | None:
    """First and last packet times of a track file (demuxed, not decoded); None if unusable."""
    try:
        container = av.open(str(track.file))
    except (av.error.FFmpegError, OSError):
        return None
    first = last = None
    try:
        stream = container.streams[0]
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                t = float(packet.pts * packet.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
        except av.error.FFmpegError:
            pass  # a truncated file: what came before is good
    finally:
        container.close()
    if first is None or last is None:
        return None
    return Extent(track.start + first, track.start + last)


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames of a stream, stopping quietly where a truncated file ends."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.FFmpegError:
                continue  # one damaged packet: the decoder recovers at the next keyframe
    except av.error.FFmpegError:
        return


class VideoSource:
    """One video track decoded lazily: the newest picture at a recording time."""

    def __init__(self, track: Track, extent: Extent) -> None:
        self.track = track
        self.extent = extent
        self.container = av.open(str(track.file))
        self._frames = _frames(self.container, self.container.streams.video[0])
        self._pending: Any = None
        self.current: Any = None
        self.done = False
        self._scaled: tuple[Any, int, int, Any] | None = None

    def at(self, t: float) -> Any:
        while not self.done:
            if self._pending is None:
                self._pending = next(self._frames, None)
                if self._pending is None:
                    self.done = True
                    break
            when = self.track.start + (self._pending.time or 0.0)
            if when > t:
                break
            self.current, self._pending = self._pending, None
        return self.current

    def scaled(self, frame: Any, w: int, h: int) -> Any:
        """``frame`` scaled to w x h (yuv420p), reused while the picture and size stay."""
        cached = self._scaled
        if cached is not None and cached[0] is frame and cached[1] == w and cached[2] == h:
            return cached[3]
        # AREA: good when shrinking (the usual case here) and cheaper than bilinear in swscale.
        out = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
        self._scaled = (frame, w, h, out)
        return out

    def close(self) -> None:
        self.container.close()


class AudioSource:
    """One audio track decoded to 48 kHz stereo s16, read by recording time (silence where none)."""

    def __init__(self, track: Track, extent: Extent, measure: bool = True) -> None:
        self.track = track
        self.extent = extent
        self.measure = measure  # only tracks without levels gathered while recording need it
        self.container = av.open(str(track.file))
        self._frames = _frames(self.container, self.container.streams.audio[0])
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
        self._buf = bytearray()
        self._pos = round(track.start * RATE)  # recording sample index of _buf[0]
        self.done = False
        # Peak level per bin, -dBFS, from the decoded audio: the speaker timeline's fallback.
        self.levels: dict[int, int] = {}

    def _end(self) -> int:
        return self._pos + len(self._buf) // SAMPLE_BYTES

    def read(self, pos: int, n: int) -> bytes:
        """``n`` samples from recording sample ``pos`` on (reads must move forward)."""
        while not self.done and self._end() < pos + n:
            self._decode_more()
        if self._pos < pos:
            drop = min(len(self._buf), (pos - self._pos) * SAMPLE_BYTES)
            del self._buf[:drop]
            self._pos = self._pos + drop // SAMPLE_BYTES if self._buf else pos
        lead = max(0, min(n, self._pos - pos))
        take = min(n - lead, len(self._buf) // SAMPLE_BYTES)
        chunk = bytes(lead * SAMPLE_BYTES) + bytes(self._buf[: take * SAMPLE_BYTES])
        del self._buf[: take * SAMPLE_BYTES]
        self._pos += take
        return chunk + bytes((n - lead - take) * SAMPLE_BYTES)

    def _decode_more(self) -> None:
        frame = next(self._frames, None)
        if frame is None:
            self.done = True
            return
        at = round((self.track.start + (frame.time or 0.0)) * RATE)
        for out in self._resampler.resample(frame):
            data = bytes(out.planes[0])[: out.samples * SAMPLE_BYTES]
            self._place(at, data)
            if self.measure:
                self._measure(at, data)
            at += out.samples

    def _place(self, at: int, data: bytes) -> None:
        end = self._end()
        if not self._buf and at > end:
            self._pos = end = at
        if at > end + 480:  # a hole of more than 10 ms: silence
            self._buf += bytes((at - end) * SAMPLE_BYTES)
        elif at < end - 480:  # overlaps what we have: keep the earlier audio
            data = data[(end - at) * SAMPLE_BYTES :]
        self._buf += data

    def _measure(self, at: int, data: bytes) -> None:
        samples = array("h")
        samples.frombytes(data)
        if not samples:
            return
        peak = max(max(samples), -min(samples))
        level = 127 if peak <= 0 else min(127, round(-20 * math.log10(peak / 32768)))
        ms = at * 1000 // RATE
        b = ms - ms % LEVEL_BIN_MS
        if level < self.levels.get(b, 128):
            self.levels[b] = level

    def close(self) -> None:
        self.container.close()


class Mixer:
    """Mixes equal-length s16 stereo chunks of N inputs into AAC-sized fltp frames."""

    def __init__(self, inputs: int, frame_size: int) -> None:
        self.inputs = max(1, inputs)
        graph = av.filter.Graph()
        self.sources = [
            graph.add_abuffer(sample_rate=RATE, format="s16", layout="stereo", time_base=Fraction(1, RATE))
            for _ in range(self.inputs)
        ]
        fmt = graph.add("aformat", sample_fmts="fltp", sample_rates=str(RATE), channel_layouts="stereo")
        self.sink = graph.add("abuffersink")
        if self.inputs > 1:
            # normalize=0: voices keep their level instead of each being divided by N.
            mix = graph.add("amix", inputs=str(self.inputs), normalize="0", duration="longest",
                            dropout_transition="0")
            for index, source in enumerate(self.sources):
                source.link_to(mix, 0, index)
            mix.link_to(fmt)
        else:
            self.sources[0].link_to(fmt)
        fmt.link_to(self.sink)
        graph.configure()
        graph.set_audio_frame_size(frame_size)
        self.graph = graph

    def push(self, chunks: list[bytes], pts: int) -> list[Any]:
        samples = len(chunks[0]) // SAMPLE_BYTES if chunks else 0
        for index, source in enumerate(self.sources):
            data = chunks[index] if index < len(chunks) else bytes(samples * SAMPLE_BYTES)
            frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
            frame.planes[0].update(data + bytes(frame.planes[0].buffer_size - len(data)))
            frame.sample_rate = RATE
            frame.pts = pts
            frame.time_base = Fraction(1, RATE)
            source.push(frame)
        return self._pull()

    def finish(self) -> list[Any]:
        for source in self.sources:
            source.push(None)
        return self._pull()

    def _pull(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.sink.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out


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
    return PLACEHOLDERS[zlib.crc32(name.encode()) % len(PLACEHOLDERS)]


class Scene:
    """Who is present when, and the tiles for any moment of the recording."""

    def __init__(self, video: list[VideoSource], audio: list[AudioSource], settings: ComposeSettings) -> None:
        self.video = video
        self.settings = settings
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
            s = self.settings
            tiles = self._cache[key] = layout(present, screen_key, s.width, s.height)
        shown = dict(cameras)
        if screen is not None and screen_key is not None:
            shown[screen_key] = screen
        return tiles, shown


def _paint(canvas: Canvas, scene: Scene, t: float) -> None:
    canvas.clear()
    tiles, shown = scene.tiles(t)
    for tile in tiles:
        source = shown.get(tile.key)
        frame = source.at(t) if source is not None else None
        if frame is None:
            name = scene.names.get(tile.key, tile.key)
            canvas.fill(tile.x, tile.y, tile.w, tile.h, (40, 128, 128))
            side = min(tile.w, tile.h) // 3 & ~1
            canvas.fill(tile.x + (tile.w - side) // 2 & ~1, tile.y + (tile.h - side) // 2 & ~1, side, side,
                        placeholder_color(name))
            continue
        x, y, w, h = fit(frame.width, frame.height, tile.w, tile.h)
        canvas.paste(source.scaled(frame, w, h), tile.x + x, tile.y + y)


def _advance_sources(video: list[VideoSource], t: float) -> None:
    # Every decoder keeps up with time, shown or not, so none falls behind its references.
    for source in video:
        if source.extent.first <= t:
            source.at(t)


def compose(folder: str | Path, span: float | None = None, settings: ComposeSettings = ComposeSettings(),
            key: str = "", progress: Callable[[float, float], None] | None = None) -> ComposeResult:
    """Compose ``folder``'s tracks into ``folder/recording.mp4``; verify it; return what it holds.

    ``span`` is the recorded length in seconds; without it, the manifest's or the tracks'
    own. Writes to a temporary name and renames only a verified file, so a crash leaves
    either nothing or a whole file.
    """
    started = time.monotonic()
    folder = Path(folder)
    manifest = read_manifest(folder)
    extents = {t.number: scan(t) for t in manifest.tracks}
    usable = [t for t in manifest.tracks if extents[t.number] is not None]
    if span is None:
        span = manifest.stopped
    if span is None:
        span = max((e.last for e in extents.values() if e is not None), default=0.0)
    span = max(span, 1.0 / settings.fps)
    video = [VideoSource(t, extents[t.number]) for t in usable if t.kind == "video"]  # type: ignore[arg-type]
    audio = [AudioSource(t, extents[t.number], measure=not read_levels(t.levels))  # type: ignore[arg-type]
             for t in usable if t.kind == "audio"]
    final = folder / OUTPUT_NAME
    part = folder / (OUTPUT_NAME + ".part")
    log.info("compose started %s", kv(recording=key, tracks=len(usable), span_s=round(span, 1)))
    try:
        frames = _encode(part, video, audio, span, settings, key, started, progress)
    finally:
        for source in [*video, *audio]:
            source.close()
    duration = verify(part, span)
    os.replace(part, final)
    timeline = speaker_timeline(audio, span)
    result = ComposeResult(
        output=str(final), duration=round(duration, 3), size=final.stat().st_size, frames=frames,
        tracks=len(usable), seconds=round(time.monotonic() - started, 3), timeline=timeline,
    )
    log.info("compose done %s", kv(recording=key, duration_s=round(duration, 1), size=result.size,
                                    seconds=result.seconds, speed=f"{result.speed:.1f}x"))
    return result


def _encode(path: Path, video: list[VideoSource], audio: list[AudioSource], span: float,
            settings: ComposeSettings, key: str, started: float,
            progress: Callable[[float, float], None] | None) -> int:
    s = settings
    container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        vstream = container.add_stream("libx264", rate=s.fps, options={
            "preset": s.preset, "crf": str(s.crf), "g": str(s.fps * s.keyframe_seconds)})
        vstream.width, vstream.height, vstream.pix_fmt = s.width, s.height, "yuv420p"
        astream = container.add_stream("aac", rate=RATE)
        astream.layout = "stereo"
        astream.bit_rate = s.audio_bitrate
        mixer = Mixer(len(audio), AAC_FRAME)
        scene = Scene(video, audio, settings)
        canvas = Canvas(s.width, s.height)
        total_frames = max(1, round(span * s.fps))
        total_samples = round(span * RATE)
        audio_pos = 0
        next_log = time.monotonic() + PROGRESS_EVERY
        for index in range(total_frames):
            t = index / s.fps
            # Audio up to the end of this video frame, in lockstep over all inputs.
            target = min(total_samples, round((index + 1) * RATE / s.fps))
            while audio_pos < target:
                n = min(AUDIO_CHUNK, target - audio_pos)
                chunks = [a.read(audio_pos, n) for a in audio]
                for frame in mixer.push(chunks, audio_pos):
                    container.mux(astream.encode(frame))
                audio_pos += n
            _advance_sources(video, t)
            _paint(canvas, scene, t)
            picture = canvas.frame()
            picture.pts = index
            picture.time_base = Fraction(1, s.fps)
            container.mux(vstream.encode(picture))
            now = time.monotonic()
            if now >= next_log:
                next_log = now + PROGRESS_EVERY
                done = (index + 1) / s.fps
                log.info("compose progress %s", kv(recording=key, done_s=round(done, 1), total_s=round(span, 1),
                                                   percent=round(100 * done / span), speed=f"{done / (now - started):.1f}x"))
            if progress is not None:
                progress((index + 1) / s.fps, span)
        while audio_pos < total_samples:  # a last sliver, when video rounded down
            n = min(AUDIO_CHUNK, total_samples - audio_pos)
            for frame in mixer.push([a.read(audio_pos, n) for a in audio], audio_pos):
                container.mux(astream.encode(frame))
            audio_pos += n
        for frame in mixer.finish():
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
        container.mux(vstream.encode(None))
    finally:
        container.close()
    return total_frames


def verify(path: str | Path, expected: float, tolerance: float = 1.0) -> float:
    """Check a composed file: it opens, has one video and one audio stream that decode,
    and lasts ``expected`` seconds give or take ``tolerance``. Returns its duration."""
    try:
        with av.open(str(path)) as container:
            if len(container.streams.video) != 1 or len(container.streams.audio) != 1:
                raise ComposeError("the composed file does not have one video and one audio stream")
            if container.duration is None:
                raise ComposeError("the composed file has no duration")
            duration = container.duration / av.time_base
            if abs(duration - expected) > tolerance:
                raise ComposeError(f"the composed file lasts {duration:.2f} s, not {expected:.2f} s")
            for stream in (container.streams.video[0], container.streams.audio[0]):
                container.seek(0)
                if next(container.decode(stream), None) is None:
                    raise ComposeError(f"the composed file's {stream.type} does not decode")
    except av.error.FFmpegError as exc:
        raise ComposeError(f"the composed file does not open: {exc}") from None
    return duration


def speaker_timeline(audio: list[AudioSource], span: float) -> list[dict[str, Any]]:
    """Who spoke when: ``[{"name", "segments": [[start, end], ...], "total"}]`` in seconds.

    Levels gathered while recording (RFC 6464, in ``*.levels``) are used when a track has
    them; otherwise the levels measured while decoding it.
    """
    # By participant, not by name: two people called "Guest" are two rows.
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
    timeline.sort(key=lambda entry: entry["segments"][0][0])
    return timeline


def read_levels(path: Path | None) -> dict[int, int]:
    """A ``*.levels`` file: ``{bin_ms: level}``; empty when missing or unreadable."""
    levels: dict[int, int] = {}
    if path is None or not path.exists():
        return levels
    for line in path.read_text(encoding="ascii", errors="ignore").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            b, level = int(parts[0]), int(parts[1])
            if level < levels.get(b, 128):
                levels[b] = level
    return levels


def init_worker(level: int = logging.INFO) -> None:
    """Process-pool initializer: lower priority than the media server, and log like it."""
    try:
        os.nice(10)  # composing may wait; forwarding live media may not
    except OSError:
        pass
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
