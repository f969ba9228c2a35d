"""Choosing qualities per viewer: ladders, the shared budget, congestion, probes, upstream."""

from __future__ import annotations

import pytest

from meeting.media import quality
from meeting.media.ladder import PAUSE_FLOOR, LayerInfo, Want, allocate, ladder, wanted_layer
from meeting.media.quality import Downlink, publisher_floor, upstream_bitrate
from meeting.media.vp8 import NO_TID

# A camera in two layers with three temporal layers each (libwebrtc's split: 40/20/40 %).
LOW = LayerInfo(0, 320, 240, True, (60_000.0, 30_000.0, 60_000.0, 0.0), True, 150_000)
HIGH = LayerInfo(1, 640, 480, True, (280_000.0, 140_000.0, 280_000.0, 0.0), True, 700_000)
CAMERA = (LOW, HIGH)


def want(key: str, tile: int | None = 640, current: tuple[int, int] | None = None, layers=CAMERA) -> Want:
    return Want(key, ladder(layers, tile), (tile or 1000) ** 2, current, ladder(layers, tile, flowing_only=False))


def probing(remb: float = 300_000, rtts: tuple[float, ...] = ()) -> tuple[Downlink, list[Want]]:
    """A viewer of two low layers, with a probe started at 0.2 s from ``remb`` (after
    receiver reports measuring ``rtts``, 0.1 s apart)."""
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    for i, rtt in enumerate(rtts):
        d.on_report(0.0, rtt, i * 0.1)
    d.on_remb(remb, 0.0, 200_000)
    assert d.decide(0.2, 200_000, wants).probe is not None
    return d, wants


def test_a_tile_needs_the_smallest_layer_that_covers_it():
    assert wanted_layer(CAMERA, 300) == 0  # a thumbnail
    assert wanted_layer(CAMERA, 400) == 0  # 320 covers 80% of it
    assert wanted_layer(CAMERA, 401) == 1
    assert wanted_layer(CAMERA, None) == 1  # not told: the best
    assert wanted_layer(CAMERA, 0) == 0  # not shown


def test_ladders_go_up_by_frame_rate_then_by_layer():
    steps = ladder(CAMERA, 800)
    assert [(s.layer, s.max_tid) for s in steps] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    assert [s.bitrate for s in steps] == [60_000, 90_000, 150_000, 420_000, 700_000]
    assert steps[-1].sends == 150_000 + 700_000  # the publisher sends both layers for it
    assert [(s.layer, s.max_tid) for s in ladder(CAMERA, 200)] == [(0, 0), (0, 1), (0, 2)]
    stopped = LayerInfo(1, 640, 480, live=False, peak=700_000)
    assert [s.layer for s in ladder((LOW, stopped), 800)] == [0, 0, 0]
    assert ladder((LOW, stopped), 800, flowing_only=False)[-1].bitrate == 700_000


def test_without_temporal_layers_a_layer_is_one_step():
    plain = (LayerInfo(0, 640, 480, True, (0.0, 0.0, 0.0, 500_000.0), False, 500_000),)
    assert [(s.layer, s.max_tid, s.bitrate) for s in ladder(plain, 800)] == [(0, NO_TID, 500_000)]


def test_every_stream_gets_its_floor_before_any_gets_more():
    wants = [want("a", 800), want("b", 800), want("c", 800)]
    levels, spent = allocate(300_000, wants)
    assert levels == {"a": 1, "b": 1, "c": 1} and spent == 270_000  # 15 fps each
    levels, _ = allocate(170_000, wants)
    assert levels == {"a": 1, "b": 0, "c": -1}  # the third does not fit: paused
    levels, _ = allocate(2_500_000, wants)
    assert levels == {"a": 4, "b": 4, "c": 4}


def test_larger_tiles_go_first():
    wants = [want("thumb", 200), want("pinned", 1200)]
    levels, _ = allocate(600_000, wants)
    assert (levels["pinned"], levels["thumb"]) == (3, 2)  # 420 + 150 kbit/s
    levels, _ = allocate(200_000, wants)
    assert (levels["pinned"], levels["thumb"]) == (1, 1)  # but frame rates go up together
    levels, _ = allocate(100_000, wants)
    assert (levels["pinned"], levels["thumb"]) == (1, -1)  # the thumbnail pauses first


def test_a_stream_that_cannot_be_made_cheaper_is_not_paused_for_its_cost():
    plain = (LayerInfo(0, 640, 480, True, (0.0, 0.0, 0.0, 500_000.0), False, 500_000),)
    levels, _ = allocate(300_000, [want("a", 800, layers=plain)])
    assert levels == {"a": 0}
    levels, _ = allocate(PAUSE_FLOOR - 1, [want("a", 800, layers=plain)])
    assert levels == {"a": -1}


def test_congestion_cuts_the_budget_at_once_and_the_choice_follows():
    d = Downlink()
    wants = [want("a", current=(1, 2)), want("b", current=(1, 2))]
    d.on_remb(3_000_000, 0.0, 1_400_000)
    choice = d.decide(0.2, 1_400_000, wants)
    assert {k: (s.layer, s.max_tid) for k, s in choice.choices.items()} == {"a": (1, 2), "b": (1, 2)}
    d.on_remb(400_000, 0.4, 1_400_000)  # it fell below what is sent: congestion
    choice = d.decide(0.6, 1_400_000, wants)
    assert choice.estimate == 400_000
    assert sum(s.bitrate for s in choice.choices.values()) <= 400_000 * quality.KEEP
    assert d.congestions == 1 and d.limited(0.6)


def test_a_falling_remb_above_what_is_sent_is_not_congestion():
    d = Downlink()
    d.on_remb(3_000_000, 0.0, 400_000)
    d.on_remb(600_000, 1.0, 400_000)  # the estimator's ceiling (1.5x what arrives) came down
    assert d.congestions == 0


def test_choices_do_not_flap_between_keep_and_upgrade():
    d = Downlink()
    d.on_remb(720_000, 0.0, 0)
    choice = d.decide(0.2, 700_000, [want("a", current=(1, 2))]).choices["a"]
    assert (choice.layer, choice.max_tid) == (1, 2)  # 700 kbit/s: kept within the budget...
    d2 = Downlink()
    d2.on_remb(760_000, 0.0, 0)
    choice = d2.decide(0.2, 420_000, [want("a", current=(1, 1))]).choices["a"]
    assert (choice.layer, choice.max_tid) == (1, 1)  # ...but not chosen anew above 90% of it


def test_a_probe_that_holds_raises_the_budget():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(430_000, 0.0, 300_000)  # ~1.5x of two low layers: the estimator's ceiling
    first = d.decide(0.2, 300_000, wants)
    assert first.probe == 430_000 * quality.PROBE_GAIN
    assert all(s.layer == 0 for s in first.choices.values())
    d.on_remb(450_000, 0.8, 600_000)  # reported during the probe, still rising
    later = d.decide(1.3, 300_000, wants)
    assert later.estimate == 645_000
    assert later.choices["a"].layer == 1 and later.choices["b"].layer == 0  # 420 + 150 < 0.9 x 645k
    assert later.probe is not None and later.probe > 645_000  # the next step at once


def test_a_probe_the_viewer_says_nothing_about_does_not_hold():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(420_000, 0.0, 300_000)
    assert d.decide(0.2, 300_000, wants).probe is not None
    assert d.decide(1.3, 300_000, wants).probe is not None  # no REMB yet: it goes on a little
    after = d.decide(0.2 + quality.PROBE_SILENCE, 300_000, wants)
    assert after.probe is None and after.estimate == 420_000 and d.probes_failed == 1


def test_a_probe_that_meets_congestion_stops_and_backs_off():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(450_000, 0.0, 300_000)
    assert d.decide(0.2, 300_000, wants).probe is not None
    d.on_remb(280_000, 0.5, 600_000)  # fell under what is sent with the probe
    after = d.decide(0.6, 300_000, wants)
    assert after.probe is None and d.probes_failed == 1
    assert d.next_probe == 0.5 + quality.PROBE_BACKOFF[0] and d.backoff == 2 * quality.PROBE_BACKOFF[0]
    assert d.decide(2.0, 280_000, wants).probe is None  # not before the backoff ends
    assert d.decide(2.6, 280_000, wants).probe is not None


def test_a_probe_the_estimate_does_not_rise_through_fails_and_the_next_asks_for_less():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(240_000, 0.0, 200_000)
    assert d.decide(0.2, 200_000, wants).probe == 240_000 * quality.PROBE_GAIN
    d.on_remb(240_000, 0.8, 360_000)  # flat: the estimator holds, near the link's limit
    after = d.decide(1.3, 200_000, wants)
    assert after.probe is None and after.estimate == 240_000 and d.probes_failed == 1
    # Once a probe failed, the next ones creep up until two in a row hold.
    targets = []
    for start in (d.next_probe + 0.1, d.next_probe + 1.5, d.next_probe + 2.9):
        decision = d.decide(start, 200_000, wants)
        targets.append(decision.probe)
        d.on_remb(d.remb * 1.03, start + 0.5, 300_000)  # rising a little: near the limit
        d.decide(start + 1.1, 200_000, wants)  # held: the estimate rose during it
    assert targets[0] == 240_000 * quality.PROBE_GAIN_AFTER_FAILURE
    assert targets[1] is not None and targets[1] / targets[0] < 1.3
    assert targets[2] is not None and targets[2] / targets[1] == pytest.approx(quality.PROBE_GAIN)  # two held
    assert d.held_in_a_row == 3


def test_probes_double_while_the_estimate_rises_fast_through_them():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2)), want("c", current=(0, 2))]
    d.on_remb(100_000, 0.0, 80_000)
    gains = []
    now = 0.2
    for rise in (1.10, 1.10, 1.10, 1.02, 1.10):
        budget = d.estimate()
        decision = d.decide(now, 200_000, wants)
        assert decision.probe is not None
        gains.append(round(decision.probe / budget, 2))
        d.on_remb(d.remb * rise, now + 0.5, 300_000)
        d.decide(now + 1.1, 200_000, wants)  # held
        now = d.next_probe + 0.1
    # Two held while the estimator was in its fast (multiplicative) increase: the link is far
    # from its limit, probes double; a rise of a few percent says it is near: back to 1.5x.
    assert gains == [quality.PROBE_GAIN, quality.PROBE_GAIN, quality.PROBE_GAIN_FAST, quality.PROBE_GAIN_FAST,
                     quality.PROBE_GAIN]


def test_an_estimate_rising_on_its_own_after_a_failed_probe_ends_the_backoff():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(240_000, 0.0, 200_000)
    assert d.decide(0.2, 200_000, wants).probe is not None
    d.on_remb(240_000, 0.8, 360_000)
    d.decide(1.3, 200_000, wants)  # failed: flat
    assert d.next_probe > 2.0
    d.on_remb(260_000, 1.8, 200_000)
    assert d.decide(2.0, 200_000, wants).probe is None  # still waiting
    d.on_remb(240_000 * quality.PROBE_RECOVERED, 2.1, 200_000)  # the limit went away, or seems to
    probe = d.decide(2.2, 200_000, wants).probe
    assert probe == pytest.approx(240_000 * quality.PROBE_RECOVERED * quality.PROBE_GAIN)  # full steps again


def test_a_probe_that_meets_a_queue_stops_at_once():
    d, wants = probing(rtts=(0.02,))
    d.on_report(0.0, 0.02 + quality.PROBE_QUEUE + 0.2, 0.4)  # one report late (a busy computer): it goes on
    d.on_report(0.0, 0.03, 0.5)
    assert d.probe is not None
    d.on_report(0.0, 0.02 + quality.PROBE_QUEUE + 0.01, 0.6)  # the probe's packets wait in a queue...
    assert d.probe is not None
    d.on_report(0.0, 0.02 + quality.PROBE_QUEUE + 0.02, 0.7)  # ...and still do
    assert d.probe is None and d.probes_failed == 1 and d.congestions == 0
    assert d.estimate() == 300_000


def test_a_browser_answering_reports_late_neither_stops_nor_holds_back_probes():
    # A browser short of CPU: its reports come back late; a probe starts all the same.
    d, wants = probing(rtts=(0.02, 0.8))
    for now, rtt in ((0.4, 0.9), (0.6, 1.2), (0.8, 1.1)):
        d.on_report(0.0, rtt, now)
        d.on_remb(300_000 + now * 20_000, now, 400_000)  # while its estimate rises
        assert d.probe is not None
    d.decide(1.3, 200_000, wants)
    assert d.probes_failed == 0 and d.probed == 450_000


def test_a_probe_that_holds_above_a_loss_ceiling_lifts_it():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(400_000, 0.0, 0)
    d.decide(0.05, 300_000, wants)
    d.on_report(0.4, 0.02, 0.1)  # heavy loss: a ceiling under what is sent
    assert d.ceiling == 300_000 * (1 - 0.5 * d.loss)
    d.on_report(0.0, 0.02, 1.9)
    d.on_report(0.0, 0.02, 2.0)
    decision = d.decide(2.2, 240_000, wants)
    assert d.ceiling is not None and decision.estimate == d.ceiling < 400_000
    # The link is probed above the ceiling (carefully: the loss ended the probe of 0.05).
    assert d.probes_failed == 1 and decision.probe == d.ceiling * quality.PROBE_GAIN_AFTER_FAILURE
    d.on_remb(420_000, 2.6, 300_000)
    d.decide(3.3, 240_000, wants)
    assert d.ceiling is None and d.estimate() >= 400_000


def test_heavy_loss_sets_a_ceiling_that_rises_again():
    d = Downlink()
    d.on_remb(1_000_000, 0.0, 0)
    d.decide(0.05, 600_000, [])  # what the viewer is sent now
    d.on_report(0.02, 0.05, 0.1)
    d.on_report(0.12, 0.05, 0.15)  # one unlucky report of random loss: smoothed under the limit
    assert d.loss < quality.LOSS_LIMIT and d.estimate() == 1_000_000
    d.on_report(0.4, 0.05, 0.2)  # a queue overflowing
    assert d.loss > quality.LOSS_LIMIT
    cut = 600_000 * (1 - 0.5 * d.loss)  # half the loss under what it is sent
    assert d.estimate() == pytest.approx(cut)
    d.on_report(0.4, 0.05, 1.0)
    assert d.estimate() == pytest.approx(cut)  # reported again within the hold: no second cut
    for t in (1.1, 1.2, 1.3):
        d.on_report(0.0, 0.05, t)  # quiet again
    assert d.loss < quality.LOSS_LIMIT
    d.decide(3.2, 400_000, [])
    assert d.estimate() == pytest.approx(cut * (1 + quality.CEILING_RISE * 3.0))
    d.on_report(0.0, 0.5, 3.3)  # a late report: nothing is cut
    assert d.congestions == 1
    d.decide(3.9, 100_000, [])
    d.on_report(0.9, 0.05, 4.0)
    assert d.estimate() == quality.CEILING_FLOOR  # never under what one video needs
    for t in (4.1, 4.2, 4.3, 4.4, 4.5):
        d.on_report(0.0, 0.05, t)
    for t in range(6, 40):
        d.decide(float(t), 100_000, [])
    assert d.ceiling is None and d.estimate() == 1_000_000


def test_a_probed_rate_the_estimate_never_follows_is_forgotten():
    d = Downlink()
    d.on_remb(400_000, 0.0, 300_000)
    d.probed, d.probed_at = 600_000.0, 0.0
    d.decide(1.0, 300_000, [])
    assert d.estimate() == 600_000
    d.decide(quality.PROBED_FOR + 0.1, 300_000, [])
    assert d.estimate() == 400_000


def test_a_stream_paused_stays_paused_a_moment():
    d = Downlink()
    wants = [want("a", 800, current=(0, 0))]
    d.on_remb(200_000, 0.0, 60_000)
    d.on_remb(50_000, 0.1, 60_000)
    assert d.decide(0.2, 60_000, wants).choices["a"] is None
    d.on_remb(1_000_000, 0.5, 0)
    wants = [want("a", 800, current=None)]
    assert d.decide(1.0, 0, wants).choices["a"] is None
    assert d.decide(0.2 + quality.RESUME_HOLD, 0, wants).choices["a"] is not None


def test_the_weak_viewer_case_gives_every_publisher_fifteen_fps():
    d = Downlink()
    wants = [want(k, 640, current=(1, 2)) for k in "abc"]
    d.on_remb(2_000_000, 0.0, 2_000_000)
    d.on_remb(300_000, 1.0, 2_000_000)  # a 500 kbit/s link, three voices on it too
    choice = d.decide(1.2, 2_000_000, wants)
    assert {(s.layer, s.max_tid) for s in choice.choices.values()} == {(0, 1)}


def test_demands_follow_the_tiles_until_a_link_is_seen_to_be_limited():
    d = Downlink()
    wants = [want("a", 800, current=(0, 2)), want("b", 200, current=(0, 2))]
    d.on_remb(300_000, 0.0, 200_000)
    demands = d.decide(0.2, 200_000, wants).demands
    assert demands["a"] == 850_000 * quality.HEADROOM  # both layers of the large tile, and room to grow
    assert demands["b"] == 150_000 * quality.HEADROOM  # a thumbnail's low layer
    d.on_remb(150_000, 0.5, 200_000)  # congestion: now it asks for what it can take
    demands = d.decide(0.6, 200_000, wants).demands
    assert demands["a"] <= 150_000 * 2


def test_a_publisher_is_asked_for_what_its_best_viewer_takes():
    assert upstream_bitrate([200_000, 1_800_000, 90_000], floor=180_000) == 1_800_000 + quality.AUDIO_ALLOWANCE
    assert upstream_bitrate([], floor=180_000) == 180_000 + quality.AUDIO_ALLOWANCE
    assert upstream_bitrate([200_000], floor=180_000, recording_floor=1_000_000) == 1_000_000 + quality.AUDIO_ALLOWANCE


def test_a_publisher_is_asked_for_enough_to_keep_every_layer_flowing():
    low = LayerInfo(0, 320, 240, peak=120_000)
    high = LayerInfo(1, 640, 480, peak=900_000)
    # Nobody needs the best layer now: it is kept alive, not at its full rate.
    assert publisher_floor([low, high]) == (120_000 + quality.TOP_KEPT) * 1.2
    assert publisher_floor([high]) == 900_000 * 1.2  # one layer: that layer at its rate
    assert publisher_floor([]) == 0.0


def test_a_viewer_sent_nothing_for_a_while_gets_video_back():
    # Its estimate fell while everything was paused; it says nothing new about video it
    # does not receive, so the budget must rise by itself.
    d = Downlink()
    wants = [want(k, current=None) for k in "abc"]
    d.on_remb(60_000, 0.0, 0)
    assert all(s is None for s in d.decide(0.5, 0, wants).choices.values())
    assert all(s is None for s in d.decide(0.5 + quality.STARVED_FOR - 0.1, 0, wants).choices.values())
    later = d.decide(0.5 + quality.STARVED_FOR + 0.1, 0, wants)
    back = [s for s in later.choices.values() if s is not None]
    assert back and later.estimate == PAUSE_FLOOR / quality.UPGRADE
    assert sum(s.bitrate for s in back) <= PAUSE_FLOOR  # the cheapest qualities that fit
    # Once video flows again, the viewer's own estimate rules.
    d.decide(5.0, 300_000, wants)
    assert d.estimate() == 60_000


def test_a_probe_that_holds_below_what_the_link_refused_does_not_end_the_backoff():
    d = Downlink()
    wants = [want("a", current=(0, 2)), want("b", current=(0, 2))]
    d.on_remb(240_000, 0.0, 200_000)
    assert d.decide(0.2, 200_000, wants).probe == 360_000
    d.on_remb(240_000, 0.8, 360_000)
    d.decide(1.3, 200_000, wants)  # refused (flat): 360 kbit/s is too much
    assert d.backoff == 2 * quality.PROBE_BACKOFF[0]
    small = d.decide(d.next_probe + 0.1, 200_000, wants).probe
    assert small is not None and small < 360_000
    d.on_remb(246_000, d.next_probe + 0.6, 300_000)
    d.decide(d.next_probe + 1.2, 200_000, wants)  # held, below what was refused...
    assert d.held_in_a_row == 1 and d.backoff == 2 * quality.PROBE_BACKOFF[0]  # ...the backoff stands
    # The next step goes at once; refused again, the wait doubles instead of starting over.
    started = d.next_probe + 0.1
    assert d.decide(started, 200_000, wants).probe is not None
    d.on_remb(246_000, started + 0.6, 300_000)
    d.decide(started + 1.1, 200_000, wants)
    assert d.next_probe == started + 1.1 + 2 * quality.PROBE_BACKOFF[0]
    # A probe that holds at or above what the link refused says it changed: the backoff ends.
    d.on_remb(246_000 * quality.PROBE_RECOVERED, d.next_probe + 0.1, 200_000)
    started = d.next_probe + 0.2
    target = d.decide(started, 200_000, wants).probe
    assert target is not None and target >= 360_000
    d.on_remb(300_000, started + 0.6, 400_000)
    d.decide(started + 1.1, 200_000, wants)
    assert d.backoff == quality.PROBE_BACKOFF[0]


def test_a_probe_stops_when_the_estimate_falls_by_steps_through_it():
    d, wants = probing()
    d.on_remb(310_000, 0.4, 400_000)
    d.on_remb(300_000, 0.6, 400_000)  # under 97% of 310k: the viewer saw its queue grow...
    # ...though no single step fell 5%, which would count as congestion.
    assert d.probe is None and d.probes_failed == 1 and d.congestions == 0
    assert d.next_probe == 0.6 + quality.PROBE_BACKOFF[0]


def test_a_probe_goes_on_while_the_estimate_holds_or_rises():
    d, wants = probing()
    for now, remb in ((0.4, 305_000), (0.6, 298_000), (0.8, 312_000)):
        d.on_remb(remb, now, 400_000)
        assert d.probe is not None
    d.decide(1.3, 200_000, wants)
    assert d.probes_failed == 0 and d.probed > 300_000
