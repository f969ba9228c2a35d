"""Minting and finding meetings, and the links people use to reach them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from meeting import ids
from meeting.logfmt import kv
from meeting.models import Meeting, Origin
from meeting.store.base import Store

log = logging.getLogger(__name__)

TITLE_MAX = 200
DEFAULT_TITLE = "Meeting"


class TitleError(ValueError):
    """A title the service will not keep (too long, or not text)."""


@dataclass(frozen=True)
class MintedMeeting:
    """A new meeting with the two links its maker gets. The host key exists only here."""

    meeting: Meeting
    url: str
    host_url: str


def clean_title(title: str | None) -> str:
    """The title as stored: trimmed, defaulted when empty, rejected when over TITLE_MAX."""
    if title is None:
        return DEFAULT_TITLE
    if not isinstance(title, str):
        raise TitleError("title must be a string")
    title = " ".join(title.split())
    if len(title) > TITLE_MAX:
        raise TitleError(f"title is longer than {TITLE_MAX} characters")
    return title or DEFAULT_TITLE


def cut_title(title: str) -> str:
    """For chat commands, where a long title is cut rather than refused."""
    title = " ".join(title.split())
    return title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"


class MeetingService:
    """Mints permanent meetings and builds their links from the configured public URL."""

    def __init__(
        self,
        store: Store,
        public_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.clock = clock

    async def mint(self, title: str | None, origin: Origin, e2ee: bool = False) -> MintedMeeting:
        """Make and keep a new meeting; raises TitleError for an unusable title.

        For an end-to-end encrypted meeting the links carry no key: whoever makes the key
        (the browser, or a bot with ``with_media_key``) adds it to the fragment and keeps no copy.
        """
        host_key = ids.new_host_key()
        meeting = Meeting(
            id=ids.new_id(), title=clean_title(title), created_at=self.clock(), origin=origin,
            e2ee=e2ee,
        )
        await self.store.add_meeting(meeting, ids.hash_key(host_key))
        log.info("meeting minted %s", kv(meeting=ids.short(meeting.id), origin=origin.kind))
        return MintedMeeting(meeting, self.join_url(meeting.id), self.host_url(meeting.id, host_key))

    async def channel_room(self, origin: Origin, title: str) -> MintedMeeting:
        """The channel's standing room: the same meeting every time, minted on first use.

        Each call hands out a fresh host key, so every person asking gets a host link of
        their own and none is stored in a way that could be shown again.
        """
        existing = await self.store.channel_meeting(origin.kind, origin.workspace_id, origin.channel_id)
        if existing is None:
            minted = await self.mint(title, origin)
            winner = await self.store.set_channel_meeting(
                origin.kind, origin.workspace_id, origin.channel_id, minted.meeting.id)
            if winner == minted.meeting.id:
                return minted
            existing = winner  # another request made the room first: use theirs
        meeting = await self.store.get_meeting(existing)
        assert meeting is not None, "channel rooms cascade with their meetings"
        host_key = ids.new_host_key()
        await self.store.add_host_key(meeting.id, ids.hash_key(host_key))
        return MintedMeeting(meeting, self.join_url(meeting.id), self.host_url(meeting.id, host_key))

    async def get(self, meeting_id: str) -> Meeting | None:
        """The meeting, or None for an unknown or malformed id (no store query for the latter)."""
        if not ids.is_valid_id(meeting_id):
            return None
        return await self.store.get_meeting(meeting_id)

    @staticmethod
    def with_media_key(minted: MintedMeeting) -> MintedMeeting:
        """The same meeting with a fresh E2EE key in both links' fragments, kept nowhere else."""
        key = ids.new_media_key()
        return MintedMeeting(minted.meeting, f"{minted.url}#key={key}", f"{minted.host_url}&key={key}")

    def join_url(self, meeting_id: str) -> str:
        """The link anyone may use to join."""
        return f"{self.public_url}/m/{meeting_id}"

    def host_url(self, meeting_id: str, host_key: str) -> str:
        """The join link plus the host key in the fragment, which browsers never send to servers."""
        return f"{self.join_url(meeting_id)}#host={host_key}"

    async def is_host(self, meeting_id: str, host_key: str | None) -> bool:
        """True when ``host_key`` is one of this meeting's host keys."""
        if not host_key or len(host_key) > 128:
            return False
        return await self.store.is_host_key(meeting_id, ids.hash_key(host_key))
