"""The recording page and file, retention with an injected clock, and ``meetnow recordings``."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import av
import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser

from meeting import ids
from meeting.recording.compose import compose
from meeting.config import Config
from meeting.events import Bus, RecordingExpiring, RecordingReady
from meeting.models import Origin
from meeting.recording.model import COMPOSING, RECORDING, Recording
from meeting.recording.worker import own_folder
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from bench.synthetic import encoded_media
from tests.conftest import serving
from tests.meeting.record_files import person_recorded
from tests.web.meeting_page import SHOTS
from web.cli import list_recordings
from web.recordings import format_length
from web.keys import RECORDINGS

MADE = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = MADE

    def __call__(self) -> datetime:
        return self.now


class FakeNotifier:
    """Hears what the chat bots would: recordings ready and expiring, from the bus."""

    def __init__(self) -> None:
        self.ready: list[tuple[str, str, str, str]] = []
        self.expiring: list[tuple[str, str, str, str]] = []

    def listen(self, bus: Bus) -> None:
        bus.subscribe(RecordingReady, self._ready)
        bus.subscribe(RecordingExpiring, self._expiring)

    async def _ready(self, e: RecordingReady) -> None:
        self.ready.append((e.meeting_id, e.recording_id, e.url, e.delete_on))

    async def _expiring(self, e: RecordingExpiring) -> None:
        self.expiring.append((e.meeting_id, e.recording_id, e.url, e.delete_on))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


@pytest.fixture
async def server(config: Config, store: SqliteStore, clock: Clock,
                 notifier: FakeNotifier) -> AsyncIterator[TestClient]:
    async with serving(config, store, clock=clock) as (client, built):
        notifier.listen(built.bus)
        yield client


async def ready_recording(config: Config, store: SqliteStore, meetings: MeetingService,
                          timeline: list[dict[str, Any]] | None = None,
                          duration: float | None = None) -> Recording:
    """A composed recording of a meeting titled "Retro", made at MADE, as the composer leaves it
    (``timeline`` and ``duration``, when given, are what the store says of it)."""
    minted = await meetings.mint("Retro", Origin("web"))
    recording = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                          expires_at=MADE + timedelta(days=config.recordings.retention_days))
    folder = Path(config.recordings.folder) / recording.id
    media = encoded_media(320, 240, fps=30, bitrate=300_000, seconds=2.0)
    person_recorded(folder, media, 2.0, stopped=False)
    result = compose(folder, span=2.0)
    await store.add_recording(recording)
    await store.recording_stopped(recording.id, MADE + timedelta(seconds=2), 2.0)
    if timeline is None:
        timeline = [{"name": "Ann <b>", "segments": [[0.2, 1.4]], "total": 1.2}]
    length = result.duration if duration is None else duration
    assert await store.recording_composed(recording.id, "recording.mp4", result.size, length, timeline,
                                          MADE + timedelta(seconds=2))
    got = await store.get_recording(recording.id)
    assert got is not None
    return got


def assert_strict_page(html: str) -> None:
    """What the CSP demands and the privacy promise: no inline code or style, nothing external."""
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"""(src|href)=["']https?://""", html)


async def test_recording_page_shows_player_download_length_expiry_and_who_spoke(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    recording = await ready_recording(config, store, meetings)
    response = await server.get(f"/r/{recording.id}")
    assert response.status == 200
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    html = await response.text()
    assert_strict_page(html)
    assert "<h1 id=\"recording-title\">Retro</h1>" in html
    assert f'src="/r/{recording.id}/video"' in html and f'href="/r/{recording.id}/video?download=1"' in html
    assert "available until <time class=\"local-date\" datetime=\"2026-03-31T09:30:00+00:00\">2026-03-31</time>" in html
    assert "2 s" in html
    # Times carry a machine-readable moment for the viewer's own zone; a poster frame instead
    # of a black box; the way back to the meeting.
    assert '<time id="recorded-at" class="local-time" datetime="2026-03-01T09:30:00+00:00">2026-03-01 09:30 UTC</time>' in html
    assert f'poster="/r/{recording.id}/poster.jpg"' in html
    assert f'href="/m/{recording.meeting_id}">Back to the meeting</a>' in html
    assert "Ann &lt;b&gt;" in html and "Ann <b>" not in html  # names are text
    assert 'data-start="0.2"' in html


async def test_who_spoke_when_has_one_row_per_person_however_often_they_reconnected(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    # As stored: one row per connection (Dave's page reconnected twice).
    rows = [{"name": "Dave", "segments": [[0.0, 1.0]], "total": 1.0},
            {"name": "Ann", "segments": [[1.0, 2.0]], "total": 1.0},
            {"name": "Dave", "segments": [[3.0, 4.0], [4.2, 5.0]], "total": 1.8},
            {"name": "Dave", "segments": [[10.0, 11.5]], "total": 1.5}]
    recording = await ready_recording(config, store, meetings, timeline=rows, duration=20.0)
    html = await (await server.get(f"/r/{recording.id}")).text()
    names = re.findall(r'<span class="speaker-name">([^<]*)</span>', html)
    assert names == ["Dave", "Ann"]
    data = json.loads(re.search(r'data-timeline="([^"]*)"', html).group(1).replace("&#34;", '"'))
    assert data["speakers"][0] == {"name": "Dave", "segments": [[0.0, 1.0], [3.0, 5.0], [10.0, 11.5]], "total": 4.5}


TICKS = """() => [...document.querySelectorAll(".scale .tick")].map((t) => {
  const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.right]; })"""


@pytest.mark.browser
async def test_recording_page_on_a_phone_has_readable_ticks_and_does_not_scroll_for_nothing(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService, browser: Browser) -> None:
    rows = [{"name": "Ann", "segments": [[1.0, 20.0]], "total": 19.0},
            {"name": "Ben", "segments": [[30.0, 60.0]], "total": 30.0}]
    recording = await ready_recording(config, store, meetings, timeline=rows, duration=66.6)
    page = await browser.new_page()
    for size in ({"width": 390, "height": 844}, {"width": 1366, "height": 768}):
        await page.set_viewport_size(size)
        await page.goto(str(server.make_url(f"/r/{recording.id}")))
        await page.wait_for_selector(".scale .tick")
        assert await page.text_content("#recording-length") == "1 min 06 s"
        ticks = await page.evaluate(TICKS)
        assert ticks[0][0] == "0:00" and len(ticks) >= 2, ticks
        for (_, _, right), (_, left, _) in zip(ticks, ticks[1:]):
            assert right + 4 <= left, (size, ticks)  # apart, with a gap
        assert ticks[-1][2] <= size["width"], (size, ticks)
        # Nothing below the content: only as tall as what it holds.
        main_bottom = await page.eval_on_selector("main", "m => m.getBoundingClientRect().bottom + 32")
        height = await page.evaluate("document.documentElement.scrollHeight")
        assert height <= max(size["height"], main_bottom + 1), (size, height, main_bottom)
        if SHOTS:
            await page.screenshot(path=f"{SHOTS}/recording-{size['width']}.png", full_page=True)


def test_lengths_are_cut_to_whole_seconds_as_the_player_shows_them() -> None:
    assert format_length(66.6) == "1 min 06 s"
    assert format_length(59.9) == "59 s"
    assert format_length(3600 + 125.7) == "1 h 02 min"


async def test_poster_is_a_still_from_the_recording(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    recording = await ready_recording(config, store, meetings)
    response = await server.get(f"/r/{recording.id}/poster.jpg")
    assert response.status == 200 and response.content_type == "image/jpeg"
    body = await response.read()
    assert body[:2] == b"\xff\xd8"  # a JPEG
    with av.open(io.BytesIO(body)) as container:
        [picture] = list(container.decode(video=0))
    assert (picture.width, picture.height) == (640, 360)
    plane = bytes(picture.planes[0])
    assert max(plane) - min(plane) > 40  # a picture, not a flat colour
    assert (await server.get(f"/r/{recording.id}/poster.jpg")).status == 200  # from the cache
    assert (await server.get(f"/r/{ids.new_id()}/poster.jpg")).status == 404
    (Path(config.recordings.folder) / recording.id / "recording.mp4").write_bytes(b"not a video")
    broken = await server.get(f"/r/{recording.id}/poster.jpg")
    assert broken.status == 404 and "Traceback" not in await broken.text()


async def test_recording_file_is_served_with_ranges(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    recording = await ready_recording(config, store, meetings)
    url = f"/r/{recording.id}/video"
    whole = await server.get(url)
    body = await whole.read()
    assert whole.status == 200 and whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["Accept-Ranges"] == "bytes" and len(body) == recording.size
    part = await server.get(url, headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.headers["Content-Range"] == f"bytes 100-199/{recording.size}"
    assert await part.read() == body[100:200]
    tail = await server.get(url, headers={"Range": "bytes=-50"})
    assert tail.status == 206 and await tail.read() == body[-50:]
    beyond = await server.get(url, headers={"Range": f"bytes={recording.size + 10}-{recording.size + 20}"})
    assert beyond.status == 416
    download = await server.get(url + "?download=1")
    assert download.status == 200
    assert download.headers["Content-Disposition"] == (
        "attachment; filename=\"Retro 2026-03-01.mp4\"; filename*=UTF-8''Retro%202026-03-01.mp4")


async def test_unknown_and_unfinished_recordings(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService) -> None:
    for path in (f"/r/{ids.new_id()}", f"/r/{ids.new_id()}/video", "/r/not-an-id", "/r/../../etc/passwd",
                 "/r/", "/r"):
        assert (await server.get(path)).status == 404, path
    minted = await meetings.mint("Busy", Origin("web"))
    busy = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                     expires_at=MADE + timedelta(days=30))
    await store.add_recording(busy)
    await store.recording_stopped(busy.id, MADE, 5.0)
    page = await server.get(f"/r/{busy.id}")
    assert page.status == 200 and "being prepared" in await page.text()
    assert (await server.get(f"/r/{busy.id}/video")).status == 404
    assert (await store.get_recording(busy.id)).state == COMPOSING  # type: ignore[union-attr]


async def test_sweeper_reminds_once_then_deletes_at_day_30_not_29_and_the_page_says_gone(
        server: TestClient, config: Config, store: SqliteStore, meetings: MeetingService, clock: Clock,
        notifier: FakeNotifier) -> None:
    recording = await ready_recording(config, store, meetings)
    sweeper = server.app[RECORDINGS].sweeper
    folder = Path(config.recordings.folder) / recording.id

    clock.now = MADE + timedelta(days=26, hours=23)
    assert (await sweeper.sweep()).reminded == 0  # not yet within three days
    clock.now = MADE + timedelta(days=29)
    report = await sweeper.sweep()
    assert report.deleted == 0 and report.reminded == 1
    assert notifier.expiring == [(recording.meeting_id, recording.id,
                                  f"http://127.0.0.1:8080/r/{recording.id}", "2026-03-31")]
    assert (await sweeper.sweep()).reminded == 0  # one reminder only
    assert (await server.get(f"/r/{recording.id}")).status == 200 and folder.exists()

    clock.now = MADE + timedelta(days=30)
    assert (await sweeper.sweep()).deleted == 1
    assert not folder.exists()
    tombstone = await store.get_recording(recording.id)
    assert tombstone is not None and tombstone.state == "deleted" and tombstone.timeline == []
    page = await server.get(f"/r/{recording.id}")
    gone = await page.text()
    assert page.status == 410 and "deleted on 2026-03-31" in gone
    # It says what to do next, and where the meeting is.
    assert "recordings are kept for 30 days" in gone and "ask the meeting's host" in gone
    assert f'href="/m/{recording.meeting_id}"' in gone
    assert (await server.get(f"/r/{recording.id}/poster.jpg")).status == 410
    assert (await server.get(f"/r/{recording.id}/video")).status == 410
    assert (await sweeper.sweep()).deleted == 0
    assert len(notifier.expiring) == 1


async def test_meetnow_recordings_lists_links_and_expiry(
        config: Config, store: SqliteStore, meetings: MeetingService, capsys: pytest.CaptureFixture[str]) -> None:
    recording = await ready_recording(config, store, meetings)
    await list_recordings(config, include_deleted=False)
    out = capsys.readouterr().out
    assert "ready" in out and "2026-03-01 09:30" in out and "2026-03-31" in out and "Retro" in out
    assert f"http://127.0.0.1:8080/r/{recording.id}" in out
    await store.recording_deleted(recording.id, MADE + timedelta(days=30))
    await list_recordings(config, include_deleted=False)
    assert capsys.readouterr().out.strip() == "No recordings."
    await list_recordings(config, include_deleted=True)
    out = capsys.readouterr().out
    assert "deleted" in out and recording.id not in out


async def test_meetnow_recordings_says_queued_until_composing_starts(
        config: Config, store: SqliteStore, meetings: MeetingService, capsys: pytest.CaptureFixture[str]) -> None:
    minted = await meetings.mint("Retro", Origin("web"))
    recording = Recording(id=ids.new_id(), meeting_id=minted.meeting.id, state=RECORDING, started_at=MADE,
                          expires_at=MADE + timedelta(days=config.recordings.retention_days))
    await store.add_recording(recording)
    await store.recording_stopped(recording.id, MADE + timedelta(seconds=2), 2.0)
    folder = Path(config.recordings.folder) / recording.id
    folder.mkdir(parents=True)
    await list_recordings(config, include_deleted=False)
    assert capsys.readouterr().out.splitlines()[1].startswith("queued ")
    with own_folder(folder):  # a composer took it
        await list_recordings(config, include_deleted=False)
    assert capsys.readouterr().out.splitlines()[1].startswith("composing ")
