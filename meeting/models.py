"""The meeting as the core sees it: who made it, where, and how its host is recognised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ORIGIN_KINDS = ("web", "cli", "slack", "discord")
CHAT_ORIGINS = ("slack", "discord")


@dataclass(frozen=True)
class Origin:
    """Where a meeting was made; chat origins say which workspace/guild and channel."""

    kind: str
    workspace_id: str = ""
    channel_id: str = ""
    creator_name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ORIGIN_KINDS:
            raise ValueError(f"unknown origin kind {self.kind!r}")


@dataclass(frozen=True)
class Meeting:
    """A permanent meeting. It never expires."""

    id: str
    title: str
    created_at: datetime
    origin: Origin
    # End-to-end encrypted: media and chat are encrypted in the browsers with a key the
    # server never sees; the server forwards what it cannot read and cannot record.
    e2ee: bool = False
