"""What one client address and one socket may ask of this server, per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from meeting.ratelimit import KeyedLimiter, Limiter, LocalLimiter

# Meetings minted over HTTP per client address: plenty for people, little for a script.
MINTS_PER_SECOND = 0.2
MINT_BURST = 20.0
# New signaling sockets (each one a join attempt) per client address.
JOINS_PER_SECOND = 0.5
JOIN_BURST = 10.0


@dataclass
class SocketLimits:
    """Signaling budgets: per socket, and per client address over all its sockets."""

    # Per socket: generous for ICE candidate bursts, tight for floods.
    rate_per_second: float = 50.0
    rate_burst: float = 200.0
    # Per client address: new sockets (each one a join attempt), and messages over all of them.
    # (shared by every node of a cluster)
    connects: Limiter = field(default_factory=lambda: LocalLimiter(JOINS_PER_SECOND, JOIN_BURST))
    messages: KeyedLimiter = field(default_factory=lambda: KeyedLimiter(150.0, 600.0))
