"""TURN credentials in coturn's shared-secret scheme (``use-auth-secret``, the "TURN REST API").

The username is ``<expiry as unix seconds>:<tag>`` and the password is
base64(HMAC-SHA1(secret, username)). coturn derives the same password from its
``static-auth-secret`` and refuses a username whose expiry has passed, so a credential handed
to a page is worth nothing an hour later, and the secret itself never leaves the server.

coturn checks the expiry when an allocation is made; an allocation made in time lives on
through its refreshes (checked with coturn 4.6.1), so a long meeting keeps its relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from aiortc import RTCIceServer


def turn_password(secret: str, username: str) -> str:
    """The password coturn expects for ``username`` under ``static-auth-secret = secret``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class TurnCredential:
    """One username and password, valid until ``expires_at`` (unix seconds)."""

    username: str
    password: str
    expires_at: int


def mint_credential(secret: str, expires_at: int, tag: str) -> TurnCredential:
    """A credential for ``tag`` (any text without a colon) that expires at ``expires_at``."""
    username = f"{expires_at}:{tag}"
    return TurnCredential(username, turn_password(secret, username), expires_at)


class TurnCredentials:
    """Mints credentials for the configured TURN servers: one per joining page, and a shared
    one for the server's own peers that is replaced once half its lifetime has passed."""

    def __init__(self, urls: Sequence[str], secret: str, ttl: int,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a TURN secret is needed")
        self.relay_urls = [u for u in urls if u.startswith(("turn:", "turns:"))]
        self.stun_urls = [u for u in urls if u.startswith("stun:")]
        self.ttl = ttl
        self.clock = clock
        self._secret = secret
        self._server: TurnCredential | None = None

    def __repr__(self) -> str:  # never the secret, even in a traceback's locals
        return f"TurnCredentials(urls={self.relay_urls + self.stun_urls!r}, ttl={self.ttl})"

    def mint(self) -> TurnCredential:
        """A fresh credential valid for ``ttl`` seconds from now. The tag is random, so one
        person's relay use can be told from another's in coturn's logs, and is not the meeting's."""
        return mint_credential(self._secret, int(self.clock()) + self.ttl, secrets.token_hex(4))

    def for_page(self) -> list[dict[str, Any]]:
        """RTCIceServer dictionaries for one joining page, with a credential of its own."""
        servers: list[dict[str, Any]] = []
        if self.relay_urls:
            credential = self.mint()
            servers.append({"urls": list(self.relay_urls), "username": credential.username,
                            "credential": credential.password})
        if self.stun_urls:
            servers.append({"urls": list(self.stun_urls)})
        return servers

    def for_server(self) -> list[RTCIceServer]:
        """aiortc ICE servers for a new server-side peer. aiortc uses the first TURN URL it
        supports (UDP or TCP; TLS over TCP), so list the UDP one first."""
        servers = []
        if self.relay_urls:
            now = self.clock()
            if self._server is None or self._server.expires_at - now < self.ttl / 2:
                self._server = self.mint()
            servers.append(RTCIceServer(urls=list(self.relay_urls), username=self._server.username,
                                        credential=self._server.password))
        if self.stun_urls:
            servers.append(RTCIceServer(urls=list(self.stun_urls)))
        return servers
