"""Resume tokens: how a page that lost its connection takes its place back.

Each participant gets a token in their welcome. A page back from a network blip sends it
with its join: it skips the lobby of a locked meeting and replaces its stale connection.
Tokens belong to the session that issued them (a token from another meeting is unknown
here), work once, last a grace period after the participant left, and die at once for
someone a host removed. No I/O; time comes in as an argument.
"""

from __future__ import annotations

import secrets

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

    def __len__(self) -> int:
        return len(self._tokens)
