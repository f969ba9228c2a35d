"""Mixing every audio track of a recording into one: FFmpeg's ``amix`` through a PyAV filter graph.

The composer feeds each input the same number of samples per step (silence where a track
has none), so the graph never buffers more than one step, and pulls AAC-sized frames out.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import av.filter

from meeting.recording.sources import RATE, SAMPLE_BYTES


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

    def push(self, chunks: list[bytes], pts: int, samples: int) -> list[Any]:
        """Mix ``samples`` samples of each input from recording sample ``pts`` (a missing
        chunk is silence: a recording without audio still gets a silent track)."""
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
        """Flush the graph: the last mixed frames."""
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

