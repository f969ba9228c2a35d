"""A host's "please mute" requests waiting for an answer: who asked whom, under which id.

Each request gets an id nobody can guess; only the person asked can answer it, once. A host
asks a person at most once at a time, so prompts cannot pile up on anyone's screen. Each
open request holds the timer that ends it unanswered; the session sends the messages.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Ask:
    """One open request: ``host`` asked ``target`` (participant ids) to mute."""

    request: str
    host: str
    target: str


class MuteAsks:
    """The open mute requests of one meeting."""

    def __init__(self) -> None:
        self._open: dict[str, Ask] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def ask(self, host: str, target: str, seconds: float, expired: Callable[[str], None]) -> Ask | None:
        """A new request, or None while this host's last one to this person is unanswered.

        ``expired(request)`` is called if nobody answers within ``seconds``.
        """
        if any(a.host == host and a.target == target for a in self._open.values()):
            return None
        ask = Ask(secrets.token_urlsafe(9), host, target)
        self._open[ask.request] = ask
        self._timers[ask.request] = asyncio.get_running_loop().call_later(seconds, expired, ask.request)
        return ask

    def answer(self, request: str, target: str) -> Ask | None:
        """Close the request if ``target`` is the person it asked; None for anything else."""
        ask = self._open.get(request)
        if ask is None or ask.target != target:
            return None
        return self._close(request)

    def expire(self, request: str) -> Ask | None:
        """Close a request nobody answered in time (None if it was answered meanwhile)."""
        return self._close(request) if request in self._open else None

    def gone(self, participant: str) -> list[Ask]:
        """Close every request by or to someone who left, and return them."""
        closed = [a for a in self._open.values() if participant in (a.host, a.target)]
        for ask in closed:
            self._close(ask.request)
        return closed

    def close(self) -> None:
        """Forget every request, and their timers (the meeting is over)."""
        for request in list(self._open):
            self._close(request)

    def _close(self, request: str) -> Ask:
        timer = self._timers.pop(request, None)
        if timer is not None:
            timer.cancel()
        return self._open.pop(request)

    def __len__(self) -> int:
        return len(self._open)
