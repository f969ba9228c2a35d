"""Composing a recording: the per-track files in, one MP4 (H.264 + AAC) out, verified.

Runs in a worker process (``meeting.recording.jobs`` submits it through
``meeting.recording.worker``), never on the event loop. One pass over the recording's time
line, one output frame at a time:

- audio: every track decoded (``sources``), placed at its recording time, and mixed
  (``mixer``), fed in lockstep so nothing piles up;
- video: every video track decoded lazily; the people present get a grid of tiles, a
  screen share the large tile (``canvas``, ``layout``);
- afterwards a speaker timeline (``timeline``) from the audio levels.

MP4 with H.264 and AAC because every current browser plays it in a ``<video>`` (Safari
and iOS included, where WebM support is recent and partial) as do desktop players after
a download; and x264 is several times faster than libvpx at equal quality here, which
keeps composing well ahead of real time on two cores. The ``faststart`` flag puts the
index first so playback and seeking start before the whole file has arrived.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av

from meeting.logfmt import kv
from meeting.recording.canvas import Canvas, Scene, paint
from meeting.recording.mixer import Mixer
from meeting.recording.sources import RATE, AudioSource, VideoSource, scan
from meeting.recording.timeline import speaker_timeline
from meeting.recording.trackfile import read_levels, read_manifest

log = logging.getLogger(__name__)

OUTPUT_NAME = "recording.mp4"
AAC_FRAME = 1024  # samples per AAC frame
AUDIO_CHUNK = 1920  # samples pushed per input per step (40 ms)
PROGRESS_EVERY = 10.0  # seconds of wall time between progress lines


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
        scene = Scene(video, audio, s.width, s.height)
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
                for frame in mixer.push(chunks, audio_pos, n):
                    container.mux(astream.encode(frame))
                audio_pos += n
            _advance_sources(video, t)
            paint(canvas, scene, t)
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
            for frame in mixer.push([a.read(audio_pos, n) for a in audio], audio_pos, n):
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

