"""One viewer's adaptation, wired: probes paced at their rate."""

from __future__ import annotations

from meeting.media import adaptation
from meeting.media.adaptation import Adaptation
from meeting.media.viewer import ViewerStream

PACKET = 1_000  # bytes a probe sends again at a time


class Padded:
    """Stands for a publication: sends whole packets again, as the forwarder does."""

    def __init__(self) -> None:
        self.calls = 0

    def probe(self, viewer: ViewerStream, size: int, now: float) -> int:
        self.calls += 1
        done = 0
        while done < size:
            done += PACKET
        viewer.rtx_octets += done
        return done


def stream(ssrc: int) -> ViewerStream:
    v = ViewerStream(mid=str(ssrc), kind="video", ssrc=ssrc, rtx_ssrc=ssrc + 1, send=lambda data: None)
    v.publication = Padded()  # type: ignore[assignment]
    v.sw.current = 0
    return v


def pace(a: Adaptation, streams: list[ViewerStream], media_rate: float, until: float) -> float:
    """Run the pacing loop every PAD_INTERVAL with media flowing at ``media_rate``; the rate
    everything was sent at, bit/s."""
    now = 0.0
    before = sum(s.octets + s.rtx_octets for s in streams)
    while now < until:
        now += adaptation.PAD_INTERVAL
        streams[0].octets += int(media_rate * adaptation.PAD_INTERVAL / 8)
        a.pad(now, streams)
    return (sum(s.octets + s.rtx_octets for s in streams) - before) * 8 / until


def test_a_probe_is_sent_at_its_rate_whole_packets_and_media_included():
    streams = [stream(10), stream(20)]
    a = Adaptation()
    a.probe_rate = 600_000.0
    sent = pace(a, streams, 200_000, 2.0)
    # Each pacing sends a whole packet or none: without counting what went out, 50 packets
    # a second (400 kbit/s of padding) would ride on top of the media.
    assert 0.95 * 600_000 <= sent <= 1.05 * 600_000
    assert all(s.rtx_octets > 0 for s in streams)  # the padding comes from every stream in turn


def test_media_above_the_probe_rate_is_not_owed_back_in_a_burst():
    streams = [stream(10)]
    a = Adaptation()
    a.probe_rate = 300_000.0
    a.pad(0.0, streams)
    streams[0].octets += 200_000  # a second's keyframes at once
    a.pad(0.02, streams)
    assert a._pad_owed == -300_000 * adaptation.PAD_CATCH_UP / 8
    sent = pace(a, streams, 0, 1.0)
    assert 0.85 * 300_000 <= sent <= 300_000  # at most PAD_CATCH_UP's worth withheld
