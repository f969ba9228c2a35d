"""The Slack adapter end to end: real slack-bolt and slack_sdk against a fake Slack on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

import meeting.outbox as outbox_module
from bot.slack import EVENTS_PATH, SlackBot
from bot.slack_blocks import MRKDWN_MAX, MessageRef, call_users, escape, meeting_blocks
from bot.slack_requests import MemorySeenSignatures
from bot import text
from meeting.announcer import Announcer
from meeting.events import Bus, RecordingExpiring, RecordingReady
from meeting.config import Config, SlackConfig
from meeting.models import Origin
from meeting.outbox import ANNOUNCE, STATUS, ChatPost, Delivered, GiveUp, Outbox, OutboxEntry, Retry
from meeting.service import TITLE_MAX, MeetingService
from meeting.store.sqlite import SqliteStore
from bench.fake_slack import (
    APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, TEAM_ID, FakeSlack, command_payload, form, sign,
)
from tests.conftest import wait_for
from bench.fake_sfu import FakeSfu
from tests.signaling_client import join
from web.server import Server, build_server

HOST_MARK = "#host="
URL = re.compile(r"https?://[^\s<>|]+/m/[A-Za-z0-9_-]+")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.close()
    # Whatever a test did, no host link ever reached a channel (every Web API call is one).
    for call in fake.calls:
        assert HOST_MARK not in json.dumps(call.args), call.method


def with_slack(config: Config, fake: FakeSlack, **slack: Any) -> Config:
    settings = {"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "api_url": fake.api_url, **slack}
    return dataclasses.replace(config, slack=SlackConfig(**settings))


@asynccontextmanager
async def running(config: Config, store: SqliteStore) -> AsyncIterator[tuple[Server, TestClient]]:
    """The whole server as ``meetnow serve`` builds it, with its bots and outbox running."""
    server = build_server(config, store, sfu=FakeSfu())
    async with TestClient(TestServer(server.app)) as client:
        await server.start_background()
        try:
            yield server, client
        finally:
            await server.stop_background()


async def slash(client: TestClient, fake: FakeSlack, text_: str = "", *, secret: str = SIGNING_SECRET,
                timestamp: int | None = None, **fields: Any) -> Any:
    body = form(command_payload(text_, response_url=fake.response_url(), **fields))
    return await client.post(EVENTS_PATH, data=body, headers=sign(body, secret, timestamp))


async def settled(store: SqliteStore) -> bool:
    """True once the outbox has nothing left to try."""
    async with store.db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) == 0


async def count_pending(store: SqliteStore) -> int:
    async with store.db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND attempts > 0") as cursor:
        row = await cursor.fetchone()
    return int(row[0])


async def count(store: SqliteStore, table: str) -> int:
    async with store.db.execute(f"SELECT COUNT(*) FROM {table}") as cursor:
        row = await cursor.fetchone()
    return int(row[0])


def block_url(post: dict[str, Any]) -> str:
    """The join link as the channel sees it: in the text blocks and on the button."""
    blocks = post["blocks"]
    heading = blocks[0]
    found = URL.findall(heading["text"]["text"])
    assert found, heading
    if "accessory" in heading:
        assert heading["accessory"]["text"]["text"] == "Join meeting"
        assert heading["accessory"]["url"] == found[0]
    return found[0]


def status_text(call_args: dict[str, Any]) -> str:
    return call_args["blocks"][1]["elements"][0]["text"]


# -- the slash command over HTTP -----------------------------------------------------------


async def test_signed_command_answers_privately_and_posts_a_link_that_opens_the_meeting(
        config: Config, store: SqliteStore, fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(with_slack(config, fake), store) as (_, client):
        response = await slash(client, fake, "Design review")
        assert response.status == 200
        answer = await response.json()
        assert answer["response_type"] == "ephemeral"
        assert HOST_MARK in answer["text"]

        await wait_for(lambda: fake.done("chat.postMessage"))
        [post] = fake.done("chat.postMessage")
        [call] = fake.attempts("chat.postMessage")
        assert call.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
        assert post["channel"] == "C0GENERAL"
        assert "Design review" in post["blocks"][0]["text"]["text"]
        url = block_url(post)
        assert url in post["text"] and answer["text"].split(HOST_MARK)[0].endswith(url.split("/m/")[1])
        assert status_text(post) == "Nobody is in the meeting yet"

        page = await client.get("/m/" + url.rsplit("/m/", 1)[1])
        assert page.status == 200
        assert "Design review" in await page.text()
        assert await count(store, "meetings") == 1
    # Even at DEBUG, no log line carries the host link or a token.
    assert HOST_MARK not in caplog.text and BOT_TOKEN not in caplog.text


async def test_e2ee_link_is_posted_once_and_its_key_stored_nowhere(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (server, client):
        response = await slash(client, fake, "e2ee Board meeting")
        answer = await response.json()
        assert answer["response_type"] == "ephemeral" and "&key=" in answer["text"]
        await wait_for(lambda: fake.done("chat.postMessage"))
        [post] = fake.done("chat.postMessage")
        assert "Board meeting" in post["blocks"][0]["text"]["text"]
        key = post["blocks"][0]["accessory"]["url"].split("#key=", 1)[1]
        assert answer["text"].rstrip().split("&key=", 1)[1].startswith(key)
        assert "End-to-end encrypted" in status_text(post)
        meeting_id = post["blocks"][0]["accessory"]["url"].split("/m/", 1)[1].split("#")[0]
        assert (await store.get_meeting(meeting_id)).e2ee
        # People join and leave: nothing is edited (the message holds the key and is not kept).
        socket, _ = await join(client, meeting_id, "Ann")
        await socket.send({"type": "leave"})
        await server.outbox.deliver_due()
        assert fake.done("chat.update") == []
        assert await count(store, "outbox") == 0
    for path in Path(config.store.path).parent.glob("*.sqlite3*"):
        assert key.encode() not in path.read_bytes()


async def test_help_is_private_and_mints_nothing(config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        answer = await (await slash(client, fake, "  HELP ")).json()
        assert answer == {"text": text.HELP, "response_type": "ephemeral"}
        assert await count(store, "meetings") == 0
        assert await count(store, "outbox") == 0


async def test_standing_room_gives_the_same_link_every_time(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        first = await (await slash(client, fake, "channel", user_name="alice")).json()
        second = await (await slash(client, fake, "channel", user_id="U0BOB", user_name="bob")).json()
        await wait_for(lambda: len(fake.done("chat.postMessage")) == 2)
        urls = [block_url(p) for p in fake.done("chat.postMessage")]
        assert urls[0] == urls[1]
        assert first["text"] != second["text"]  # each asker gets a host key of their own
        assert await count(store, "meetings") == 1
        # Another channel has a room of its own.
        await slash(client, fake, "channel", channel_id="C0OTHER", channel_name="other")
        await wait_for(lambda: len(fake.done("chat.postMessage")) == 3)
        assert block_url(fake.done("chat.postMessage")[2]) != urls[0]
        assert "#other" in fake.done("chat.postMessage")[2]["text"]


async def test_unknown_words_are_a_title_and_long_titles_are_cut(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        await slash(client, fake, "channel sync <!channel>")
        await slash(client, fake, "x" * 500)
        await wait_for(lambda: len(fake.done("chat.postMessage")) == 2)
        first, second = fake.done("chat.postMessage")
        assert "channel sync &lt;!channel&gt;" in first["blocks"][0]["text"]["text"]
        assert "<!channel>" not in first["blocks"][0]["text"]["text"]
        cut = second["blocks"][0]["text"]["text"].split("*")[1]
        assert len(cut) == TITLE_MAX and cut.endswith("…")


async def test_slack_escaped_command_text_is_stored_as_typed(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        await slash(client, fake, "R&amp;D &lt;weekly&gt;")  # how Slack sends "R&D <weekly>"
        await wait_for(lambda: fake.done("chat.postMessage"))
        [post] = fake.done("chat.postMessage")
        meeting_id = block_url(post).rsplit("/m/", 1)[1]
        assert (await store.get_meeting(meeting_id)).title == "R&D <weekly>"
        assert "R&amp;D &lt;weekly&gt;" in post["blocks"][0]["text"]["text"]  # escaped once, for Slack


async def test_direct_message_command_works(config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        answer = await (await slash(client, fake, "", channel_id="D0ALICE", channel_name="directmessage")).json()
        assert HOST_MARK in answer["text"]
        await wait_for(lambda: fake.done("chat.postMessage"))
        assert fake.done("chat.postMessage")[0]["channel"] == "D0ALICE"
        assert "*Meeting*" in fake.done("chat.postMessage")[0]["blocks"][0]["text"]["text"]


@pytest.mark.parametrize("how", ["forged", "wrong_secret", "missing", "stale", "future", "malformed_signature",
                                 "malformed_timestamp"])
async def test_bad_signatures_are_refused_and_nothing_is_stored(
        how: str, config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        body = form(command_payload("sneaky", response_url=fake.response_url()))
        headers = sign(body)
        if how == "forged":
            headers["X-Slack-Signature"] = "v0=" + "0" * 64
        elif how == "wrong_secret":
            headers = sign(body, secret="not-the-secret")
        elif how == "missing":
            headers = {"Content-Type": headers["Content-Type"]}
        elif how == "stale":  # a replay of a real request, six minutes later
            headers = sign(body, timestamp=int(time.time()) - 360)
        elif how == "future":  # signed four minutes ahead: still "fresh" for 9 minutes
            headers = sign(body, timestamp=int(time.time()) + 240)
        elif how == "malformed_signature":
            headers["X-Slack-Signature"] = "v0=" + "zz" * 32
        else:
            headers["X-Slack-Request-Timestamp"] = "1_700_000_000"
        response = await client.post(EVENTS_PATH, data=body, headers=headers)
        assert response.status == 401
        assert await count(store, "meetings") == 0
        assert await count(store, "outbox") == 0
        assert not fake.attempts("chat.postMessage") and not fake.responses


async def test_a_replayed_request_is_refused_and_changes_nothing(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        body = form(command_payload("Replay me", response_url=fake.response_url()))
        headers = sign(body)
        first = await client.post(EVENTS_PATH, data=body, headers=headers)
        assert first.status == 200 and HOST_MARK in (await first.json())["text"]
        await wait_for(lambda: settled(store))
        outbox_rows = await count(store, "outbox")

        again = await client.post(EVENTS_PATH, data=body, headers=headers)  # byte for byte
        assert again.status == 401
        assert HOST_MARK not in await again.text()
        assert await count(store, "meetings") == 1
        assert await count(store, "outbox") == outbox_rows
        await wait_for(lambda: settled(store))
        assert len(fake.attempts("chat.postMessage")) == 1 and not fake.responses


async def test_a_request_slightly_ahead_of_our_clock_is_accepted(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        response = await slash(client, fake, "Skewed", timestamp=int(time.time()) + 20)
        assert response.status == 200 and HOST_MARK in (await response.json())["text"]


async def test_ssl_check_is_answered_without_a_signature_and_runs_nothing(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        body = form({"ssl_check": "1", "token": "x", "command": "/meetnow", "text": "sneaky"})
        response = await client.post(EVENTS_PATH, data=body,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status == 200 and await response.text() == ""
        assert await count(store, "meetings") == 0


async def test_refused_requests_log_the_reason_and_nothing_of_the_request(
        config: Config, store: SqliteStore, fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_url = fake.response_url("hooks-T0FAKE-response-secret")
    body = form(command_payload("Quarterly numbers", response_url=secret_url))
    genuine = sign(body)
    async with running(with_slack(config, fake), store) as (_, client):

        async def refused(headers: dict[str, str]) -> str:
            """What was logged while one refused request was answered."""
            await wait_for(lambda: settled(store))
            start = len(caplog.records)
            assert (await client.post(EVENTS_PATH, data=body, headers=headers)).status == 401
            return "\n".join(r.getMessage() for r in caplog.records[start:])

        logged = {"bad_signature": await refused({**genuine, "X-Slack-Signature": "v0=" + "0" * 64})}
        assert (await client.post(EVENTS_PATH, data=body, headers=genuine)).status == 200
        logged["replayed"] = await refused(genuine)
        logged["stale_timestamp"] = await refused(sign(body, timestamp=int(time.time()) - 400))
    for reason, lines in logged.items():
        for leaked in ("hooks-T0FAKE-response-secret", "response_url", "Quarterly", "deprecated-verification-token",
                       genuine["X-Slack-Signature"][3:], SIGNING_SECRET):
            assert leaked not in lines, (reason, leaked)
        assert f"slack request refused reason={reason}" in lines, lines


async def test_join_button_click_is_acknowledged(config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        payload = {"type": "block_actions", "team": {"id": TEAM_ID}, "user": {"id": "U0ALICE"},
                   "api_app_id": "A0FAKE", "token": "x", "trigger_id": "t.1",
                   "actions": [{"action_id": "join_meeting", "type": "button", "action_ts": "1"}],
                   "channel": {"id": "C0GENERAL"}, "container": {"type": "message"}}
        body = form({"payload": json.dumps(payload)})
        assert (await client.post(EVENTS_PATH, data=body, headers=sign(body))).status == 200


async def test_without_slack_settings_nothing_slack_is_served(config: Config, store: SqliteStore) -> None:
    async with running(config, store) as (server, client):
        assert server.bots == []
        assert (await client.post(EVENTS_PATH, data="x")).status in (404, 405)


# -- Socket Mode ---------------------------------------------------------------------------


async def test_command_over_socket_mode(config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    settings = with_slack(config, fake, socket_mode=True, app_token=APP_TOKEN, signing_secret="")
    async with running(settings, store) as (_, client):
        assert fake.socket_connected
        [opened] = fake.attempts("apps.connections.open")
        assert opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"
        assert (await client.post(EVENTS_PATH, data="x")).status in (404, 405)  # no HTTP endpoint

        envelope = await fake.send_envelope(command_payload("Socket sync", response_url=fake.response_url()))
        await wait_for(lambda: envelope in fake.acks)
        assert fake.acks[envelope]["response_type"] == "ephemeral"
        assert HOST_MARK in fake.acks[envelope]["text"]
        await wait_for(lambda: fake.done("chat.postMessage"))
        assert "Socket sync" in fake.done("chat.postMessage")[0]["text"]

        # Slack asks clients to move to a new connection from time to time.
        await fake.send_disconnect()
        await wait_for(lambda: len(fake.attempts("apps.connections.open")) == 2 and fake.socket_connected)
        help_envelope = await fake.send_envelope(command_payload("help", response_url=fake.response_url()))
        await wait_for(lambda: help_envelope in fake.acks)
        assert fake.acks[help_envelope]["text"] == text.HELP
        assert await count(store, "meetings") == 1
    await wait_for(lambda: not fake.socket_connected)  # stop() disconnected


async def test_bad_app_token_is_one_clear_line_and_the_server_keeps_serving(
        config: Config, store: SqliteStore, fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = with_slack(config, fake, socket_mode=True, app_token="xapp-revoked")
    async with running(settings, store) as (_, client):
        assert (await client.get("/healthz")).status == 200
        assert not fake.socket_connected
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert "app token was refused" in problems[0].getMessage()
    assert "invalid_auth" in problems[0].getMessage()
    assert "xapp-revoked" not in caplog.text


async def test_bad_bot_token_is_one_clear_line(
        config: Config, store: SqliteStore, fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    settings = with_slack(config, fake, bot_token="xoxb-wrong")
    async with running(settings, store) as (_, client):
        assert (await client.get("/healthz")).status == 200
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and "bot token was refused" in problems[0], problems
    assert "xoxb-wrong" not in caplog.text


# -- live status ---------------------------------------------------------------------------


async def test_live_status_follows_people_joining_and_leaving(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (_, client):
        await slash(client, fake, "Standup")
        await wait_for(lambda: fake.done("chat.postMessage"))
        [post] = fake.done("chat.postMessage")
        meeting_id = block_url(post).rsplit("/m/", 1)[1]

        alice, _ = await join(client, meeting_id, "Alice")
        bob, _ = await join(client, meeting_id, "Bob")
        await wait_for(lambda: fake.done("chat.update"), timeout=5)
        [edit] = fake.done("chat.update")
        # Two joins inside the coalescing window make one edit.
        assert status_text(edit) == "In the meeting: Alice, Bob"
        assert (edit["channel"], edit["ts"]) == (post["channel"], "1700000000.000001")
        assert block_url(edit) == block_url(post)

        # An explicit leave: aiohttp's TestServer cancels a handler whose client hangs up,
        # which would cut the server's cleanup short (production runners do not cancel).
        await alice.send({"type": "leave"})
        await bob.send({"type": "leave"})
        await wait_for(lambda: status_text(fake.done("chat.update")[-1]).startswith("Ended"), timeout=6)
        shown = [status_text(e) for e in fake.done("chat.update")]
        assert shown[-1] == "Ended, lasted 1 min"
        # In between, at most the one intermediate state (Bob alone) if the leaves straddled
        # a coalescing window; never a repeat.
        assert shown[1:-1] in ([], ["In the meeting: Bob"])


async def test_recording_ready_replies_in_the_meeting_thread(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    async with running(with_slack(config, fake), store) as (server, client):
        await slash(client, fake, "Retro")
        await wait_for(lambda: fake.done("chat.postMessage"))
        meeting_id = block_url(fake.done("chat.postMessage")[0]).rsplit("/m/", 1)[1]
        await server.bus.publish(RecordingReady(meeting_id, "rec1", "http://127.0.0.1/r/rec1", "2026-01-30T10:00:00+00:00", "2026-12-31"))
        await wait_for(lambda: len(fake.done("chat.postMessage")) == 2)
        reply = fake.done("chat.postMessage")[1]
        assert reply["thread_ts"] == "1700000000.000001"  # the meeting message's ts
        assert reply["text"] == text.recording_ready_text("Retro", "http://127.0.0.1/r/rec1", "2026-12-31",
                                                          escape=escape)
        await server.bus.publish(RecordingExpiring(meeting_id, "rec1", "http://127.0.0.1/r/rec1", "2026-12-31"))
        await server.bus.publish(RecordingExpiring(meeting_id, "rec1", "http://127.0.0.1/r/rec1", "2026-12-31"))
        await wait_for(lambda: len(fake.done("chat.postMessage")) == 3)
        await wait_for(lambda: settled(store))
        [warning] = fake.done("chat.postMessage")[2:]  # the reminder goes out once
        assert warning["thread_ts"] == "1700000000.000001"
        assert warning["text"] == text.recording_expiring_text("Retro", "http://127.0.0.1/r/rec1", "2026-12-31",
                                                               escape=escape)


# -- what reaches the channel is shown, never acted on --------------------------------------

HOSTILE = "<!channel> <@U123> <https://evil|Recording> & co"


def slack_sends(typed: str) -> str:
    """Command text as Slack sends it with should_escape: false: &, < and > as entities."""
    return typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_objects(node: Any) -> list[dict[str, Any]]:
    """Every mrkdwn text object in a block tree."""
    if isinstance(node, list):
        return [found for item in node for found in mrkdwn_objects(item)]
    if not isinstance(node, dict):
        return []
    here = [node] if node.get("type") == "mrkdwn" else []
    return here + [found for value in node.values() for found in mrkdwn_objects(value)]


def assert_inert(text_: str, own_link: str = "") -> None:
    """No mention, link or other <...> sequence but our own link, and & only in entities."""
    rest = text_.replace(f"<{own_link}>", "") if own_link else text_
    assert "<" not in rest and ">" not in rest, text_
    assert re.fullmatch(r"(?:[^&]|&amp;|&lt;|&gt;)*", rest, re.S), text_


async def test_hostile_titles_and_names_reach_slack_as_text_only(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    names = ["<!here> Eve", "<https://evil|Boss> & <@U999>"]
    async with running(with_slack(config, fake), store) as (server, client):
        await slash(client, fake, slack_sends(HOSTILE))
        await wait_for(lambda: fake.done("chat.postMessage"))
        url = block_url(fake.done("chat.postMessage")[0])
        meeting_id = url.rsplit("/m/", 1)[1]
        assert (await store.get_meeting(meeting_id)).title == HOSTILE  # stored as typed

        sockets = [(await join(client, meeting_id, name))[0] for name in names]
        both = "In the meeting: " + ", ".join(escape(name) for name in names)
        await wait_for(lambda: any(status_text(u) == both for u in fake.done("chat.update")), timeout=5)
        for socket in sockets:
            await socket.send({"type": "leave"})
        await wait_for(lambda: status_text(fake.done("chat.update")[-1]).startswith("Ended"), timeout=6)
        await server.bus.publish(RecordingReady(meeting_id, "rec1", "http://127.0.0.1/r/rec1", "2026-01-30T10:00:00+00:00", "2026-12-31"))
        await server.bus.publish(RecordingExpiring(meeting_id, "rec1", "http://127.0.0.1/r/rec1", "2026-12-31"))
        await wait_for(lambda: len(fake.done("chat.postMessage")) == 3)

    post, ready, expiring = fake.done("chat.postMessage")
    assert ready["thread_ts"] == expiring["thread_ts"] == "1700000000.000001"  # the meeting message
    for message in (post, ready, expiring, *fake.done("chat.update")):
        assert_inert(message["text"])
        assert HOSTILE in html.unescape(message["text"])  # and still reads as typed
        for obj in mrkdwn_objects(message.get("blocks", [])):
            assert obj["verbatim"] is True  # no auto-linking of names and bare URLs either
            assert_inert(obj["text"], own_link=url)
    assert html.unescape(post["blocks"][0]["text"]["text"]) == f"*{HOSTILE}*\n<{url}>"


async def test_call_card_names_stay_plain_text_while_message_text_is_escaped(
        config: Config, store: SqliteStore, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "STATUS_COALESCE_S", 0.2)
    async with running(with_slack(config, fake, calls=True), store) as (_, client):
        await slash(client, fake, slack_sends("R&D <weekly>"))
        await wait_for(lambda: fake.done("chat.postMessage"))
        [added], [post] = fake.done("calls.add"), fake.done("chat.postMessage")
        assert added["title"] == "R&D <weekly>"  # a plain name on Slack's card: not mrkdwn
        assert post["text"].startswith("R&amp;D &lt;weekly&gt;: ")
        assert_inert(post["blocks"][0]["text"]["text"], own_link=block_url(post))

        person, _ = await join(client, block_url(post).rsplit("/m/", 1)[1], "Q&A <team>")
        await wait_for(lambda: fake.done("calls.participants.add"))
        assert fake.done("calls.participants.add")[0]["users"][0]["display_name"] == "Q&A <team>"
        await person.send({"type": "leave"})
        await wait_for(lambda: fake.done("calls.end"))


# -- delivery that survives trouble --------------------------------------------------------


async def test_ratelimited_then_success_is_delivered_exactly_once(
        config: Config, store: SqliteStore, fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "ratelimited", status=429, retry_after="1")
    async with running(with_slack(config, fake), store) as (_, client):
        await slash(client, fake, "Busy")
        await wait_for(lambda: fake.done("chat.postMessage"), timeout=5)
        first, second = fake.attempts("chat.postMessage")
        assert (first.ok, second.ok) == (False, True)
        # The outbox saw the 429 itself (the SDK did not retry quietly) and waited Retry-After.
        assert second.at - first.at >= 0.9
        await wait_for(lambda: settled(store))
        assert len(fake.done("chat.postMessage")) == 1
        assert await store.get_post(block_url(fake.done("chat.postMessage")[0]).rsplit("/m/", 1)[1])


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_restart_between_failure_and_retry_still_delivers_once(
        tmp_path: Path, config: Config, fake: FakeSlack) -> None:
    path = tmp_path / "restart.sqlite3"
    settings = with_slack(config, fake).slack
    clock = Clock()

    async def boot() -> tuple[SqliteStore, MeetingService, Announcer, Outbox, SlackBot]:
        store = SqliteStore(path)
        await store.open()
        meetings = MeetingService(store, config.server.public_url)
        outbox = Outbox(store, clock)
        announcer = Announcer(meetings, outbox, Bus())
        bot = SlackBot(settings, meetings, announcer, outbox)
        await bot.start()
        return store, meetings, announcer, outbox, bot

    fake.fail("chat.postMessage", "ratelimited", status=429, retry_after="30")
    store, meetings, announcer, outbox, bot = await boot()
    minted = await meetings.mint("Before restart", Origin("slack", TEAM_ID, "C0GENERAL", "alice"))
    await announcer.announce(minted, "inv-1", {"response_url": fake.response_url()})
    assert await outbox.deliver_due() == 1
    assert [c.ok for c in fake.attempts("chat.postMessage")] == [False]
    await bot.stop()
    await store.close()

    store, meetings, announcer, outbox, bot = await boot()
    await announcer.announce(minted, "inv-1", {"response_url": fake.response_url()})  # a replayed event
    assert await outbox.deliver_due() == 0  # Retry-After is honoured across the restart
    clock.now += 31
    assert await outbox.deliver_due() == 1
    assert await outbox.deliver_due() == 0
    await bot.stop()
    await store.close()
    assert [c.ok for c in fake.attempts("chat.postMessage")] == [False, True]
    assert block_url(fake.done("chat.postMessage")[0]) == minted.url


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived"])
async def test_a_post_that_cannot_be_made_is_explained_privately(
        error: str, config: Config, store: SqliteStore, fake: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    fake.fail("chat.postMessage", error)
    async with running(with_slack(config, fake), store) as (_, client):
        answer = await (await slash(client, fake, "Private", channel_id="G0SECRET")).json()
        assert HOST_MARK in answer["text"]
        await wait_for(lambda: fake.responses)
        [told] = fake.responses
        assert told["response_type"] == "ephemeral"
        assert told["text"].startswith(text.cannot_post_text(error))
        assert HOST_MARK not in told["text"] and "/m/" in told["text"]
        await wait_for(lambda: settled(store))
    assert len(fake.attempts("chat.postMessage")) == 1  # dropped, not retried
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and error in problems[0], problems
    assert URL.search(problems[0]) is None


@pytest.mark.parametrize("failure, expected", [
    (dict(error="ratelimited", status=429, retry_after="7"), Retry("ratelimited", after=7.0)),
    (dict(error="ratelimited", status=429), Retry("ratelimited", after=None)),
    (dict(error="internal_error"), Retry("internal_error")),
    (dict(error="bad_gateway", status=502), Retry("http_502")),
    (dict(error="invalid_auth"), GiveUp("invalid_auth")),
    (dict(error="account_inactive"), GiveUp("account_inactive")),
    (dict(error="message_not_found"), GiveUp("message_not_found")),
])
async def test_slack_errors_map_to_outbox_decisions(
        failure: dict[str, Any], expected: Any, config: Config, fake: FakeSlack) -> None:
    bot = SlackBot(with_slack(config, fake).slack, None, None, Outbox(None))  # type: ignore[arg-type]
    await bot.start()
    try:
        fake.fail("chat.update", **failure)
        post = ChatPost("m", "slack", "C0GENERAL", MessageRef("1.1", "T", "http://x/m/a").to_json())
        entry = OutboxEntry(1, "status:m", "m", "slack", STATUS, {"present": ["A"]}, 0, 1)
        assert await bot.courier.deliver(entry, post) == expected
        assert len(fake.attempts("chat.update")) == 1  # the SDK retried nothing by itself
    finally:
        await bot.stop()


async def test_a_dropped_connection_is_retried_by_the_outbox_only(config: Config, fake: FakeSlack) -> None:
    bot = SlackBot(with_slack(config, fake).slack, None, None, Outbox(None))  # type: ignore[arg-type]
    await bot.start()
    try:
        fake.fail("chat.postMessage", "reset", drop=True)
        entry = OutboxEntry(1, "announce:x", "m", "slack", ANNOUNCE,
                            {"title": "T", "url": "http://x/m/a", "channel_id": "C1", "reply": {}}, 0, 1)
        result = await bot.courier.deliver(entry, None)
        assert isinstance(result, Retry) and result.reason.startswith("network")
        assert len(fake.attempts("chat.postMessage")) == 1
        assert isinstance(await bot.courier.deliver(entry, None), Delivered)
    finally:
        await bot.stop()


async def test_slack_unreachable_never_crashes_the_server(config: Config, store: SqliteStore) -> None:
    down = await FakeSlack().start()
    url = down.api_url
    await down.close()  # nothing listens there any more
    settings = dataclasses.replace(config, slack=SlackConfig(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=url))
    async with running(settings, store) as (_, client):
        body = form(command_payload("Offline", response_url="http://127.0.0.1:9/none"))
        response = await client.post(EVENTS_PATH, data=body, headers=sign(body))
        # The person still gets a meeting; its channel post waits in the outbox for Slack.
        assert response.status == 200 and HOST_MARK in (await response.json())["text"]
        await wait_for(lambda: count_pending(store))
        assert (await client.get("/healthz")).status == 200


# -- Calls API mode ------------------------------------------------------------------------


async def test_calls_api_mode_shows_a_call_card_that_follows_the_meeting(
        config: Config, store: SqliteStore, fake: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "STATUS_COALESCE_S", 0.2)  # keep the test quick
    async with running(with_slack(config, fake, calls=True), store) as (_, client):
        await slash(client, fake, "Call me", user_id="U0ALICE")
        await wait_for(lambda: fake.done("chat.postMessage"))
        [added] = fake.done("calls.add")
        [post] = fake.done("chat.postMessage")
        url = block_url(post)
        assert added["join_url"] == url and added["created_by"] == "U0ALICE" and added["title"] == "Call me"
        assert added["external_unique_id"].startswith("meetnow-")
        assert post["blocks"][1] == {"type": "call", "call_id": "R00001"}
        meeting_id = url.rsplit("/m/", 1)[1]

        alice, _ = await join(client, meeting_id, "Alice")
        bob, _ = await join(client, meeting_id, "Guest")
        await wait_for(lambda: sum(len(a["users"]) for a in fake.done("calls.participants.add")) == 2)
        users = [u for a in fake.done("calls.participants.add") for u in a["users"]]
        assert sorted(u["display_name"] for u in users) == ["Alice", "Guest"]
        assert all("external_id" in u and "slack_id" not in u for u in users)

        await alice.send({"type": "leave"})
        await wait_for(lambda: fake.done("calls.participants.remove"))
        [removed] = fake.done("calls.participants.remove")
        assert removed["users"] == [{"external_id": "Alice#1", "display_name": "Alice"}]
        assert removed["id"] == "R00001"

        await bob.send({"type": "leave"})
        await wait_for(lambda: fake.done("calls.end"))
        assert fake.done("calls.end") == [{"id": "R00001", "duration": "60"}]

        # The link is permanent: coming back later starts a new call card on the same message.
        carol, _ = await join(client, meeting_id, "Carol")
        await wait_for(lambda: len(fake.done("calls.add")) == 2 and len(fake.done("calls.participants.add")) >= 2
                       and fake.done("calls.participants.add")[-1]["id"] == "R00002")
        [update] = fake.done("chat.update")
        assert update["blocks"][1] == {"type": "call", "call_id": "R00002"}
        assert fake.done("calls.participants.add")[-1]["users"][0]["display_name"] == "Carol"
        await carol.send({"type": "leave"})
        await wait_for(lambda: len(fake.done("calls.end")) == 2)


async def test_calls_mode_ends_an_unposted_call_when_the_post_fails(config: Config, fake: FakeSlack) -> None:
    bot = SlackBot(with_slack(config, fake, calls=True).slack, None, None, Outbox(None))  # type: ignore[arg-type]
    await bot.start()
    try:
        fake.fail("chat.postMessage", "internal_error")
        entry = OutboxEntry(1, "announce:x", "m", "slack", ANNOUNCE,
                            {"title": "T", "url": "http://x/m/a", "channel_id": "C1",
                             "reply": {"user_id": "U1"}}, 0, 1)
        assert await bot.courier.deliver(entry, None) == Retry("internal_error")
        assert fake.done("calls.end") == [{"id": "R00001"}]
        result = await bot.courier.deliver(entry, None)
        assert isinstance(result, Delivered) and result.post is not None
        assert MessageRef.from_json(result.post.message_ref).call_id == "R00002"
        # Every registered call has an id of its own, all from one announcement's base.
        keys = [a["external_unique_id"] for a in fake.done("calls.add")]
        assert keys[0] != keys[1] and keys[0].rsplit("-", 1)[0] == keys[1].rsplit("-", 1)[0]
    finally:
        await bot.stop()


# -- rendering -----------------------------------------------------------------------------


def test_call_users_keep_people_with_the_same_name_apart() -> None:
    assert [u["external_id"] for u in call_users(["Guest", "Ann", "Guest"])] == ["Guest#1", "Ann#1", "Guest#2"]


def test_escape_stops_mentions_and_links() -> None:
    assert escape("<!here> & <http://evil|x>") == "&lt;!here&gt; &amp; &lt;http://evil|x&gt;"


def test_a_crowd_of_long_escaped_names_still_fits_slack_limits() -> None:
    names = [f"{n:02d}" + "&" * 58 for n in range(25)]  # 25 people, names at NAME_MAX
    [heading, context] = meeting_blocks("T", "http://x/m/a", {"present": names, "ended_minutes": None}, "bob")
    status = context["elements"][0]["text"]
    assert len(status) <= MRKDWN_MAX and status.endswith("…")
    assert_inert(status)


def test_message_ref_round_trips_and_reads_a_bare_ts() -> None:
    ref = MessageRef("1.2", "T", "u", call_id="R1", told=("A",))
    assert MessageRef.from_json(ref.to_json()) == ref
    assert MessageRef.from_json("1700000000.000100").ts == "1700000000.000100"



def test_manifest_declares_the_command_scopes_and_endpoint() -> None:
    manifest = (Path(__file__).resolve().parents[2] / "bot" / "slack_manifest.yaml").read_text()
    assert "command: /meetnow" in manifest
    assert manifest.count("https://YOUR-SERVER" + EVENTS_PATH) == 2  # command and button clicks
    for scope in ("commands", "chat:write", "calls:write"):
        assert re.search(rf"^\s+- {re.escape(scope)}\s", manifest, re.M), scope
    assert re.search(r"^\s+socket_mode_enabled: (true|false)$", manifest, re.M)


class Ticking:
    """A settable clock for the replay memory."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_used_signatures_are_refused_until_they_expire() -> None:
    clock = Ticking()
    seen = MemorySeenSignatures(clock=clock)
    assert await seen.first_use("v0=a", until=clock.now + 300)
    assert not await seen.first_use("v0=a", until=clock.now + 300)
    clock.now += 301
    assert await seen.first_use("v0=a", until=clock.now + 300)  # stale by now: the age check refuses it
    assert len(seen) == 1


async def test_used_signature_memory_is_bounded_and_drops_the_oldest() -> None:
    clock = Ticking()
    seen = MemorySeenSignatures(limit=3, clock=clock)
    for name in ("v0=1", "v0=2", "v0=3", "v0=4"):
        assert await seen.first_use(name, until=clock.now + 300)
    assert len(seen) == 3
    assert not await seen.first_use("v0=4", until=clock.now + 300)
    assert await seen.first_use("v0=1", until=clock.now + 300)  # the oldest was dropped
    clock.now += 301
    assert await seen.first_use("v0=5", until=clock.now + 300)
    assert len(seen) == 1  # expired ones go on the next use
