"""How a meeting looks in Discord, as raw API payloads.

One rendering serves both paths that show a meeting: the interaction reply (through
discord.py) and the outbox's REST edits, so a status edit redraws exactly what the reply drew.
"""

from __future__ import annotations

import re
from typing import Any

from discord.utils import escape_mentions

from bot.text import status_line

JOIN_LABEL = "Join meeting"
EMBED_COLOUR = 0x2F6FEB
# Discord's limits: embed titles 256, field values 1024 characters.
_TITLE_MAX = 256
_FIELD_MAX = 1024

# Nobody is pinged by anything the bot says: titles and names are user input.
NO_MENTIONS: dict[str, Any] = {"parse": []}

FIRST_STATUS: dict[str, Any] = {"present": [], "ended_minutes": None}


# Bare links stay as they are: Discord links them before it reads markdown, and a backslash
# inside one would change where it leads.
_BARE_URL = re.compile(r"(https?://[^\s<]+)")
# Characters that open inline markdown (bold, italics, underline, strike, spoiler, code),
# the backslash itself, and "[" so that "[label](https://...)" never becomes a masked link.
_INLINE = re.compile(r"([\\*_~`|\[])")
# What makes a line a heading, subtext, quote or list item.
_LINE_START = re.compile(r"^(\s*)(#{1,3}\s|-#\s|>>>\s|>\s|[-+]\s|\d+\.\s)", re.MULTILINE)
# <@user>, <@&role>, <#channel>, </command:id>, <:emoji:id>, <t:timestamp>, <id:guide>...
_ANGLE = re.compile(r"<(?=\S)")


def escape(text: str) -> str:
    """Show user text as typed in Discord content, embed titles, descriptions and fields.

    Markdown is escaped with backslashes, which Discord renders away, so "a & b" and
    "**bold**" read as typed; mentions get an invisible zero-width space after ``<`` or
    ``@`` (as discord.py's ``escape_mentions`` does), so they are neither pings (messages
    also carry NO_MENTIONS) nor mention pills or links that look like one.
    """
    parts = _BARE_URL.split(text)
    for index in range(0, len(parts), 2):  # even indexes are the text between bare links
        part = _INLINE.sub(r"\\\1", parts[index])
        parts[index] = _LINE_START.sub(_escape_line_start, part)
    return escape_mentions(_ANGLE.sub("<\u200b", "".join(parts)))


def _escape_line_start(match: re.Match[str]) -> str:
    indent, marker = match.groups()
    if marker[0].isdigit():  # "1. " is a list: escape the dot, a backslash before a digit shows
        number, rest = marker.split(".", 1)
        return f"{indent}{number}\\.{rest}"
    return f"{indent}\\{marker}"


def _cut(text: str, limit: int) -> str:
    # Cutting only drops a tail, so it cannot turn escaped text back into markup.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def meeting_embed(title: str, url: str, status: dict[str, Any]) -> dict[str, Any]:
    """The meeting's card: its title (linked), the join link as text, and the live status."""
    return {
        "type": "rich",
        "title": _cut(escape(title), _TITLE_MAX),
        "url": url,
        "description": url,
        "color": EMBED_COLOUR,
        "fields": [{"name": "Status", "value": _cut(status_line(status, escape=escape), _FIELD_MAX),
                    "inline": False}],
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
