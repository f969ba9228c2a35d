"""How a meeting looks in Discord, as raw API payloads.

One rendering serves both paths that show a meeting: the interaction reply (through
discord.py) and the outbox's REST edits, so a status edit redraws exactly what the reply drew.
"""

from __future__ import annotations

from typing import Any

from bot.text import status_line

JOIN_LABEL = "Join meeting"
EMBED_COLOUR = 0x2F6FEB
# Discord's limits: embed titles 256, field values 1024 characters.
_TITLE_MAX = 256
_FIELD_MAX = 1024

# Nobody is pinged by anything the bot says: titles and names are user input.
NO_MENTIONS: dict[str, Any] = {"parse": []}

FIRST_STATUS: dict[str, Any] = {"present": [], "ended_minutes": None}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def meeting_embed(title: str, url: str, status: dict[str, Any]) -> dict[str, Any]:
    """The meeting's card: its title (linked), the join link as text, and the live status."""
    return {
        "type": "rich",
        "title": _cut(title, _TITLE_MAX),
        "url": url,
        "description": url,
        "color": EMBED_COLOUR,
        "fields": [{"name": "Status", "value": _cut(status_line(status), _FIELD_MAX), "inline": False}],
    }


def join_components(url: str) -> list[dict[str, Any]]:
    """One action row with a link button; link buttons open the URL and send no interaction."""
    button = {"type": 2, "style": 5, "label": JOIN_LABEL, "url": url}
    return [{"type": 1, "components": [button]}]


def meeting_message(title: str, url: str, status: dict[str, Any] = FIRST_STATUS) -> dict[str, Any]:
    """A whole channel message showing the meeting (used when the outbox has to post it)."""
    return {
        "embeds": [meeting_embed(title, url, status)],
        "components": join_components(url),
        "allowed_mentions": NO_MENTIONS,
    }
