"""What the bots say, in one place, so Slack and Discord say the same thing.

Titles and names are whatever people typed. Each function that puts them into a sentence
takes the platform's ``escape``, so a title like ``<!channel>`` or ``@everyone`` is shown,
never acted on; the fixed wording around it is written to need no escaping.
"""

from __future__ import annotations

from typing import Any, Callable

Escape = Callable[[str], str]

HELP = (
    "*/meetnow* starts a meeting and posts its link here.\n"
    "• `/meetnow` or `/meetnow <title>`: a new meeting\n"
    "• `/meetnow channel`: this channel's standing room (the same link every time)\n"
    "• `/meetnow e2ee [title]`: an end-to-end encrypted meeting; its key is in the link, so "
    "whoever can read this channel can join (no live status, no recording)\n"
    "• `/meetnow help`: this message\n"
    "Anyone with the link can join from a browser. Your host link (sent only to you) lets you "
    "record and manage the meeting: keep it to yourself."
)


E2EE_STATUS = {"e2ee": True}


def status_line(payload: dict[str, Any], *, escape: Escape) -> str:
    """The live line under a meeting's message: who is in, or how long it lasted."""
    if payload.get("e2ee"):
        # The message carries the key and is never stored, so it is never edited either.
        return ("End-to-end encrypted: the key is in the link, so anyone who can read this "
                "channel can join. No live status or recording.")
    if payload.get("ended_minutes") is not None:
        minutes = payload["ended_minutes"]
        return f"Ended, lasted {minutes} min"
    present = payload.get("present") or []
    if not present:
        return "Nobody is in the meeting yet"
    return "In the meeting: " + ", ".join(escape(str(name)) for name in present)


def host_link_text(host_url: str) -> str:
    """The private message with the host link."""
    return (
        f"Your host link (only you can see this): {host_url}\n"
        "It lets you record and manage the meeting. Share the join link in the channel instead."
    )


def recording_ready_text(title: str, url: str, delete_on: str, *, escape: Escape) -> str:
    """The thread reply when a recording can be downloaded."""
    return f"The recording of {escape(title)} is ready: {url}\nIt will be deleted on {delete_on}."


def recording_expiring_text(title: str, url: str, delete_on: str, *, escape: Escape) -> str:
    """The thread reply a few days before a recording is deleted."""
    return f"The recording of {escape(title)} will be deleted on {delete_on}: {url}"


def cannot_post_text(reason: str) -> str:
    """Told privately to the person who asked when the channel post failed for good."""
    if reason in ("not_in_channel", "channel_not_found", "Missing Access", "Unknown Channel"):
        why = "I am not a member of this channel. Invite me (or use me in a channel I am in)"
    elif reason == "is_archived":
        why = "This channel is archived"
    else:
        why = f"The post failed ({reason})"
    return f"{why}, so I could not post the meeting link here."
