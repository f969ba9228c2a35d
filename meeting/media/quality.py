"""Which quality of each publisher a viewer gets: estimates and tile sizes in, layers out.

Pure decisions, no I/O and no clock of its own (time comes in as ``now``):

- :mod:`meeting.media.ladder` lists the qualities a viewer may get of each publication and
  shares a budget among them; this module decides the budget.
- :class:`Downlink` is one viewer's controller. Its budget comes from the viewer's REMB
  (the browser's receive-side, delay-based estimate of what reaches it), lowered by heavy
  loss, and raised by probes: before a viewer is sent more, it is sent packets it already
  has, and if its estimate, reported while it takes them, keeps rising (a fall ends the
  probe at once), the link holds that rate. After a probe that failed, the next ones ask
  for less until two in a row hold, and the wait between them ends only when one holds
  where the last was refused; after two held with the estimate rising fast, they ask for
  twice the budget. A REMB that falls below what the viewer is sent is congestion: the
  budget drops to it at once, probes back off. So is heavy loss (a full queue drops
  packets but delays every one alike, which a delay-based estimate does not see): it sets
  a ceiling under what the viewer is sent, which rises again while the link is quiet, and
  goes when a probe above it holds. Keeping a quality needs it to fit the budget, moving
  up needs 90% of it, so choices do not flap.
- :func:`upstream_bitrate`: what a publisher is asked to send follows its best-placed
  viewer, never its worst: weak viewers take a lower layer instead of pulling everyone's
  quality down.

Audio is never in these budgets: browsers leave audio out of REMB, and the server always
forwards every voice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Sequence

from meeting.media.ladder import PAUSE_FLOOR, LayerInfo, Step, Want, allocate, current_index

KEEP = 1.0  # a quality is kept while everything chosen fits this share of the budget
UPGRADE = 0.9  # and chosen anew only when it fits this share
START_ESTIMATE = 800_000  # a viewer's budget before its first REMB, bit/s
PROBE_GAIN = 1.5  # a probe asks the link for this much more than it is known to take...
PROBE_GAIN_AFTER_FAILURE = 1.2  # ...or this much, once one failed, until two in a row held
# ...or this much once two in a row held with the estimate rising FAR_RISE or more through
# each: the link is far from its limit (Chrome's own probe controller likewise doubles after
# a probe that held), and a link set free is found again in fewer rounds. In the weak
# viewer's traces, a link near its limit let the estimate rise 1-3% through a probe, if at
# all; one set free, 8-12%.
PROBE_GAIN_FAST = 2.0
FAR_RISE = 1.05
PROBE_RISE = 1.01  # a probe holds when the viewer's estimate rose this much during it
# A probe stops at once when the estimate falls this far under the highest it reached during
# it: the viewer's estimator saw its queue grow (it lowers its estimate only then). Falls
# come in steps of a few percent, each under the 5% that counts as congestion.
PROBE_FALL = 0.97
PROBE_RECOVERED = 1.15  # an estimate this much above where a probe failed ends its backoff
PROBE_TIME = 1.0  # seconds a probe lasts
PROBE_SILENCE = 2.5  # a probe the viewer sent no REMB about for this long failed (one a second)
PROBE_EVIDENCE = 0.3  # a probe holds only on a REMB sent this long after it began, or later
PROBED_FOR = 10.0  # seconds a probe's rate stands for the link when the REMB does not follow
# Wait after a failed probe: doubles from the first to the second. A failure costs little
# (the next one asks for less), and a link that recovered is found again within seconds.
PROBE_BACKOFF = (2.0, 10.0)
CONGESTION_HOLD = 2.0  # no probe this soon after congestion
LIMITED_FOR = 30.0  # after congestion, a viewer's demands follow its budget this long
CEILING_RISE = 0.05  # a ceiling set by loss rises by this share a second...
CEILING_STEP = 20_000  # ...or by this many bit/s a second, whichever is more
CEILING_FLOOR = 150_000  # and is never under this: what one video needs to resume
HEADROOM = 2.0  # a viewer not known to be limited asks this much more than its tiles take now
QUEUE_DELAY = 0.15  # a round trip this far above its minimum: a queue, or a browser answering late
PROBE_QUEUE = 0.1  # round trip this much longer than when a probe began: the probe found the limit
LOSS_LIMIT = 0.1  # loss above this lowers the budget (random loss below it does not)
LOSS_WEIGHT = 0.5  # of each receiver report's loss in the smoothed figure
RESUME_HOLD = 2.0  # seconds a paused stream stays paused at least
# A viewer sent no video this long gets budget enough to resume one stream: its estimate
# speaks only of video it receives, so with everything paused it would never rise again.
STARVED_FOR = 3.0
IDLE_RATE = 10_000  # video bit/s under which a viewer counts as sent nothing
AUDIO_ALLOWANCE = 64_000  # added to a publisher's REMB for its voice
# What keeps a publisher's best layer flowing while no viewer needs it: Chromium turns a
# 640x480 layer off below ~150 kbit/s, and a tile that grows then waits for it to restart.
TOP_KEPT = 200_000


@dataclass
class Decision:
    """What a viewer's controller decided at one tick."""

    choices: dict[Hashable, Step | None]  # per stream: the quality to forward, None: paused
    estimate: float  # the budget it used, bit/s
    probe: float | None = None  # pad what the viewer is sent up to this rate, bit/s
    demands: dict[Hashable, float] = field(default_factory=dict)  # what it would take, per stream


@dataclass
class _Probe:
    target: float
    started: float
    base: float  # the REMB when it started
    peak: float  # the highest REMB since
    rtt: float | None  # the round trip when it started, if near its minimum (else not judged)


class Downlink:
    """One viewer's bandwidth controller (see the module's docstring)."""

    def __init__(self) -> None:
        self.remb: float | None = None
        self.remb_at = float("-inf")
        self.probed = 0.0  # a rate the link was seen to take (a probe that held)
        self.probed_at = float("-inf")
        self.probe: _Probe | None = None
        self.next_probe = float("-inf")
        self.backoff = PROBE_BACKOFF[0]
        self.held_in_a_row = 0  # probes that held since the last that failed
        self.far_in_a_row = 0  # of those, the last ones in a row the estimate rose FAR_RISE through
        self.failed_remb: float | None = None  # the REMB when the last probe failed
        self.failed_target: float | None = None  # and what that probe asked for
        self.congested_at = float("-inf")
        # A ceiling from heavy loss, where REMB may not say it (a queue that is full
        # delays every packet alike); it rises again while the link is quiet.
        self.ceiling: float | None = None
        self.ceiling_at = float("-inf")
        self.sending = 0.0  # video bit/s sent, as of the last decision
        self.idle_since: float | None = None  # since when it has been sent no video
        self.starved = False  # sent no video for STARVED_FOR: budget for one stream at least
        self.loss = 0.0
        self.rtt: float | None = None  # the last round trip measured, seconds
        self.rtt_before = 0.0  # the round trip of the report before the last
        self.rtt_min: float | None = None
        self.paused_at: dict[Hashable, float] = {}  # streams paused, since when
        self.probes = 0
        self.probes_failed = 0
        self.congestions = 0

    # --- inputs ------------------------------------------------------------------------

    def on_remb(self, bitrate: float, now: float, sending: float) -> None:
        """The viewer's REMB; ``sending`` is the video bitrate it is sent now.

        Congestion is a REMB that fell and is below what the viewer is sent: a REMB
        that only falls towards 1.5x what arrives (the estimator's ceiling) is not. A
        probe ends, failed, on a REMB ``PROBE_FALL`` under the highest since it began.
        """
        fell = self.remb is not None and bitrate < self.remb * 0.95
        self.remb = float(bitrate)
        self.remb_at = now
        probe = self.probe
        if fell and bitrate < sending:
            self._congested(now, None)
        elif probe is not None:
            probe.peak = max(probe.peak, self.remb)
            if self.remb < probe.peak * PROBE_FALL:
                self._probe_failed(now)

    def on_report(self, loss: float | None, rtt: float | None, now: float) -> None:
        """A receiver report from the viewer: fraction of video lost (0..1), round trip (s).

        Heavy loss is congestion too (a full queue drops packets but delays every one
        alike, which a delay-based estimate does not see): what the viewer is sent is cut
        by half the loss, once per ``CONGESTION_HOLD`` (reports repeat what the cut has not
        yet drained). Loss is smoothed over reports. A round trip that grows through a
        probe begun while it was near its minimum stops the probe: its packets wait in a
        queue. One already long when the probe began is not judged: a browser short of CPU
        answers reports 0.5-1.5 s late while its packets arrive as sent.
        """
        if loss is not None:
            # Smoothed: a report covers about a second, a few packets of a low layer, so one
            # lost packet can read as 10%; a queue that overflows reads as much more, twice.
            self.loss += (loss - self.loss) * LOSS_WEIGHT
        if rtt is not None:
            # Two reports in a row: a queue lasts, a busy computer's pause does not.
            self.rtt_before = self.rtt if self.rtt is not None else rtt
            self.rtt = rtt
            self.rtt_min = rtt if self.rtt_min is None else min(self.rtt_min, rtt)
        probe = self.probe
        if self.loss > LOSS_LIMIT and now - self.congested_at >= CONGESTION_HOLD:
            self._congested(now, max(CEILING_FLOOR, self.sending * (1 - 0.5 * self.loss)))
        elif probe is not None and probe.rtt is not None and rtt is not None and (
            min(rtt, self.rtt_before) - probe.rtt > PROBE_QUEUE
        ):
            # The probe's extra packets wait in a queue: the link takes no more. Stop before
            # the queue overflows (loss says so later).
            self._probe_failed(now)

    def _congested(self, now: float, ceiling: float | None) -> None:
        self.congested_at = now
        self.congestions += 1
        self.far_in_a_row = 0
        self.probed = 0.0
        if self.probe is not None:
            self._probe_failed(now)
        if ceiling is not None:
            self.ceiling = ceiling if self.ceiling is None else min(self.ceiling, ceiling)
            self.ceiling_at = now

    # --- decisions ---------------------------------------------------------------------

    def queueing(self) -> bool:
        """Whether the round trip is well above its minimum: a queue, or a browser answering
        reports late (which of the two, the round trip alone cannot say)."""
        return self.rtt is not None and self.rtt_min is not None and self.rtt > self.rtt_min + QUEUE_DELAY

    def estimate(self) -> float:
        """The video budget now, bit/s."""
        if self.remb is None:
            budget = float(START_ESTIMATE)
        else:
            budget = max(self.remb, self.probed)
        if self.starved:
            budget = max(budget, PAUSE_FLOOR / UPGRADE)  # enough to resume one stream
        if self.ceiling is not None:
            budget = min(budget, self.ceiling)
        return budget

    def decide(self, now: float, sending: float, wants: Sequence[Want]) -> Decision:
        """Choose every stream's quality, and whether to probe, for the next moments."""
        self.sending = sending
        self._settle(now)
        budget = self.estimate()
        # Keep what fits KEEP of the budget (never above what each stream has now)...
        limit = {w.key: current_index(w) for w in wants}
        kept, spent = allocate(budget * KEEP, wants, limit=limit)
        # ... and move up only within UPGRADE of it (a stream paused lately stays paused).
        levels = kept
        if spent <= budget * UPGRADE:
            held = [w for w in wants if now - self.paused_at.get(w.key, float("-inf")) < RESUME_HOLD]
            hold = {w.key: -1 for w in held}
            levels, spent = allocate(budget * UPGRADE, wants, start=kept, limit=hold or None)
        choices: dict[Hashable, Step | None] = {}
        for w in wants:
            i = levels.get(w.key, -1)
            choices[w.key] = w.ladder[i] if i >= 0 else None
            if i < 0 and w.ladder and w.key not in self.paused_at:
                self.paused_at[w.key] = now
            elif i >= 0:
                self.paused_at.pop(w.key, None)
        wanted = sum(w.ladder[-1].bitrate for w in wants if w.ladder)
        spent = sum(step.bitrate for step in choices.values() if step is not None)
        if self.probe is None and spent < wanted * 0.95:
            self._maybe_probe(now, budget, wanted)
        return Decision(choices, budget, self.probe.target if self.probe else None,
                        self._demands(now, budget, wants))

    def _settle(self, now: float) -> None:
        """Time-driven changes: a probe's end, a ceiling rising, a probed rate going stale,
        a viewer sent nothing for a while."""
        if self.sending >= IDLE_RATE:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        self.starved = self.idle_since is not None and now - self.idle_since >= STARVED_FOR
        probe = self.probe
        if probe is not None and now - probe.started >= PROBE_TIME:
            remb = self.remb if self.remb_at >= probe.started + PROBE_EVIDENCE else None  # heard of it
            if remb is not None and remb >= probe.base * PROBE_RISE:
                # The viewer's estimator saw the extra packets and kept rising: it is in its
                # "increase" state, which it leaves on overuse. A flat one is holding, near
                # the link's limit.
                self.probe = None
                self.probed = max(self.probed, probe.target)
                self.ceiling = None  # the link took more than loss had left it: it is over
                self.probed_at = now
                if self.failed_target is None or probe.target >= self.failed_target:
                    # The link took what it refused last: it changed. Below that, the
                    # backoff stands: a weak link takes a small step, then refuses the
                    # next, and each refusal costs its viewer a burst of loss.
                    self.backoff = PROBE_BACKOFF[0]
                    self.failed_target = None
                self.held_in_a_row += 1
                self.far_in_a_row = self.far_in_a_row + 1 if remb >= probe.base * FAR_RISE else 0
                self.next_probe = now  # the next step may be tried at once
            elif remb is not None or now - probe.started >= PROBE_SILENCE:
                self._probe_failed(now)  # not rising, or no word from the viewer: take it as no
        if self.ceiling is not None and now - self.congested_at >= CONGESTION_HOLD:
            self.ceiling += max(self.ceiling * CEILING_RISE, CEILING_STEP) * (now - self.ceiling_at)
            self.ceiling_at = now
            if self.remb is not None and self.ceiling > max(self.remb, self.probed):
                self.ceiling = None
        if self.probed and self.remb is not None and self.remb >= self.probed:
            self.probed = 0.0  # the estimator caught up: it speaks for itself now
        elif self.probed and now - self.probed_at > PROBED_FOR:
            self.probed = 0.0  # what a probe showed long ago says little now

    def _maybe_probe(self, now: float, budget: float, wanted: float) -> None:
        # The estimator rising on its own since a probe failed says the link has room again.
        recovered = self.failed_remb is not None and (self.remb or 0.0) >= self.failed_remb * PROBE_RECOVERED
        if (now < self.next_probe and not recovered) or now - self.congested_at < CONGESTION_HOLD:
            return
        if self.loss > LOSS_LIMIT or self.remb is None:
            return
        if recovered:
            self.failed_remb = None
            self.held_in_a_row = max(self.held_in_a_row, 2)  # full steps again
        # A link that refused a probe is near its limit: creep up to it, faster once it takes
        # more. From the budget, not from what is sent: that includes retransmissions and a
        # probe's own padding, and a probe built on it would overshoot a weak link.
        if self.probes_failed and self.held_in_a_row < 2:
            gain = PROBE_GAIN_AFTER_FAILURE
        elif self.far_in_a_row >= 2:
            gain = PROBE_GAIN_FAST
        else:
            gain = PROBE_GAIN
        target = min(wanted / UPGRADE, budget * gain)
        if target <= budget * 1.05:
            return
        # Round trips judge only a probe begun with the round trip near its minimum.
        self.probe = _Probe(target, now, self.remb, self.remb, None if self.queueing() else self.rtt)
        self.probes += 1

    def _probe_failed(self, now: float) -> None:
        assert self.probe is not None
        self.failed_target = self.probe.target
        self.probe = None
        self.probes_failed += 1
        self.held_in_a_row = self.far_in_a_row = 0
        self.failed_remb = self.remb
        self.next_probe = now + self.backoff
        self.backoff = min(self.backoff * 2, PROBE_BACKOFF[1])

    def limited(self, now: float) -> bool:
        """Whether this viewer's link was seen not to take more lately: congestion, or a
        probe that failed. Until then it is taken to take what its tiles need."""
        return now - self.congested_at < LIMITED_FOR or self.backoff > PROBE_BACKOFF[0]

    def _demands(self, now: float, budget: float, wants: Sequence[Want]) -> dict[Hashable, float]:
        """What the viewer would take of each publication if every layer flowed: while its
        link is not known to be limited, twice what its tiles need (so publishers may grow);
        after that, the publisher-side cost of the step its budget allows, plus a share of
        what is left."""
        demand_wants = [Want(w.key, w.demand_ladder or w.ladder, w.priority) for w in wants]
        if not self.limited(now):
            # Room to grow: what a publisher sends now may be what it was allowed so far.
            return {w.key: w.ladder[-1].sends * HEADROOM for w in demand_wants if w.ladder}
        levels, spent = allocate(budget, demand_wants)
        at_top = [w for w in demand_wants if w.ladder and levels[w.key] == len(w.ladder) - 1]
        spare = max(0.0, budget - spent) / len(at_top) if at_top else 0.0
        demands = {}
        for w in demand_wants:
            i = levels[w.key]
            if i < 0:
                continue
            demands[w.key] = w.ladder[i].sends + (spare if w in at_top else 0.0)
        return demands


def publisher_floor(layers: Sequence[LayerInfo]) -> float:
    """The least a publisher is asked for, whatever its viewers take: every layer under the
    best at its rate and the best kept flowing at ``TOP_KEPT`` (a single layer at its rate),
    with a fifth more for the encoder's swings."""
    if not layers:
        return 0.0
    if len(layers) == 1:
        return layers[0].nominal(True) * 1.2
    return (sum(layer.nominal(False) for layer in layers[:-1]) + TOP_KEPT) * 1.2


def upstream_bitrate(demands: Iterable[float], floor: float, recording_floor: float = 0.0) -> int:
    """A publisher's REMB: what its best-placed viewer would take (at least ``floor``,
    its lowest layer, and ``recording_floor`` while it is recorded), plus its voice."""
    best = max(demands, default=0.0)
    return int(max(best, floor, recording_floor) + AUDIO_ALLOWANCE)
