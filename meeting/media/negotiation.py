"""Offer/answer bookkeeping for one participant's peer connection, with no I/O.

The server always offers and the browser only answers, so there is never glare; what
remains is ordering. Only one offer may be outstanding: changes that happen while an
offer is being made or waits for its answer are coalesced into a single follow-up offer,
made once the answer has been applied. :class:`Negotiation` is that state machine, in
the style of h11: call it with events, act on the decisions it returns.

:func:`plan_lines` decides which m-line carries which stream in the next offer, reusing
m-lines whose stream went away (aiortc never removes an m-line, so the SDP would
otherwise grow with every join and leave).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Sequence


class NegotiationError(Exception):
    """An event that is not allowed in the current state (e.g. an unexpected answer)."""


class State(enum.Enum):
    STABLE = "stable"  # no offer outstanding
    MAKING_OFFER = "making-offer"  # an offer is being built and sent
    AWAITING_ANSWER = "awaiting-answer"  # the offer went out; its answer has not arrived
    APPLYING_ANSWER = "applying-answer"  # an answer is being applied
    CLOSED = "closed"


@dataclass(frozen=True)
class MakeOffer:
    """Decision: build and send offer number ``generation`` now."""

    generation: int


class Negotiation:
    """Serializes offers for one peer and coalesces the changes made meanwhile."""

    def __init__(self) -> None:
        self.state = State.STABLE
        self.dirty = False  # something changed that no sent offer reflects yet
        self.generation = 0

    @property
    def awaiting_answer(self) -> bool:
        return self.state is State.AWAITING_ANSWER

    def changed(self) -> MakeOffer | None:
        """Something this peer sees changed (a join, leave, publish, unpublish)."""
        if self.state is State.CLOSED:
            return None
        self.dirty = True
        return self._next()

    def offer_sent(self) -> None:
        """The offer decided by :class:`MakeOffer` was handed to the signaling layer."""
        self._expect(State.MAKING_OFFER, "offer_sent")
        self.state = State.AWAITING_ANSWER

    def offer_skipped(self) -> MakeOffer | None:
        """The decided offer turned out to change nothing (the changes cancelled out)."""
        if self.state is State.CLOSED:
            return None
        self._expect(State.MAKING_OFFER, "offer_skipped")
        self.state = State.STABLE
        return self._next()

    def offer_failed(self) -> None:
        """Building or sending the offer failed; the changes stay pending.

        No new offer is decided here, so a persistent failure cannot loop: the next
        change (or :meth:`retry`) tries again.
        """
        if self.state is State.CLOSED:
            return
        self._expect(State.MAKING_OFFER, "offer_failed")
        self.state = State.STABLE
        self.dirty = True

    def answer_started(self) -> None:
        """An answer arrived; raises NegotiationError when no offer awaits one."""
        if self.state is not State.AWAITING_ANSWER:
            raise NegotiationError(f"no offer is awaiting an answer (state {self.state.value})")
        self.state = State.APPLYING_ANSWER

    def answer_applied(self) -> MakeOffer | None:
        """The answer was applied; returns the follow-up offer if changes piled up."""
        if self.state is State.CLOSED:
            return None
        self._expect(State.APPLYING_ANSWER, "answer_applied")
        self.state = State.STABLE
        return self._next()

    def answer_rejected(self) -> None:
        """The answer was unusable and nothing changed: the offer still awaits one."""
        if self.state is State.CLOSED:
            return
        self._expect(State.APPLYING_ANSWER, "answer_rejected")
        self.state = State.AWAITING_ANSWER

    def retry(self) -> MakeOffer | None:
        """Offer again if changes are pending and nothing is outstanding."""
        return self._next()

    def close(self) -> None:
        self.state = State.CLOSED

    def _next(self) -> MakeOffer | None:
        if self.state is State.STABLE and self.dirty:
            self.dirty = False
            self.state = State.MAKING_OFFER
            self.generation += 1
            return MakeOffer(self.generation)
        return None

    def _expect(self, state: State, event: str) -> None:
        if self.state is not state:
            raise NegotiationError(f"{event} in state {self.state.value}")


# --- m-line planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """An existing m-line: its position, kind, and the stream it carries (None = idle)."""

    index: int
    kind: str
    key: Hashable | None


@dataclass
class LinePlan:
    """What the next offer does with the m-lines of one direction.

    ``assign`` maps each wanted stream to an existing line index, or to None when a new
    m-line must be added (in ``new`` order). ``release`` lists lines whose stream is no
    longer wanted and that were not reused: they go inactive.
    """

    assign: dict[Hashable, int | None] = field(default_factory=dict)
    new: list[Hashable] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    reuse: dict[Hashable, int] = field(default_factory=dict)


def plan_lines(lines: Sequence[Line], wanted: Mapping[Hashable, str]) -> LinePlan:
    """Assign the ``wanted`` streams (key -> kind) to m-lines.

    A stream already on a line stays there (its viewer stream keeps its SSRC and
    numbering). A new stream reuses the lowest idle line of its kind (idle: carrying
    nothing, or a stream no longer wanted), else needs a new line. Deterministic:
    new streams are placed in ``wanted`` order.
    """
    plan = LinePlan()
    free: dict[str, list[int]] = {}
    for line in sorted(lines, key=lambda x: x.index):
        if line.key is not None and line.key in wanted and line.key not in plan.assign:
            plan.assign[line.key] = line.index
        else:
            free.setdefault(line.kind, []).append(line.index)
    released = {line.index for line in lines if line.key is not None and line.key not in wanted}
    for key, kind in wanted.items():
        if key in plan.assign:
            continue
        candidates = free.get(kind)
        if candidates:
            index = candidates.pop(0)
            plan.assign[key] = index
            plan.reuse[key] = index
            released.discard(index)
        else:
            plan.assign[key] = None
            plan.new.append(key)
    plan.release = sorted(released)
    return plan


def desired_streams(
    participant: str,
    publications: Iterable[tuple[str, str, str]],
) -> dict[tuple[str, str], str]:
    """The streams ``participant`` should receive: every other participant's sources.

    ``publications`` yields ``(publisher, source, kind)`` in room order.
    """
    return {(p, s): k for p, s, k in publications if p != participant}
