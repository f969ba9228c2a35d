"""How a meeting looks in Slack: Block Kit for the channel message, and what we remember of it.

Pure functions only, so the rendering can be read and tested without a network.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import text

JOIN_ACTION = "join_meeting"  # the url button still sends an interaction; bolt acks it
MRKDWN_MAX = 3000  # Slack refuses a text object longer than this, and with it the whole edit
_CUT_ENTITY = re.compile(r"&[a-z]{0,3}$")


def escape(value: str) -> str:
    """Escape text for Slack's mrkdwn and message text: ``&``, ``<`` and ``>``, as Slack asks.

    Mentions (``<!channel>``, ``<@U1>``) and links (``<https://x|label>``) all start with
    ``<``, so an escaped title or name is shown as typed and never pings or disguises a link.
    Only mrkdwn needs this: plain_text fields and Calls API names take the text as it is.
    """
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(value: str) -> dict[str, Any]:
    """A mrkdwn text object holding escaped user text, cut to Slack's limit.

    ``verbatim`` stops Slack's own preprocessing (turning bare URLs, channel names and
    some mentions into links), so only the ``<...>`` we write ourselves is markup.
    """
    if len(value) > MRKDWN_MAX:
        # Many long names, each "&" five characters once escaped: cut, never mid-entity.
        value = _CUT_ENTITY.sub("", value[: MRKDWN_MAX - 1]) + "…"
    return {"type": "mrkdwn", "text": value, "verbatim": True}


def fallback_text(title: str, url: str) -> str:
    """The notification and screen-reader text of the meeting message (mrkdwn, so escaped)."""
    return f"{escape(title)}: {url}"


def _heading(title: str, url: str) -> dict[str, Any]:
    # The link is shown as text too: people copy it into calendars and other chats.
    return {"type": "section", "text": mrkdwn(f"*{escape(title)}*\n<{url}>")}


def meeting_blocks(title: str, url: str, status: dict[str, Any], creator: str = "") -> list[dict[str, Any]]:
    """The meeting message: title, link as text, a Join button, and the live status line."""
    heading = _heading(title, url)
    heading["accessory"] = {
        "type": "button",
        "action_id": JOIN_ACTION,
        "text": {"type": "plain_text", "text": "Join meeting"},
        "url": url,
        "style": "primary",
    }
    context: list[dict[str, Any]] = [mrkdwn(text.status_line(status, escape=escape))]
    if creator:
        context.append(mrkdwn(f"Started by {escape(creator)}"))
    return [heading, {"type": "context", "elements": context}]


def call_blocks(title: str, url: str, call_id: str) -> list[dict[str, Any]]:
    """The Calls API variant: title and link, then Slack's own call card."""
    return [_heading(title, url), {"type": "call", "call_id": call_id}]


def call_users(names: list[str]) -> list[dict[str, str]]:
    """Our participants as Calls API users: not Slack accounts, so external ids.

    Two people may share a name ("Guest"), so the id counts repeats: the second
    "Guest" is ``Guest#2`` and leaving removes exactly one of them.
    """
    seen: dict[str, int] = {}
    users = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        users.append({"external_id": f"{name}#{seen[name]}", "display_name": name})
    return users


@dataclass(frozen=True)
class MessageRef:
    """What later edits and thread replies need, kept as ChatPost.message_ref (JSON)."""

    ts: str
    title: str
    url: str
    creator: str = ""
    # Calls API mode only:
    call_id: str = ""
    user_id: str = ""  # the Slack user who typed the command: calls.add needs a creator
    call_key: str = ""  # base of external_unique_id; a meeting that restarts gets a new call
    calls_made: int = 0
    told: tuple[str, ...] = field(default=())  # names Slack's call card shows now
    call_ended: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        data["told"] = list(self.told)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> "MessageRef":
        """Parse a stored ref; a bare timestamp (older rows, other tools) still works."""
        try:
            data = json.loads(raw)
        except ValueError:
            return cls(ts=raw, title="", url="")
        if not isinstance(data, dict):
            return cls(ts=str(raw), title="", url="")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["told"] = tuple(known.get("told") or ())
        return cls(**known)

    def with_changes(self, **changes: Any) -> "MessageRef":
        """A copy with some fields changed."""
        return replace(self, **changes)
