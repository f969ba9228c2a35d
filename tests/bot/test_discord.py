"""The Discord adapter end to end: the real discord.py against a fake Discord on 127.0.0.1.

The whole server runs (store, web app, signaling, outbox, bot); the fake plays Discord's REST
API and gateway. Tests wait on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.discord_bot import INVITE_PERMISSIONS, UNKNOWN_COMMAND_TEXT, DiscordBot, invite_url
from bot.discord_render import escape
from meeting.announcer import Announcer
from meeting.events import Bus, RecordingExpiring, RecordingReady
from meeting.config import Config, DiscordConfig
from meeting.outbox import Outbox
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.bot.fake_discord import (
    APP_ID, CHANNEL_ID, DM_CHANNEL_ID, GUILD_ID, THREAD_ID, TOKEN, FakeDiscord, command_interaction,
    option, thread_channel,
)
from tests.conftest import make_config, wait_for
from bench.fake_sfu import FakeSfu
from tests.signaling_client import join
from web.server import Server, build_server

MESSAGES = r"/channels/\d+/messages"


@pytest.fixture(autouse=True)
def restore_discord_endpoints() -> Any:
    """discord.py keeps its REST base and gateway as class attributes: put them back."""
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    yield
    Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.close()


def discord_config(fake: FakeDiscord, **changes: Any) -> DiscordConfig:
    return dataclasses.replace(DiscordConfig(token=TOKEN, application_id=APP_ID, api_url=fake.api_url,
                                             gateway_url=fake.gateway_url), **changes)


@dataclass
class Stack:
    """The running server, a web client for it, and the fake Discord it talks to."""

    config: Config
    store: SqliteStore
    server: Server
    client: TestClient
    fake: FakeDiscord

    @property
    def bot(self) -> DiscordBot:
        return next(b for b in self.server.bots if isinstance(b, DiscordBot))

    async def command(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an interaction once the gateway is up; return the callback body it got."""
        await wait_for(lambda: self.fake.ready_sent >= 1)
        await self.fake.send_interaction(payload)
        interaction = self.fake.interactions[payload["id"]]
        await wait_for(lambda: interaction.original is not None)
        return next(c for c in self.fake.callbacks_by_interaction if c[0] == payload["id"])[1]

    async def meetnow(self, *options: dict[str, Any], **where: Any) -> dict[str, Any]:
        """Run /meetnow and wait until its reply is recorded as the meeting's post."""
        callback = await self.command(command_interaction(list(options), **where))
        meeting_id = meeting_id_of(callback)
        await wait_for(lambda: self.store.get_post(meeting_id))
        return callback


async def open_stack(tmp_path: Path, fake: FakeDiscord, **discord: Any) -> Stack:
    config = dataclasses.replace(make_config(tmp_path), discord=discord_config(fake, **discord))
    store = SqliteStore(config.store.path)
    await store.open()
    server = build_server(config, store, sfu=FakeSfu())
    client = TestClient(TestServer(server.app, host="127.0.0.1"))
    await client.start_server()
    await server.start_background()
    return Stack(config, store, server, client, fake)


async def close_stack(stack: Stack) -> None:
    await stack.server.stop_background()
    await stack.client.close()
    await stack.store.close()


@pytest.fixture
async def stack(tmp_path: Path, fake: FakeDiscord) -> AsyncIterator[Stack]:
    running = await open_stack(tmp_path, fake)
    yield running
    await close_stack(running)


def join_url_of(callback: dict[str, Any]) -> str:
    button = callback["data"]["components"][0]["components"][0]
    return button["url"]


def meeting_id_of(callback: dict[str, Any]) -> str:
    return urlsplit(join_url_of(callback)).path.rsplit("/", 1)[1]


def status_of(message: dict[str, Any]) -> str:
    return message["embeds"][0]["fields"][0]["value"]


def reply_message(stack: Stack, index: int = 0) -> dict[str, Any]:
    """The channel message the ``index``-th interaction's reply made, as the fake holds it now."""
    original = list(stack.fake.interactions.values())[index].original
    assert original is not None
    return stack.fake.messages[original["id"]]


# ---- the command


async def test_reply_is_an_embed_with_a_join_button_that_opens_the_meeting(stack: Stack) -> None:
    callback = await stack.meetnow(option("title", "Quarterly planning", 3))

    assert callback["type"] == 4
    data = callback["data"]
    assert not data.get("flags", 0) & 64  # public, in the channel
    url = join_url_of(callback)
    embed = data["embeds"][0]
    assert embed["title"] == "Quarterly planning"
    assert embed["description"] == url
    assert status_of(data) == "Nobody is in the meeting yet"
    button = data["components"][0]["components"][0]
    assert (button["style"], button["label"]) == (5, "Join meeting")

    page = await stack.client.get(urlsplit(url).path)
    assert page.status == 200
    assert "Quarterly planning" in await page.text()

    meeting = await stack.server.meetings.get(meeting_id_of(callback))
    assert meeting is not None
    assert (meeting.origin.kind, meeting.origin.workspace_id, meeting.origin.channel_id,
            meeting.origin.creator_name) == ("discord", GUILD_ID, CHANNEL_ID, "Ann Example")


async def test_host_link_only_in_an_ephemeral_follow_up(stack: Stack) -> None:
    callback = await stack.meetnow()
    await wait_for(lambda: len(stack.fake.followups) == 1)

    followup = stack.fake.followups[0]
    assert followup["flags"] & 64
    host_url = followup["content"].split("(only you can see this): ", 1)[1].split()[0]
    assert host_url.startswith(join_url_of(callback) + "#host=")
    key = host_url.split("#host=", 1)[1]
    assert await stack.server.meetings.is_host(meeting_id_of(callback), key)
    # Nowhere public: not in the reply, not in anything posted or edited in the channel.
    assert "#host=" not in json.dumps(callback)
    public = [m for m in stack.fake.messages.values() if not m["flags"] & 64]
    assert public and "#host=" not in json.dumps(public)


async def test_e2ee_meeting_link_carries_a_key_that_is_stored_nowhere(stack: Stack) -> None:
    callback = await stack.command(command_interaction([option("title", "Board", 3), option("e2ee", True, 5)]))
    url = join_url_of(callback)
    assert "#key=" in url and callback["data"]["embeds"][0]["description"] == url
    key = url.split("#key=", 1)[1]
    assert "End-to-end encrypted" in status_of(callback["data"])
    await wait_for(lambda: len(stack.fake.followups) == 1)
    host_url = stack.fake.followups[0]["content"].split("(only you can see this): ", 1)[1].split()[0]
    assert stack.fake.followups[0]["flags"] & 64 and host_url.endswith(f"&key={key}")
    meeting = await stack.server.meetings.get(meeting_id_of(callback))
    assert meeting is not None and meeting.e2ee
    # Not in any table, nor anywhere in the database files.
    await stack.server.outbox.deliver_due()
    for path in Path(stack.server.config.store.path).parent.glob("*.sqlite3*"):
        assert key.encode() not in path.read_bytes()


async def test_e2ee_standing_room_is_refused(stack: Stack) -> None:
    callback = await stack.command(command_interaction([option("channel", True, 5), option("e2ee", True, 5)]))
    assert callback["data"]["flags"] & 64 and "cannot be end-to-end encrypted" in callback["data"]["content"]


async def test_standing_room_gives_the_same_link_every_time(stack: Stack) -> None:
    first = await stack.meetnow(option("channel", True, 5))
    second = await stack.meetnow(option("channel", True, 5))
    fresh = await stack.meetnow()

    assert join_url_of(first) == join_url_of(second) != join_url_of(fresh)
    assert first["data"]["embeds"][0]["title"] == "#general"
    # Each asker gets a host link of their own.
    await wait_for(lambda: len(stack.fake.followups) == 3)
    assert stack.fake.followups[0]["content"] != stack.fake.followups[1]["content"]


@pytest.mark.parametrize("where, workspace, channel", [
    ({"channel": thread_channel()}, GUILD_ID, THREAD_ID),
    ({"dm": True}, "", DM_CHANNEL_ID),
])
async def test_works_in_threads_and_dms(stack: Stack, where: dict[str, Any], workspace: str, channel: str) -> None:
    callback = await stack.meetnow(**where)

    meeting = await stack.server.meetings.get(meeting_id_of(callback))
    assert meeting is not None
    assert (meeting.origin.workspace_id, meeting.origin.channel_id) == (workspace, channel)
    post = await stack.store.get_post(meeting.id)
    assert post is not None and post.channel_id == channel


async def test_commands_are_synced_globally_with_unprivileged_intents(stack: Stack) -> None:
    await wait_for(lambda: stack.fake.ready_sent >= 1)
    (command,) = stack.fake.commands["global"]
    assert command["name"] == "meetnow"
    assert [(o["name"], o["type"], o.get("required", False)) for o in command["options"]] == [
        ("title", 3, False), ("channel", 5, False), ("e2ee", 5, False)]
    assert command["contexts"] == [0, 1]  # guild channels and DMs with the bot
    # Guilds only: no privileged intent (members 1<<1, presences 1<<8, message content 1<<15).
    assert stack.fake.identifies[0]["intents"] == 1


async def test_commands_are_synced_to_configured_guilds(tmp_path: Path, fake: FakeDiscord) -> None:
    running = await open_stack(tmp_path, fake, guild_ids=(GUILD_ID,))
    try:
        await wait_for(lambda: GUILD_ID in fake.commands)
        assert [c["name"] for c in fake.commands[GUILD_ID]] == ["meetnow"]
        assert "global" not in fake.commands
        # A guild command is answered the same way.
        callback = await running.command(command_interaction())
        assert callback["type"] == 4 and join_url_of(callback)
    finally:
        await close_stack(running)


def test_invite_url_asks_for_the_minimal_permissions() -> None:
    url = invite_url(APP_ID)
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == [APP_ID]
    assert query["scope"] == ["bot applications.commands"]
    granted = int(query["permissions"][0])
    assert granted == INVITE_PERMISSIONS.value
    # View Channel, Send Messages, Send Messages in Threads, Embed Links, Read Message History.
    assert granted == (1 << 10) | (1 << 11) | (1 << 38) | (1 << 14) | (1 << 16)


# ---- live status and recordings


async def test_live_status_edits_the_reply_as_people_join_and_leave(stack: Stack) -> None:
    callback = await stack.meetnow(option("title", "Stand-up", 3))
    meeting_id = meeting_id_of(callback)
    message = reply_message(stack)

    ann, _ = await join(stack.client, meeting_id, "Ann")
    bob, _ = await join(stack.client, meeting_id, "Bob")
    await wait_for(lambda: status_of(message) == "In the meeting: Ann, Bob")
    for person in (ann, bob):
        await person.send({"type": "leave"})
        await wait_for(lambda: person.ws.closed)
    await wait_for(lambda: status_of(message) == "Ended, lasted 1 min")

    edits = stack.fake.requests_to("PATCH", rf"/channels/{CHANNEL_ID}/messages/{message['id']}")
    # Coalesced: the two joins make one edit, the two leaves and the end make one more.
    assert [status_of(r.body) for r in edits] == ["In the meeting: Ann, Bob", "Ended, lasted 1 min"]
    assert message["embeds"][0]["title"] == "Stand-up"
    assert message["components"][0]["components"][0]["url"] == join_url_of(callback)  # button kept


async def test_live_status_ends_when_the_last_socket_just_drops(stack: Stack) -> None:
    callback = await stack.meetnow()
    message = reply_message(stack)
    ann, _ = await join(stack.client, meeting_id_of(callback), "Ann")
    await wait_for(lambda: status_of(message) == "In the meeting: Ann")

    await ann.ws.close()  # a closed tab: no "leave" message
    await wait_for(lambda: status_of(message) == "Ended, lasted 1 min", timeout=3)


async def test_rate_limited_reply_is_retried_after_retry_after_and_posted_once(stack: Stack) -> None:
    callback = await stack.meetnow()
    meeting_id = meeting_id_of(callback)
    stack.fake.rate_limit_next("POST", MESSAGES, retry_after=0.3)

    await stack.server.bus.publish(RecordingReady(meeting_id, "rec-1", "https://rec.example/r/1", "2026-01-30T10:00:00+00:00", "2026-03-01"))
    await wait_for(lambda: len(stack.fake.posts(CHANNEL_ID)) == 1, timeout=15)

    first, second = stack.fake.requests_to("POST", MESSAGES)
    assert second.at - first.at >= 0.3
    (posted,) = stack.fake.posts(CHANNEL_ID)
    assert "https://rec.example/r/1" in posted["content"] and "2026-03-01" in posted["content"]
    assert posted["message_reference"]["message_id"] == reply_message(stack)["id"]

    async def nothing_left() -> bool:
        return await stack.store.outbox_next_due(["discord"]) is None

    # The outbox marks the entry done once Discord's answer is back, just after the fake saw it.
    await wait_for(nothing_left)
    assert len(stack.fake.requests_to("POST", MESSAGES)) == 2


async def test_long_rate_limit_is_left_to_the_outbox_not_slept_through(stack: Stack) -> None:
    callback = await stack.meetnow()
    stack.fake.rate_limit_next("POST", MESSAGES, retry_after=60)

    await stack.server.bus.publish(RecordingExpiring(meeting_id_of(callback), "rec-1", "https://r/1", "2026-03-01"))
    await wait_for(lambda: len(stack.fake.requests_to("POST", MESSAGES)) == 1)

    async def rescheduled() -> bool:
        next_at = await stack.store.outbox_next_due(["discord"])
        return next_at is not None and next_at >= time.time() + 55

    await wait_for(rescheduled)
    assert stack.fake.posts(CHANNEL_ID) == []


async def test_restart_between_failure_and_retry_still_posts_exactly_once(stack: Stack) -> None:
    callback = await stack.meetnow()
    meeting_id = meeting_id_of(callback)
    await stack.server.stop_background()  # from here the test drives the outbox by hand
    # Discord makes the message but the answer is lost: the outbox must retry, and the retry
    # must not post a second message.
    stack.fake.fail_next("POST", MESSAGES, "server_error", after_effect=True)

    store = stack.store
    outbox, bus = Outbox(store), Bus()
    bot = DiscordBot(stack.config.discord, stack.server.meetings, Announcer(stack.server.meetings, outbox, bus), outbox)
    await bus.publish(RecordingReady(meeting_id, "rec-1", "https://rec.example/r/1", "2026-01-30T10:00:00+00:00", "2026-03-01"))
    assert await outbox.deliver_due() == 1
    assert await store.outbox_next_due(["discord"]) is not None  # still pending
    await bot.stop()
    await store.close()

    # A new process: new store connection, outbox and bot over the same file, later.
    store = SqliteStore(stack.config.store.path)
    await store.open()
    try:
        meetings = MeetingService(store, stack.config.server.public_url)
        outbox = Outbox(store, clock=lambda: time.time() + 3600)
        bot = DiscordBot(stack.config.discord, meetings, Announcer(meetings, outbox, Bus()), outbox)
        assert await outbox.deliver_due() == 1
        assert await outbox.deliver_due() == 0
        await bot.stop()
    finally:
        await store.close()

    first, second = stack.fake.requests_to("POST", MESSAGES)
    assert first.body["nonce"] == second.body["nonce"]
    assert len(stack.fake.posts(CHANNEL_ID)) == 1


async def test_a_failed_interaction_reply_is_posted_through_the_outbox(stack: Stack) -> None:
    await wait_for(lambda: stack.fake.ready_sent >= 1)
    stack.fake.fail_next("POST", r"/interactions/.*/callback", status=404,
                         body={"message": "Unknown interaction", "code": 10062})
    await stack.fake.send_interaction(command_interaction([option("title", "Late", 3)]))

    await wait_for(lambda: len(stack.fake.posts(CHANNEL_ID)) == 1)
    (posted,) = stack.fake.posts(CHANNEL_ID)
    assert posted["embeds"][0]["title"] == "Late"
    assert stack.fake.requests_to("POST", MESSAGES)[0].body["allowed_mentions"] == {"parse": []}
    url = posted["components"][0]["components"][0]["url"]
    meeting_id = url.rsplit("/", 1)[1]
    await wait_for(lambda: stack.store.get_post(meeting_id))
    post = await stack.store.get_post(meeting_id)
    assert post is not None and post.message_ref == posted["id"]
    assert "#host=" not in json.dumps(posted)


@pytest.mark.parametrize("error, reason", [
    ("missing_access", "Missing Access (50001)"),
    ("unknown_channel", "Unknown Channel (10003)"),
])
async def test_permanent_errors_are_dropped_with_one_log_line(
        stack: Stack, caplog: pytest.LogCaptureFixture, error: str, reason: str) -> None:
    callback = await stack.meetnow()
    stack.fake.fail_next("POST", MESSAGES, error)
    caplog.set_level(logging.INFO)

    await stack.server.bus.publish(RecordingReady(meeting_id_of(callback), "rec-1", "https://r/1", "2026-01-30T10:00:00+00:00", "2026-03-01"))

    def dropped() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "chat message dropped" in r.getMessage()]

    await wait_for(dropped)
    (line,) = dropped()
    assert reason in line.getMessage() and "platform=discord" in line.getMessage()
    assert len(stack.fake.requests_to("POST", MESSAGES)) == 1  # not retried
    assert await stack.store.outbox_next_due(["discord"]) is None
    assert stack.fake.posts(CHANNEL_ID) == []


# ---- what reaches the channel is shown, never acted on

HOSTILE = "@everyone <@1400000000000000001> <@&1200000000000000001> [Recording](https://evil.example) **now** & co"
# Anything Discord would turn into a ping, a mention pill, a masked link or formatting.
LIVE_MARKUP = re.compile(r"@(everyone|here)|<[@#/:!&]|<a:|<t:|(?<!\\)\[[^\]]*\]\(|(?<!\\)\*\*")


def shown(text: str) -> str:
    """What Discord displays for escaped text: backslash escapes and zero-width spaces gone."""
    return re.sub(r"\\([^A-Za-z0-9\s])", r"\1", text.replace("\u200b", ""))


def assert_inert(text: str) -> None:
    assert LIVE_MARKUP.search(text) is None, text


def assert_pings_nobody(body: dict[str, Any]) -> None:
    allowed = body["allowed_mentions"]
    assert allowed["parse"] == [] and not allowed.get("users") and not allowed.get("roles"), allowed


async def test_hostile_titles_and_names_are_shown_never_acted_on(stack: Stack) -> None:
    callback = await stack.meetnow(option("title", HOSTILE, 3))
    meeting_id = meeting_id_of(callback)
    assert_pings_nobody(callback["data"])
    title = callback["data"]["embeds"][0]["title"]
    assert_inert(title)
    assert shown(title) == HOSTILE
    await wait_for(lambda: len(stack.fake.followups) == 1)
    assert_pings_nobody(stack.fake.followups[0])  # the private host link too

    name = "@here [x](https://evil.example) <@&1200000000000000001>"
    person, _ = await join(stack.client, meeting_id, name)
    message = reply_message(stack)
    await wait_for(lambda: status_of(message) != "Nobody is in the meeting yet")
    (edit,) = stack.fake.requests_to("PATCH", rf"/channels/{CHANNEL_ID}/messages/{message['id']}")
    assert_pings_nobody(edit.body)
    assert_inert(status_of(edit.body))
    assert shown(status_of(edit.body)) == f"In the meeting: {name}"
    await person.send({"type": "leave"})
    await wait_for(lambda: person.ws.closed)

    await stack.server.bus.publish(RecordingReady(meeting_id, "rec-1", "https://rec.example/r/1", "2026-01-30T10:00:00+00:00", "2026-03-01"))
    await wait_for(lambda: len(stack.fake.posts(CHANNEL_ID)) == 1)
    (reply,) = stack.fake.requests_to("POST", MESSAGES)
    assert_pings_nobody(reply.body)
    assert_inert(reply.body["content"])
    assert shown(reply.body["content"]).startswith(f"The recording of {HOSTILE} is ready: https://rec.example/r/1")


@pytest.mark.parametrize("typed", [
    HOSTILE, "# Big news", "-# small print", "> quoted", "1. first", "- item", "snake_case_name",
    "a\\b", "||spoiler|| ~~gone~~ `code` __under__", "<#1300000000000000001> </meetnow:1> <t:1:R> <:e:1>",
])
def test_discord_escape_leaves_nothing_live_and_reads_as_typed(typed: str) -> None:
    escaped = escape(typed)
    assert_inert(escaped)
    assert shown(escaped) == typed


@pytest.mark.parametrize("plain", ["R&D sync", "#general", "Stand-up", "Q3: 50% done", "see https://x.example/a_b"])
def test_discord_escape_leaves_ordinary_titles_alone(plain: str) -> None:
    assert escape(plain) == plain


# ---- bad input and bad days


async def test_unknown_command_gets_an_ephemeral_error(stack: Stack) -> None:
    callback = await stack.command(command_interaction(name="meetlater"))

    assert callback["type"] == 4
    assert callback["data"]["flags"] & 64
    assert callback["data"]["content"] == UNKNOWN_COMMAND_TEXT
    assert stack.fake.followups == []


@pytest.mark.parametrize("bad", [option("title", 42, 4), option("channel", "yes", 3), option("title", "1400000000000000009", 6)])
async def test_wrong_option_types_get_an_ephemeral_error(stack: Stack, bad: dict[str, Any]) -> None:
    callback = await stack.command(command_interaction([bad]))

    assert callback["data"]["flags"] & 64
    assert "must be" in callback["data"]["content"]
    assert stack.fake.followups == []
    # The bot is still fine: the next command works.
    assert join_url_of(await stack.command(command_interaction()))


@pytest.mark.parametrize("code", [4000, 1000])
async def test_gateway_disconnect_resumes_and_the_next_interaction_works(stack: Stack, code: int) -> None:
    await stack.meetnow()
    await stack.fake.drop_gateway(code)
    await wait_for(lambda: len(stack.fake.resumes) == 1)

    callback = await stack.command(command_interaction())
    assert join_url_of(callback)
    assert len(stack.fake.identifies) == 1  # resumed, not a new session
    assert stack.fake.resumes[0]["session_id"] == "fake-session"


async def test_invalid_token_logs_one_clear_error_and_the_server_keeps_serving(
        tmp_path: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    running = await open_stack(tmp_path, fake, token="not-the-token")
    try:
        def errors() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.levelno >= logging.ERROR]

        await wait_for(errors)
        await wait_for(lambda: running.bot._task is not None and running.bot._task.done())
        (line,) = errors()
        assert "discord login failed" in line.getMessage() and "token was rejected" in line.getMessage()
        assert "not-the-token" not in caplog.text
        assert fake.connections == []

        health = await running.client.get("/healthz")
        assert health.status == 200
        created = await running.client.post("/api/meetings", json={"title": "still up"})
        assert created.status == 201
    finally:
        await close_stack(running)


async def test_discord_unreachable_at_start_is_retried(
        tmp_path: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.discord_bot.LOGIN_RETRY_S", 0.05)
    fake.fail_next("GET", "/users/@me", status=503, body={"message": "upstream unavailable", "code": 0})
    running = await open_stack(tmp_path, fake)
    try:
        callback = await running.command(command_interaction())
        assert join_url_of(callback)
        assert len(fake.requests_to("GET", "/users/@me")) == 2
        assert [r.getMessage() for r in caplog.records if r.name == "bot.discord_bot" and r.levelno >= logging.WARNING] \
            == ["discord unreachable, retrying error=DiscordServerError retry_in_s=0.05"]
    finally:
        await close_stack(running)
