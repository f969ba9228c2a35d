"""Chat platform adapters. Each is thin: parse the command, call ``meeting``, render, deliver."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from meeting.announcer import Announcer
from meeting.config import Config
from meeting.outbox import Outbox
from meeting.service import MeetingService

from .slack_requests import SeenSignatures


class ChatBot(Protocol):
    """What the server does with a configured bot: mount, start, stop."""

    platform: str

    def attach(self, app: web.Application) -> None:
        """Add the bot's HTTP routes, if it has any, before the app starts."""

    async def start(self) -> None:
        """Connect (gateway, Socket Mode). A bad token is logged clearly; it never raises."""

    async def stop(self) -> None:
        """Disconnect."""


def configured_bots(config: Config, meetings: MeetingService, announcer: Announcer,
                    outbox: Outbox, seen: SeenSignatures | None = None) -> list[ChatBot]:
    """The bots the configuration asks for; none when no chat settings are given.

    ``seen`` remembers Slack request signatures (shared by the nodes of a cluster).
    """
    bots: list[ChatBot] = []
    if config.slack.bot_token:
        from .slack import SlackBot

        bots.append(SlackBot(config.slack, meetings, announcer, outbox, seen))
    if config.discord.token:
        from .discord_bot import DiscordBot

        bots.append(DiscordBot(config.discord, meetings, announcer, outbox))
    return bots
