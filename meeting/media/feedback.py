"""Receiver-side RTCP state for one published stream: what the server tells the publisher.

A forwarding server stands in for the receivers in front of the publisher: it reports
reception (RFC 3550 receiver reports), asks for lost packets again (generic NACK,
RFC 4585), and asks for keyframes on the viewers' behalf, rate-limited so a room full of
viewers does not make the publisher send nothing but keyframes.

These classes keep the state only. Time is passed in (seconds, any monotonic origin),
and they return what should be sent; the caller does the sending.
"""

from __future__ import annotations

from meeting.media.rtp import seq_diff

_NOTHING: tuple[int, ...] = ()


class ReceptionStats:
    """Sequence, loss and jitter bookkeeping for one SSRC (RFC 3550 appendix A)."""

    __slots__ = (
        "clock_rate",
        "base_seq",
        "max_seq",
        "cycles",
        "received",
        "expected_prior",
        "received_prior",
        "jitter",
        "_transit",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base_seq: int | None = None
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self._transit: float | None = None

    def add(self, seq: int, ts: int, arrival: float, retransmitted: bool = False) -> None:
        """Count one packet; ``arrival`` is in seconds."""
        self.received += 1
        if self.base_seq is None:
            self.base_seq = seq
            self.max_seq = seq
        else:
            d = seq_diff(seq, self.max_seq)
            if d > 0:
                if seq < self.max_seq:
                    self.cycles += 0x10000
                self.max_seq = seq
        # Retransmissions arrive late by design: they would inflate the jitter.
        if not retransmitted:
            transit = arrival * self.clock_rate - ts
            if self._transit is not None:
                d_transit = abs(transit - self._transit)
                # Timestamps wrap at 2**32; a jump that large is a wrap, not jitter.
                if d_transit < 0x80000000:
                    self.jitter += (d_transit - self.jitter) / 16.0
            self._transit = transit

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.base_seq is None:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        return self.expected - self.received

    def take_fraction_lost(self) -> int:
        """Fraction lost since the previous call, in 1/256 units (RFC 3550 A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)


class NackTracker:
    """Which sequence numbers are missing, and when to ask for them (again).

    libwebrtc senders keep a history and answer NACKs with RTX. aiortc's own generator
    only NACKs when a new gap appears; this one also repeats a request every
    ``retry_interval`` until the packet arrives or ``max_tries`` requests went unanswered,
    so a lost retransmission does not leave a hole for good.
    """

    __slots__ = ("max_seq", "missing", "retry_interval", "max_tries", "max_gap", "gave_up", "reset_count")

    def __init__(self, retry_interval: float = 0.04, max_tries: int = 10, max_gap: int = 400) -> None:
        self.max_seq: int | None = None
        # seq -> [time of last request, requests made]
        self.missing: dict[int, list[float]] = {}
        self.retry_interval = retry_interval
        self.max_tries = max_tries
        self.max_gap = max_gap
        self.gave_up = 0
        self.reset_count = 0

    def on_packet(self, seq: int, now: float) -> tuple[int, ...]:
        """Record an arrival; returns the sequence numbers that just went missing."""
        if self.max_seq is None:
            self.max_seq = seq
            return _NOTHING
        d = seq_diff(seq, self.max_seq)
        if d == 1:
            self.max_seq = seq
            return _NOTHING
        if d <= 0:
            if self.missing:
                self.missing.pop(seq, None)
            return _NOTHING
        if d > self.max_gap:
            # The stream jumped (new source, long outage): asking for hundreds of packets
            # is pointless; the caller should ask for a keyframe instead.
            self.missing.clear()
            self.max_seq = seq
            self.reset_count += 1
            return _NOTHING
        new = tuple((self.max_seq + i) & 0xFFFF for i in range(1, d))
        for s in new:
            self.missing[s] = [now, 1]
        self.max_seq = seq
        if len(self.missing) > self.max_gap:
            for s in sorted(self.missing, key=lambda s: seq_diff(s, seq))[: len(self.missing) - self.max_gap]:
                del self.missing[s]
                self.gave_up += 1
        return new

    def due(self, now: float) -> tuple[int, ...]:
        """Sequence numbers to request again now; drops those asked for too often."""
        if not self.missing:
            return _NOTHING
        again = []
        for s, entry in list(self.missing.items()):
            if now - entry[0] >= self.retry_interval:
                if entry[1] >= self.max_tries:
                    del self.missing[s]
                    self.gave_up += 1
                    continue
                entry[0] = now
                entry[1] += 1
                again.append(s)
        return tuple(again)

    def next_deadline(self) -> float | None:
        """When :meth:`due` may next return something, or None when nothing is missing."""
        if not self.missing:
            return None
        return min(entry[0] for entry in self.missing.values()) + self.retry_interval


class KeyframeLimiter:
    """Forward keyframe requests upstream at most once per ``min_interval``.

    Requests are remembered (:meth:`ask`) and :meth:`due` says when one may be sent, so
    many viewers asking at once cost the publisher one keyframe, and the last viewer to
    ask inside an interval is served when the interval ends rather than forgotten.
    """

    __slots__ = ("min_interval", "last", "pending", "sent")

    def __init__(self, min_interval: float = 0.3) -> None:
        self.min_interval = min_interval
        self.last = float("-inf")
        self.pending = False
        self.sent = 0

    def ask(self) -> None:
        """Note that a keyframe is wanted."""
        self.pending = True

    def due(self, now: float) -> bool:
        """Whether to send a keyframe request now; if so it counts as sent."""
        if self.pending and now - self.last >= self.min_interval:
            self.pending = False
            self.last = now
            self.sent += 1
            return True
        return False

    def next_deadline(self) -> float | None:
        """When :meth:`due` may next return True, or None when nothing is pending."""
        return self.last + self.min_interval if self.pending else None
