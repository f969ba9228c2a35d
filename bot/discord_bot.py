"""Discord adapter: the ``/meetnow`` slash command over the gateway, delivery through the outbox.

How a command becomes the meeting's channel message: the interaction reply *is* that message.
The handler answers within Discord's 3 s with the embed and the Join button, then records the
reply through the announcer (its ANNOUNCE entry is delivered by noting the message id: no second
post), then sends the host link in an ephemeral follow-up. Deferring and posting later through
the outbox was rejected: the first follow-up after a deferred reply replaces the public
"thinking" message and keeps its visibility, so a private host link would have to wait for the
outbox. Everything after the reply goes through the outbox (retries, Retry-After, permanent
errors dropped, restarts survived): status edits of that message, recording replies, and the
post itself in the rare case the interaction reply failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Optional

import aiohttp
import discord
import yarl
from aiohttp import web
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.text import E2EE_STATUS, host_link_text
from meeting import ids
from meeting.announcer import Announcer
from meeting.config import DiscordConfig
from meeting.logfmt import kv
from meeting.models import Origin
from meeting.outbox import Outbox
from meeting.service import DEFAULT_TITLE, MeetingService, MintedMeeting, cut_title

from .discord_courier import DiscordCourier, DiscordRest
from .discord_render import FIRST_STATUS, JOIN_LABEL, meeting_embed

log = logging.getLogger(__name__)
# At DEBUG discord.py logs request URLs and bodies: interaction tokens and the private host link.
logging.getLogger("discord.http").setLevel(logging.INFO)
logging.getLogger("discord.webhook.async_").setLevel(logging.INFO)

COMMAND = "meetnow"
# What the bot needs in a channel. Interaction replies and follow-ups need no permission at
# all; editing its own message (live status) needs View Channel; recording replies need Send
# Messages (in Threads), and Read Message History because they reply to a message; Embed Links
# for the card when the outbox has to post it and for the recording link's preview.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, embed_links=True,
    read_message_history=True,
)
INVITE_SCOPES = ("bot", "applications.commands")
LOGIN_RETRY_S = 1.0
LOGIN_RETRY_MAX_S = 300.0

UNKNOWN_COMMAND_TEXT = "I don't know that command. Use /meetnow to start a meeting."
FAILED_TEXT = "Something went wrong on my side. Please try /meetnow again."
NO_CHANNEL_TEXT = "I can't tell which channel this is, so I can't post a meeting here."


def invite_url(application_id: str) -> str:
    """The OAuth2 link that adds the bot to a server with just the permissions it uses."""
    return discord.utils.oauth_url(application_id, permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)


def use_endpoints(config: DiscordConfig) -> None:
    """Point discord.py at the configured REST base and gateway.

    discord.py keeps both as class attributes, so this is process-wide: one Discord
    configuration per process, which is what ``meetnow serve`` runs.
    """
    Route.BASE = config.api_url.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.gateway_url)


def intents() -> discord.Intents:
    """Only the (unprivileged) guilds intent: slash commands arrive without any intent, and
    discord.py's channel and thread state needs guild events to stay consistent."""
    chosen = discord.Intents.none()
    chosen.guilds = True
    return chosen


class UserError(app_commands.AppCommandError):
    """A command the bot will not run, with the text to tell the person privately."""


class _Tree(app_commands.CommandTree):
    """A command tree whose failures are answered, privately, instead of only logged."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        await answer_error(interaction, error)


class _Client(discord.Client):
    """A plain gateway client (not sharded) that syncs its commands after logging in."""

    def __init__(self, guild_ids: tuple[str, ...]) -> None:
        # meetnow never joins voice: discord.py's warnings about missing voice libraries at
        # start-up would only mislead whoever reads the log.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # Nothing this client sends may ping anyone, follow-ups and error replies included.
        super().__init__(intents=intents(), max_ratelimit_timeout=30.0,
                         allowed_mentions=discord.AllowedMentions.none())
        self.tree = _Tree(self)
        self.guild_ids = guild_ids

    async def setup_hook(self) -> None:
        await sync_commands(self.tree, self.guild_ids)

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("discord connected %s", kv(
            bot=self.user.id, guilds=len(self.guilds),
            invite=invite_url(str(self.application_id)) if self.application_id else ""))


async def sync_commands(tree: app_commands.CommandTree, guild_ids: tuple[str, ...]) -> None:
    """Register the commands: per listed guild (available at once) or globally.

    A failure is logged, not raised: commands from an earlier sync still work, and the
    gateway connection is worth keeping either way.
    """
    try:
        if not guild_ids:
            await tree.sync()
            log.info("discord commands synced %s", kv(scope="global"))
            return
        for guild_id in guild_ids:
            guild = discord.Object(id=int(guild_id))
            tree.copy_global_to(guild=guild)
            await tree.sync(guild=guild)
        log.info("discord commands synced %s", kv(scope="guilds", guilds=len(guild_ids)))
    except ValueError:
        log.error("discord commands not synced %s", kv(error="discord.guild_ids must be numeric ids"))
    except discord.HTTPException as exc:
        log.error("discord commands not synced %s", kv(status=exc.status, code=exc.code, error=exc.text[:200]))


async def answer_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """Tell the person, privately, why the command did nothing; never raise."""
    if isinstance(error, UserError):
        text = str(error)
        log.info("discord command refused %s", kv(reason=text[:80]))
    elif isinstance(error, app_commands.CommandNotFound):
        text = UNKNOWN_COMMAND_TEXT
        log.warning("discord unknown command %s", kv(command=error.name[:40]))
    elif isinstance(error, (app_commands.TransformerError, app_commands.CommandSignatureMismatch)):
        text = UNKNOWN_COMMAND_TEXT
        log.warning("discord command mismatch %s", kv(error=type(error).__name__))
    else:
        text = FAILED_TEXT
        cause = getattr(error, "original", error)
        log.error("discord command failed %s", kv(error=type(cause).__name__), exc_info=cause)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.warning("discord error reply failed %s", kv(error=type(exc).__name__))


def checked_options(title: Any, channel: Any, e2ee: Any = False) -> tuple[str | None, bool, bool]:
    """The command's options, or UserError when Discord sent values of the wrong type."""
    if title is not None and not isinstance(title, str):
        raise UserError("The title must be text.")
    if not isinstance(channel, bool):
        raise UserError("The channel option must be True or False.")
    if not isinstance(e2ee, bool):
        raise UserError("The e2ee option must be True or False.")
    if channel and e2ee:
        raise UserError("A channel's standing room cannot be end-to-end encrypted: its link "
                        "would have to keep the key. Use e2ee:True without channel.")
    return (cut_title(title) if title else None), channel, e2ee


def origin_of(interaction: discord.Interaction) -> Origin:
    """Where the command was used: guild ("" in DMs), channel or thread, and who asked."""
    if interaction.channel_id is None:
        raise UserError(NO_CHANNEL_TEXT)
    return Origin("discord", str(interaction.guild_id or ""), str(interaction.channel_id),
                  interaction.user.display_name)


def room_title(interaction: discord.Interaction) -> str:
    """A standing room is named after its channel when the channel has a name."""
    name = getattr(interaction.channel, "name", None)
    return f"#{name}" if isinstance(name, str) and name else DEFAULT_TITLE


class DiscordBot:
    """The Discord side of meetnow: one gateway client, one slash command, one courier."""

    platform = "discord"

    def __init__(self, config: DiscordConfig, meetings: MeetingService, announcer: Announcer,
                 outbox: Outbox) -> None:
        self.config = config
        self.meetings = meetings
        self.announcer = announcer
        self.rest = DiscordRest(config)
        outbox.register(DiscordCourier(self.rest, meetings))
        self.client: _Client | None = None
        self._task: asyncio.Task[None] | None = None

    def attach(self, app: web.Application) -> None:
        """Nothing to mount: Discord delivers interactions over the gateway."""

    def invite_url(self) -> str | None:
        """The invite link for the configured application id (None when it is not set)."""
        app_id = self.config.application_id or (
            str(self.client.application_id) if self.client and self.client.application_id else "")
        return invite_url(app_id) if app_id else None

    async def start(self) -> None:
        """Connect in the background; a bad token or an unreachable Discord is logged, never raised."""
        use_endpoints(self.config)
        self._task = asyncio.create_task(self._run(), name="discord")

    async def stop(self) -> None:
        """Close the gateway connection and the REST session."""
        if self.client is not None:
            await self.client.close()
        if self._task is not None:
            # The client is closed; what is left of the task is returning, or waiting to retry.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.rest.close()

    async def _run(self) -> None:
        """Log in and stay connected. discord.py reconnects a dropped gateway by itself; only
        a login that cannot reach Discord is retried here. A rejected token is final."""
        delay = LOGIN_RETRY_S
        while True:
            self.client = client = self._make_client()
            try:
                await client.start(self.config.token)
                return
            except discord.LoginFailure:
                log.error("discord login failed: the bot token was rejected; check discord.token "
                          "(or MEETNOW_DISCORD_TOKEN) %s", kv(api=self.config.api_url))
                return
            except discord.ConnectionClosed as exc:
                log.error("discord gateway closed the connection %s", kv(code=exc.code, reason=exc.reason))
                return
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError, discord.DiscordServerError) as exc:
                log.warning("discord unreachable, retrying %s", kv(error=type(exc).__name__, retry_in_s=delay))
            except Exception as exc:
                log.error("discord client stopped %s", kv(error=repr(exc)[:200]), exc_info=exc)
                return
            finally:
                if not client.is_closed():
                    await client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, LOGIN_RETRY_MAX_S)

    def _make_client(self) -> _Client:
        client = _Client(self.config.guild_ids)

        @app_commands.command(name=COMMAND, description="Start a video meeting and post its link here")
        @app_commands.describe(
            title="What the meeting is about",
            channel="Use this channel's standing room: the same link every time",
            e2ee="End-to-end encrypted: the key is in the link; no live status or recording",
        )
        @app_commands.allowed_installs(guilds=True, users=False)
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        async def meetnow(interaction: discord.Interaction, title: Optional[str] = None,
                          channel: bool = False, e2ee: bool = False) -> None:
            await self.handle_meetnow(interaction, title, channel, e2ee)

        client.tree.add_command(meetnow)
        return client

    async def handle_meetnow(self, interaction: discord.Interaction, title: Any, channel: Any,
                             e2ee: Any = False) -> None:
        """Mint (or find the standing room), reply with the card, record it, send the host link."""
        clean_title, standing, encrypted = checked_options(title, channel, e2ee)
        origin = origin_of(interaction)
        if encrypted:
            await self._meet_e2ee(interaction, clean_title, origin)
            return
        if standing:
            minted = await self.meetings.channel_room(origin, clean_title or room_title(interaction))
        else:
            minted = await self.meetings.mint(clean_title, origin)
        message_id = await self._reply(interaction, minted)
        # Recorded through the outbox even when the reply is the post: status edits and
        # recording replies find it there, and a failed reply is posted from there instead.
        await self.announcer.announce(minted, str(interaction.id),
                                      {"message_id": message_id} if message_id else {})
        await self._send_host_link(interaction, minted)
        log.info("discord meeting posted %s", kv(
            meeting=ids.short(minted.meeting.id), guild=origin.workspace_id or "dm", standing=standing,
            replied=message_id is not None))

    async def _meet_e2ee(self, interaction: discord.Interaction, title: str | None, origin: Origin) -> None:
        """An end-to-end encrypted meeting: its link holds the key, so the card is the reply
        itself and nothing about it is stored for later edits."""
        minted = MeetingService.with_media_key(await self.meetings.mint(title, origin, e2ee=True))
        if await self._reply(interaction, minted, E2EE_STATUS) is None:
            raise UserError("I could not post the meeting here.")
        await self._send_host_link(interaction, minted)
        log.info("discord e2ee meeting posted %s", kv(meeting=ids.short(minted.meeting.id)))

    async def _reply(self, interaction: discord.Interaction, minted: MintedMeeting,
                     status: dict[str, Any] = FIRST_STATUS) -> str | None:
        """Answer the interaction with the meeting's card; the message id, or None if it failed."""
        embed = discord.Embed.from_dict(meeting_embed(minted.meeting.title, minted.url, status))
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(style=discord.ButtonStyle.link, label=JOIN_LABEL, url=minted.url))
        try:
            response = await interaction.response.send_message(
                embed=embed, view=view, allowed_mentions=discord.AllowedMentions.none())
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("discord reply failed %s", kv(error=type(exc).__name__))
            return await _original_id(interaction)
        if response.message_id is not None:
            return str(response.message_id)
        if isinstance(response.resource, discord.InteractionMessage):
            return str(response.resource.id)
        return await _original_id(interaction)

    async def _send_host_link(self, interaction: discord.Interaction, minted: MintedMeeting) -> None:
        try:
            await interaction.followup.send(host_link_text(minted.host_url), ephemeral=True)
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            # Never retried from storage: the host key is not kept anywhere it could be read back.
            log.warning("discord host link not sent %s", kv(
                meeting=ids.short(minted.meeting.id), error=type(exc).__name__))


async def _original_id(interaction: discord.Interaction) -> str | None:
    """The reply's message id when the callback did not say it (or its answer was lost)."""
    try:
        return str((await interaction.original_response()).id)
    except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError):
        return None
