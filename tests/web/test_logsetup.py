"""Log lines: key=value by default, JSON lines as an option, and on every line of one
request's work a short request reference and the meeting's short reference, never its id."""

from __future__ import annotations

import io
import json
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

from aiohttp.test_utils import TestClient, TestServer

from meeting import ids
from meeting.config import Config, LogConfig
from meeting.logcontext import ContextFilter, bind_meeting, bind_request, meeting_ref, request_ref
from meeting.models import Origin
from meeting.store.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.signaling_client import join
from meeting.logsetup import CHATTY, JsonFormatter, KeyValueFormatter, configure
from web.server import build_server


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(ContextFilter())
        self.setFormatter(KeyValueFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        self.records.append(record)


@contextmanager
def recorded() -> Iterator[_Records]:
    root = logging.getLogger()
    handler, level = _Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextmanager
def root_restored() -> Iterator[None]:
    """Let a test call ``configure``; the root logger's handlers and levels come back after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.NOTSET)


def _record(message: str, exc: bool = False) -> logging.LogRecord:
    try:
        if exc:
            raise ValueError("boom")
    except ValueError:
        return logging.makeLogRecord({"name": "meeting.x", "levelname": "ERROR", "levelno": 40,
                                      "msg": message, "exc_info": sys.exc_info()})
    return logging.makeLogRecord({"name": "meeting.x", "levelname": "INFO", "levelno": 20, "msg": message})


def test_key_value_lines_carry_the_references_on_their_first_line() -> None:
    meeting_id = ids.new_id()
    token_r, token_m = request_ref.set("ab12cd34"), meeting_ref.set(ids.short(meeting_id))
    try:
        record = _record("compose failed", exc=True)
        ContextFilter().filter(record)
        text = KeyValueFormatter().format(record)
    finally:
        request_ref.reset(token_r)
        meeting_ref.reset(token_m)
    first, _, rest = text.partition("\n")
    assert first.endswith(f"ERROR meeting.x compose failed req=ab12cd34 mtg={ids.short(meeting_id)}")
    assert "Traceback" in rest and "ValueError: boom" in rest
    assert meeting_id not in text
    # Outside any request nothing is added.
    plain = _record("sweep done")
    ContextFilter().filter(plain)
    assert KeyValueFormatter().format(plain).endswith("INFO meeting.x sweep done")


def test_json_lines_are_one_object_each_with_references_and_traceback() -> None:
    stream = io.StringIO()
    try:
        with root_restored():
            configure(LogConfig(format="json", level="info"), stream=stream)
            log = logging.getLogger("meeting.test")
            bind_request()
            bind_meeting("Zq9x" + "A" * 18)
            log.info("joined %s", "participant=ab12 name=\"Ada\nLovelace\x1b[31m\"")
            try:
                raise RuntimeError("bad")
            except RuntimeError:
                log.exception("failed")
            log.debug("not at info level")
    finally:
        request_ref.set("")
        meeting_ref.set("")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    joined, failed = (json.loads(line) for line in lines)
    assert joined["level"] == "INFO" and joined["logger"] == "meeting.test"
    assert joined["message"].startswith("joined participant=ab12") and "\n" in joined["message"]
    assert "\x1b" not in lines[0]  # control characters leave escaped
    assert joined["mtg"] == "Zq9x…" and len(joined["req"]) == 8
    assert joined["time"].endswith("+00:00")
    assert failed["message"] == "failed" and "RuntimeError: bad" in failed["exception"]
    assert failed["req"] == joined["req"]
    assert isinstance(JsonFormatter().format(_record("x")), str)


async def test_a_requests_lines_carry_its_reference_and_the_meetings(config: Config, store: SqliteStore) -> None:
    server = build_server(config, store)
    minted = await server.meetings.mint("Logs", Origin("web"))
    meeting_id = minted.meeting.id
    with recorded() as lines:
        async with TestClient(TestServer(server.app)) as client:
            first, _ = await join(client, meeting_id, "Ada")
            second, _ = await join(client, meeting_id, "Bo")
            for socket in (first, second):
                await socket.send({"type": "leave"})
                await socket.ws.close()
            await wait_for(lambda: server.sessions.session(meeting_id) is None, timeout=10)
            assert (await client.get(f"/m/{meeting_id}")).status == 200
        await server.stop_background()
    joined = [r for r in lines.records if r.getMessage().startswith("joined ")]
    assert len(joined) == 2
    assert {r.mtg for r in joined} == {ids.short(meeting_id)}  # type: ignore[attr-defined]
    refs = {r.req for r in joined}  # type: ignore[attr-defined]
    assert len(refs) == 2 and all(len(ref) == 8 for ref in refs)  # one per websocket request
    page = [r for r in lines.records if r.name == "aiohttp.access" and "GET /m/" in r.getMessage()
            and "/ws" not in r.getMessage()]
    assert page and page[-1].mtg == ids.short(meeting_id) and page[-1].req not in refs  # type: ignore[attr-defined]
    # (The test server's access log is aiohttp's own; the served one shortens ids: test_edge.)
    for record in lines.records:
        if record.name.startswith(("meeting", "web")):
            assert meeting_id not in KeyValueFormatter().format(record), record.getMessage()


def test_ice_checks_are_left_out_unless_debugging() -> None:
    with root_restored():
        for level, expected in (("info", ["aioice warning", "meeting info"]),
                                ("debug", ["aioice info", "aioice warning", "meeting info"])):
            stream = io.StringIO()
            configure(LogConfig(format="kv", level=level), stream=stream)
            ice = logging.getLogger("aioice.ice")
            ice.info("aioice info")  # e.g. Check CandidatePair(('192.0.2.7', 50000) -> ...)
            ice.warning("aioice warning")
            logging.getLogger("meeting.test").info("meeting info")
            assert [line.split(" ", 4)[-1] for line in stream.getvalue().splitlines()] == expected
