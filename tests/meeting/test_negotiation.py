"""The offer/answer state machine and m-line planning, with no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meeting.media.negotiation import (
    Line,
    MakeOffer,
    Negotiation,
    NegotiationError,
    State,
    desired_streams,
    plan_lines,
)


def test_first_change_makes_an_offer():
    n = Negotiation()
    assert n.changed() == MakeOffer(1)
    assert n.state is State.MAKING_OFFER
    n.offer_sent()
    assert n.awaiting_answer


def test_changes_while_an_offer_is_outstanding_coalesce_into_one_follow_up():
    n = Negotiation()
    assert n.changed() == MakeOffer(1)
    assert n.changed() is None  # while making the offer
    n.offer_sent()
    assert n.changed() is None  # while awaiting the answer
    assert n.changed() is None
    n.answer_started()
    assert n.changed() is None  # while applying the answer
    assert n.answer_applied() == MakeOffer(2)
    n.offer_sent()
    n.answer_started()
    assert n.answer_applied() is None  # nothing new happened
    assert n.state is State.STABLE


def test_answer_without_an_offer_is_an_error_and_changes_nothing():
    n = Negotiation()
    with pytest.raises(NegotiationError):
        n.answer_started()
    assert n.state is State.STABLE
    n.changed()
    with pytest.raises(NegotiationError):
        n.answer_started()  # the offer is still being made, not sent
    assert n.state is State.MAKING_OFFER


def test_a_rejected_answer_leaves_the_offer_outstanding():
    n = Negotiation()
    n.changed()
    n.offer_sent()
    n.answer_started()
    n.answer_rejected()
    assert n.awaiting_answer
    n.answer_started()
    assert n.answer_applied() is None


def test_an_offer_that_changes_nothing_can_be_skipped():
    n = Negotiation()
    n.changed()
    assert n.offer_skipped() is None
    assert n.state is State.STABLE
    n.changed()
    n.changed()  # while making the offer
    assert n.offer_skipped() == MakeOffer(3)  # the later change still gets its offer


def test_a_failed_offer_keeps_changes_pending_without_looping():
    n = Negotiation()
    n.changed()
    n.offer_failed()
    assert n.state is State.STABLE and n.dirty
    assert n.retry() == MakeOffer(2)


def test_closed_negotiation_ignores_everything():
    n = Negotiation()
    n.changed()
    n.offer_sent()
    n.close()
    assert n.changed() is None
    n.offer_failed()
    with pytest.raises(NegotiationError):
        n.answer_started()


def test_events_out_of_order_raise():
    n = Negotiation()
    with pytest.raises(NegotiationError):
        n.offer_sent()
    with pytest.raises(NegotiationError):
        n.answer_applied()


@given(st.lists(st.sampled_from(["change", "sent", "answer", "reject", "fail", "applied"]), max_size=60))
def test_at_most_one_offer_is_ever_outstanding(events):
    n = Negotiation()
    outstanding = 0
    for event in events:
        try:
            if event == "change":
                decision = n.changed()
            elif event == "sent":
                n.offer_sent()
                decision = None
            elif event == "answer":
                n.answer_started()
                decision = None
            elif event == "reject":
                n.answer_rejected()
                decision = None
            elif event == "fail":
                n.offer_failed()
                outstanding -= 1
                decision = None
            else:
                decision = n.answer_applied()
                outstanding -= 1
        except NegotiationError:
            continue
        if decision is not None:
            outstanding += 1
        assert outstanding in (0, 1)
        assert (outstanding == 1) == (n.state is not State.STABLE)


def test_plan_adds_lines_for_new_streams_in_order():
    plan = plan_lines([], {("bob", "mic"): "audio", ("bob", "camera"): "video"})
    assert plan.new == [("bob", "mic"), ("bob", "camera")]
    assert plan.assign == {("bob", "mic"): None, ("bob", "camera"): None}
    assert plan.release == []


def test_plan_keeps_streams_on_their_lines():
    lines = [Line(0, "audio", ("bob", "mic")), Line(1, "video", ("bob", "camera"))]
    plan = plan_lines(lines, {("bob", "mic"): "audio", ("bob", "camera"): "video"})
    assert plan.assign == {("bob", "mic"): 0, ("bob", "camera"): 1}
    assert plan.new == [] and plan.release == [] and plan.reuse == {}


def test_plan_releases_departed_streams():
    lines = [Line(0, "audio", ("bob", "mic")), Line(1, "video", ("carol", "camera"))]
    plan = plan_lines(lines, {("bob", "mic"): "audio"})
    assert plan.release == [1]


def test_plan_reuses_idle_lines_of_the_same_kind():
    lines = [
        Line(2, "audio", None),
        Line(3, "video", None),
        Line(4, "video", ("carol", "camera")),  # carol left
    ]
    plan = plan_lines(lines, {("dave", "camera"): "video", ("dave", "screen"): "video", ("dave", "mic"): "audio"})
    assert plan.assign == {("dave", "camera"): 3, ("dave", "screen"): 4, ("dave", "mic"): 2}
    assert plan.new == []
    assert plan.release == []  # line 4 was reused, not released


def test_plan_never_puts_audio_on_a_video_line():
    plan = plan_lines([Line(0, "video", None)], {("bob", "mic"): "audio"})
    assert plan.assign == {("bob", "mic"): None}


@given(
    st.lists(st.tuples(st.sampled_from(["audio", "video"]), st.one_of(st.none(), st.integers(0, 6))), max_size=8),
    st.sets(st.integers(0, 8), max_size=8),
)
def test_plan_assigns_each_line_at_most_once(existing, wanted_ids):
    lines = [Line(i, kind, ("p", key) if key is not None else None) for i, (kind, key) in enumerate(existing)]
    # a key keeps one kind: derive it from the id
    wanted = {("p", k): ("audio" if k % 2 else "video") for k in wanted_ids}
    lines = [ln for ln in lines if ln.key is None or wanted.get(ln.key, ln.kind) == ln.kind]
    plan = plan_lines(lines, wanted)
    used = [i for i in plan.assign.values() if i is not None]
    assert len(used) == len(set(used))
    kinds = {ln.index: ln.kind for ln in lines}
    for key, index in plan.assign.items():
        if index is not None:
            assert kinds[index] == wanted[key]
    assert set(plan.assign) == set(wanted)
    assert not set(plan.release) & set(used)


def test_desired_streams_are_everyone_elses_sources():
    pubs = [("alice", "mic", "audio"), ("bob", "mic", "audio"), ("bob", "screen", "video")]
    assert desired_streams("alice", pubs) == {("bob", "mic"): "audio", ("bob", "screen"): "video"}
