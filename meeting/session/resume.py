"""Resume tokens: how a page that lost its connection takes its place back.

Each participant gets a token in their welcome. A page back from a network blip sends it
with its join: it skips the lobby of a locked meeting and replaces its stale connection.
Tokens belong to the session that issued them (a token from another meeting is unknown
here), work once, last a grace period after the participant left, and die at once for
someone a host removed. No I/O; time comes in as an argument.

When everyone drops at once (a server hiccup, a shared network's blip), the session ends
with its tokens still good: :class:`LeftBehind` carries them, with the meeting's lock, to
the next session of the meeting, so pages coming back find it as they left it and a locked
meeting does not open to whoever arrives in between.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

GRACE = 60.0  # seconds a token stays good after its participant left


class ResumeTokens:
    """The live tokens of one meeting session."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (participant id, expiry)

    def issue(self, participant_id: str) -> str:
        """A new token for a participant, good until they leave (and a grace period)."""
        token = secrets.token_urlsafe(16)
        self._tokens[token] = (participant_id, float("inf"))
        return token

    def take(self, token: str | None, now: float) -> str | None:
        """The participant whose place ``token`` takes back, if it is good; it is spent."""
        if not token:
            return None
        participant_id, expires = self._tokens.pop(token, ("", 0.0))
        return participant_id if now < expires else None

    def left(self, participant_id: str, now: float, barred: bool) -> None:
        """The participant left: their tokens last GRACE more seconds, or none if ``barred``."""
        until = now if barred else now + GRACE
        for token, (pid, expires) in list(self._tokens.items()):
            if pid == participant_id:
                expires = min(expires, until)
                self._tokens[token] = (pid, expires)
            if expires <= now:
                del self._tokens[token]

    def knows(self, participant_id: str) -> bool:
        """Whether a token of this participant may still be good."""
        return any(pid == participant_id for pid, _ in self._tokens.values())

    def good_until(self, now: float) -> float | None:
        """When the last token that is still good expires (None: none is good)."""
        live = [expires for _, expires in self._tokens.values() if expires > now]
        return max(live) if live else None

    def __len__(self) -> int:
        return len(self._tokens)


@dataclass(frozen=True)
class LeftBehind:
    """What an ended session hands the meeting's next one while pages may still come back."""

    locked: bool
    tokens: ResumeTokens
    granted: frozenset[str]  # participants handed the host role (see the session)
    until: float  # monotonic time after which nothing here is good
