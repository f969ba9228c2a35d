"""What happens to meetings, told to whoever listens: the in-process event bus.

Live sessions publish who is present; recordings publish when capture starts and stops and
when a file is ready or about to be deleted. The chat announcer turns these into outbox entries, and the sessions tell
hosts on the meeting page. Events are small frozen dataclasses of plain values, so they
can cross a process or machine boundary as JSON (:func:`to_dict`, :func:`from_dict`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar, Union

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresenceChanged:
    """Who is in a meeting now; ``ended_minutes`` is set once it emptied."""

    meeting_id: str
    present: tuple[str, ...]
    ended_minutes: int | None = None


@dataclass(frozen=True)
class RecordingReady:
    """A recording's file is ready at ``url`` and is kept until ``delete_on`` (a date)."""

    meeting_id: str
    recording_id: str
    url: str
    started_at: str
    delete_on: str


@dataclass(frozen=True)
class RecordingExpiring:
    """A recording will be deleted on ``delete_on``: a last reminder."""

    meeting_id: str
    recording_id: str
    url: str
    delete_on: str


@dataclass(frozen=True)
class RecordingStarted:
    """A meeting's recording began: its row is written and tracks are being captured."""

    meeting_id: str
    recording_id: str


@dataclass(frozen=True)
class RecordingStopped:
    """Capture ended and the row says so; ``compose`` unless the server is shutting down."""

    meeting_id: str
    recording_id: str
    compose: bool


Event = Union[PresenceChanged, RecordingReady, RecordingExpiring, RecordingStarted, RecordingStopped]
_KINDS: dict[str, type] = {kind.__name__: kind for kind in (
    PresenceChanged, RecordingReady, RecordingExpiring, RecordingStarted, RecordingStopped)}
E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None]]


def to_dict(event: Event) -> dict[str, Any]:
    """The event as JSON-ready values, with its kind."""
    return {"kind": type(event).__name__, **dataclasses.asdict(event)}


def from_dict(data: dict[str, Any]) -> Event:
    """The event :func:`to_dict` made; raises ValueError for anything else."""
    fields = dict(data)
    kind = _KINDS.get(fields.pop("kind", None))
    if kind is None:
        raise ValueError("unknown event kind")
    if "present" in fields:
        fields["present"] = tuple(fields["present"])
    try:
        return kind(**fields)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ValueError(f"malformed {kind.__name__}: {exc}") from None


class Bus:
    """Delivers each published event to the handlers subscribed to its kind, in order."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = {}

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Call ``handler`` with every event of ``kind`` from now on."""
        self._handlers.setdefault(kind, []).append(handler)

    async def publish(self, event: Event, strict: bool = False) -> None:
        """Hand the event to every handler; one failing handler never stops the others.

        Failures are logged; with ``strict`` the first one is raised once all handlers ran
        (for callers that retry until the event is delivered).
        """
        failure: Exception | None = None
        for handler in self._handlers.get(type(event), ()):
            try:
                await handler(event)
            except Exception as exc:
                log.exception("event handler failed for %s", type(event).__name__)
                failure = failure or exc
        if strict and failure is not None:
            raise failure
