"""What one server takes at once: live meetings and people, counted over all sessions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerLimits:
    """Caps and counts shared by every session of this process."""

    max_meetings: int
    max_people: int
    people: int = 0

    def take_place(self) -> bool:
        """Count one more person in, unless the server is full."""
        if self.people >= self.max_people:
            return False
        self.people += 1
        return True

    def free_place(self) -> None:
        """Someone counted by :meth:`take_place` left."""
        self.people = max(0, self.people - 1)
