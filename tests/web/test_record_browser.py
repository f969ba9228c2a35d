"""Two people in Chromium record a meeting: indicator, one composed file, the link, the page."""

from __future__ import annotations

import time
from array import array
from pathlib import Path
from zoneinfo import ZoneInfo

import av
import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser

from meeting.config import Config
from meeting.models import Origin
from meeting.recording.model import READY
from meeting.service import MeetingService
from meeting.store.sqlite import SqliteStore
from tests.conftest import serving, wait_for
from tests.web.test_browser_meeting import frames_keep_rising, join_meeting, new_page
from tests.web.test_record_pages import FakeNotifier

pytestmark = pytest.mark.browser

RECORD_SECONDS = 8.0


def peak_audio(path: Path) -> float:
    """Loudest sample (0..1) of the file's audio."""
    peak = 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples = array("f")
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
            peak = max(peak, max(map(abs, samples), default=0.0))
    return peak


def luma_spread(path: Path, at: float) -> int:
    """Max minus min brightness of the picture at ``at`` seconds (0 for a uniform picture)."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time >= at:
                plane = frame.planes[0]
                rows = [bytes(plane)[r * plane.line_size: r * plane.line_size + frame.width]
                        for r in range(0, frame.height, 8)]
                values = b"".join(rows)
                return max(values) - min(values)
    return 0


async def test_two_people_record_a_meeting_and_get_one_composed_file_and_its_link(
        browser: Browser, config: Config, meetings: MeetingService, store: SqliteStore) -> None:
    notifier = FakeNotifier()
    async with serving(config, store) as (client, built):
        notifier.listen(built.bus)
        service = built.recordings
        await service.start()
        try:
            minted = await meetings.mint("Design review", Origin("web"))
            url = str(client.make_url(f"/m/{minted.meeting.id}"))
            ann, ben = await new_page(browser), await new_page(browser)
            await join_meeting(ann, url + "#host=" + minted.host_url.split("#host=")[1], "Ann")
            await join_meeting(ben, url, "Ben")
            await frames_keep_rising(ann, 1, timeout=15)
            await frames_keep_rising(ben, 1, timeout=15)
            assert await ann.is_visible("#record") and not await ben.is_visible("#record")
            assert not await ann.is_visible("#recording-badge")

            await ann.click("text=Start recording")
            started = time.monotonic()
            for page in (ann, ben):
                await page.wait_for_selector("#recording-badge", state="visible", timeout=5000)
            assert "Recording" in await ben.text_content("#recording-badge")
            assert await ann.text_content("#record") == "Stop recording"
            recorder = service.recorder(minted.meeting.id)
            assert recorder is not None
            await wait_for(lambda: recorder.recorded() >= RECORD_SECONDS, timeout=RECORD_SECONDS + 10)
            # Chromium sends RFC 6464 audio levels: gathered for the speaker timeline.
            levels = sorted(recorder.folder.glob("*.levels"))
            assert len(levels) == 2 and all(p.stat().st_size > 0 for p in levels)
            await ann.click("text=Stop recording")
            span = time.monotonic() - started
            for page in (ann, ben):
                await page.wait_for_selector("#recording-badge", state="hidden", timeout=5000)

            await wait_for(lambda: notifier.ready, timeout=60, interval=0.1)
            [(meeting_id, recording_id, link, delete_on)] = notifier.ready
            assert meeting_id == minted.meeting.id and link.endswith(f"/r/{recording_id}")
            recording = await store.get_recording(recording_id)
            assert recording is not None and recording.state == READY and recording.duration is not None
            assert delete_on == recording.expires_at.date().isoformat()

            # One file, one audio and one video stream, as long as what was recorded,
            # with voices in it and a picture that is not a flat colour.
            path = Path(config.recordings.folder) / recording_id / "recording.mp4"
            with av.open(str(path)) as container:
                assert len(container.streams.audio) == 1 and len(container.streams.video) == 1
                duration = container.duration / av.time_base
            assert abs(duration - span) < 1.0 and abs(duration - recording.duration) < 1.0
            assert peak_audio(path) > 0.01
            assert luma_spread(path, duration / 2) > 40
            assert sorted(p.name for p in path.parent.iterdir()) == ["recording.mp4"]

            # The host gets the link on the meeting page; the guest does not.
            await ann.wait_for_selector(f"#recordings a[href='{link}']", timeout=5000)
            assert not await ben.is_visible("#recordings-panel")

            # The link works, seeks, and its page plays in the browser.
            page_response = await client.get(f"/r/{recording_id}")
            assert page_response.status == 200
            ranged = await client.get(f"/r/{recording_id}/video", headers={"Range": "bytes=0-1023"})
            assert ranged.status == 206 and len(await ranged.read()) == 1024
            await ben.goto(str(client.make_url(f"/r/{recording_id}")))
            await ben.wait_for_function("document.getElementById('player').readyState >= 1", timeout=10000)
            shown = await ben.evaluate("document.getElementById('player').duration")
            assert abs(shown - duration) < 1.0
            assert "available until" in await ben.text_content("#available-until")
            speakers = await ben.eval_on_selector_all(".speaker-name", "els => els.map(e => e.textContent)")
            assert set(speakers) <= {"Ann", "Ben"} and speakers
            assert len(notifier.ready) == 1

            # Before it plays, the player shows a still of the meeting, not a black box; the
            # timeline has a time scale; times are the viewer's own (here in Auckland).
            viewer = await (await browser.new_context(timezone_id="Pacific/Auckland")).new_page()
            await viewer.goto(str(client.make_url(f"/r/{recording_id}")))
            poster = await viewer.evaluate("""() => new Promise((resolve) => {
                const img = new Image();
                img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
                img.onerror = () => resolve(null);
                img.src = document.getElementById("player").poster; })""")
            assert poster == [640, 360]
            ticks = await viewer.eval_on_selector_all(".scale .tick", "els => els.map(e => e.textContent)")
            assert ticks[0] == "0:00" and len(ticks) >= 2
            shown = await viewer.text_content("#recorded-at")
            expected = recording.started_at.astimezone(ZoneInfo("Pacific/Auckland"))
            assert "UTC" not in shown and str(expected.year) in shown
            assert await viewer.get_attribute("#recorded-at", "title") == recording.started_at.strftime("%Y-%m-%d %H:%M UTC")
            local_hour = await viewer.evaluate("""() => new Date(document.getElementById("recorded-at")
                .getAttribute("datetime")).toLocaleString("en-GB", {hour: "2-digit", hour12: false})""")
            assert int(local_hour) == expected.hour
            assert await viewer.get_attribute("#back", "href") == f"/m/{minted.meeting.id}"
        finally:
            await service.close()
