"""One RTP stream a publisher sends: a simulcast encoding of its camera, or its only stream.

A browser that simulcasts sends each encoding of a track as its own RTP stream (its own
SSRC, and an RTX SSRC), told apart by a RID. The server stands in for the receivers of
each: reception statistics and receiver reports, NACKs for its gaps, keyframe requests
(rate-limited), the publisher's sender-report clock for lip sync. It also measures what
viewers need to choose between layers: the bitrate of each temporal layer, the frame
size of the last keyframe, and whether the stream is flowing at all.

State only; the publication (meeting.media.forwarder) feeds it packets and does the I/O.
"""

from __future__ import annotations

from meeting.media.feedback import KeyframeLimiter, NackTracker, ReceptionStats
from meeting.media.rtcp import ntp_middle, pack_report_block
from meeting.media.vp8 import NO_TID, temporal_rate

# A layer that sent nothing for this long is not offered to viewers (the publisher
# stopped it: its own bandwidth estimate fell, or fewer people need it).
LIVE_FOR = 1.5
# Bitrates are smoothed over about this many seconds (a keyframe is a burst of a few
# frames' worth of bytes: it should not look like a new rate).
RATE_WINDOW = 2.0


class Layer:
    """Receive state and measurements for one of a publication's RTP streams."""

    __slots__ = (
        "index",
        "rid",
        "media_ssrc",
        "rtx_ssrc",
        "stats",
        "nack",
        "keyframes",
        "deadline",
        "sr_ntp",
        "sr_rtp",
        "sr_time",
        "sr_lsr",
        "viewers",
        "octets",
        "rates",
        "peak",
        "frames",
        "fps",
        "width",
        "height",
        "temporal",
        "last_time",
        "last_keyframe",
        "measured_at",
        "received",
        "rtx_received",
        "malformed",
    )

    def __init__(self, index: int, rid: str | None, clock_rate: int, video: bool,
                 keyframe_interval: float = 0.3) -> None:
        self.index = index  # 0 is the lowest quality
        self.rid = rid
        self.media_ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.stats = ReceptionStats(clock_rate)
        self.nack = NackTracker() if video else None
        self.keyframes = KeyframeLimiter(keyframe_interval)
        self.deadline = float("inf")
        # The publisher's last sender report on this stream: NTP time, RTP time, arrival.
        self.sr_ntp: int | None = None
        self.sr_rtp = 0
        self.sr_time = 0.0
        self.sr_lsr = 0
        # Viewer streams that forward this layer, or wait for its keyframe to start.
        self.viewers: list = []
        # Payload bytes per temporal layer (0, 1, 2, and NO_TID for frames without one)
        # since the last measurement, and the smoothed bitrates, bit/s.
        self.octets = [0, 0, 0, 0]
        self.rates = [0.0, 0.0, 0.0, 0.0]
        self.peak = 0.0  # the highest total rate lately (decays), for what it can send
        self.frames = 0
        self.fps = 0.0
        self.width = 0
        self.height = 0
        self.temporal = False  # its frames carry temporal layer ids
        self.last_time = float("-inf")
        self.last_keyframe = float("-inf")
        self.measured_at: float | None = None
        self.received = 0
        self.rtx_received = 0
        self.malformed = 0

    # --- wiring -------------------------------------------------------------------------

    def set_ssrc(self, media_ssrc: int) -> bool:
        """Take a (new) media SSRC; True when it replaced another (the source restarted)."""
        restarted = self.media_ssrc is not None and media_ssrc != self.media_ssrc
        if restarted:
            self.stats = ReceptionStats(self.stats.clock_rate)
            if self.nack is not None:
                self.nack = NackTracker()
            self.sr_ntp = None
            self.deadline = float("inf")
        self.media_ssrc = media_ssrc
        return restarted

    # --- reports ----------------------------------------------------------------------------

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        """Remember the publisher's NTP/RTP pair (for viewers' SRs and our RR's LSR)."""
        self.sr_ntp = ntp
        self.sr_rtp = rtp_ts
        self.sr_time = now
        self.sr_lsr = ntp_middle(ntp)

    def report_block(self, now: float) -> bytes | None:
        """A reception report block about this stream for our RR (None before any packet)."""
        s = self.stats
        if self.media_ssrc is None or s.base_seq is None:
            return None
        lsr = dlsr = 0
        if self.sr_ntp is not None:
            lsr = self.sr_lsr
            dlsr = min(int((now - self.sr_time) * 65536), 0xFFFFFFFF)
        return pack_report_block(self.media_ssrc, s.take_fraction_lost(), s.cumulative_lost,
                                 s.extended_max_seq, int(s.jitter), lsr, dlsr)

    # --- measurements -----------------------------------------------------------------------

    def live(self, now: float) -> bool:
        """Whether packets of this layer arrived lately."""
        return now - self.last_time <= LIVE_FOR

    def rate(self, max_tid: int = NO_TID) -> float:
        """Bitrate (bit/s) of the frames up to temporal layer ``max_tid``."""
        return temporal_rate(self.rates, max_tid)

    def measure(self, now: float) -> None:
        """Turn the bytes counted since the last call into smoothed bitrates."""
        if self.measured_at is None:
            self.measured_at = now
            return
        dt = now - self.measured_at
        if dt < 0.05:
            return
        self.measured_at = now
        weight = min(1.0, dt / RATE_WINDOW)
        octets = self.octets
        rates = self.rates
        for i in range(4):
            rates[i] += (octets[i] * 8 / dt - rates[i]) * weight
            octets[i] = 0
        self.fps += (self.frames / dt - self.fps) * weight
        self.frames = 0
        total = rates[0] + rates[1] + rates[2] + rates[3]
        # The peak falls by half in ~10 s: a layer's recent best, after it was held back.
        self.peak = max(total, self.peak * 0.5 ** (dt / 10))

    def next_deadline(self) -> float:
        """When :meth:`NackTracker.due` or the keyframe limiter may next have work."""
        deadline = float("inf")
        if self.nack is not None:
            d = self.nack.next_deadline()
            if d is not None:
                deadline = d
        d = self.keyframes.next_deadline()
        if d is not None and d < deadline:
            deadline = d
        return deadline
