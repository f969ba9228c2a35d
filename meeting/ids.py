"""Meeting ids and host keys: random, URL-safe, and never logged whole."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

ID_BYTES = 16  # 128 bits: not guessable, short enough to paste
KEY_BYTES = 24  # host keys are bearer secrets: a little longer

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def new_id() -> str:
    """A fresh meeting (or recording) id: 128 random bits, base64url without padding."""
    return secrets.token_urlsafe(ID_BYTES)


def new_host_key() -> str:
    """A fresh host key: 192 random bits, base64url without padding."""
    return secrets.token_urlsafe(KEY_BYTES)


def new_media_key() -> str:
    """A fresh end-to-end media key: 256 random bits, base64url, for a URL fragment only."""
    return secrets.token_urlsafe(32)


def decode_token(token: str) -> bytes | None:
    """The bytes behind a base64url token, or None if it is not one."""
    if not _TOKEN.match(token) or len(token) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def is_valid_id(token: str) -> bool:
    """True when ``token`` has the shape of an id this service mints."""
    raw = decode_token(token) if len(token) <= 64 else None
    return raw is not None and len(raw) == ID_BYTES


def hash_key(key: str) -> str:
    """What the store keeps of a host key: a leaked database grants no host powers.

    Keys are looked up by this hash, so comparing them leaks nothing about the key itself.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def short(token: str) -> str:
    """A prefix fit for logs: enough to correlate lines, too little to join a meeting."""
    return token[:4] + "…"
