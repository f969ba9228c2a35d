"""Pages as a browser sees them: the button works and nothing is fetched from elsewhere."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Request, Route

from meeting.service import MeetingService

pytestmark = pytest.mark.browser


async def test_meet_now_button_lands_in_a_meeting_with_only_same_origin_requests(
    client: TestClient, browser: Browser, meetings: MeetingService
) -> None:
    origin = str(client.make_url("/")).rstrip("/")
    requests: list[str] = []
    page = await browser.new_page()

    def record(request: Request) -> None:
        requests.append(request.url)

    page.on("request", record)
    await page.goto(origin + "/")
    await page.fill("#title", "Stand-up <b>now</b>")
    minted: list[str] = []

    async def read_host_url(route: Route) -> None:
        response = await route.fetch()
        minted.append((await response.json())["host_url"])
        await route.fulfill(response=response)

    await page.route("**/api/meetings", read_host_url)
    await page.click("text=Meet now")
    await page.wait_for_url("**/m/*")
    host_key = minted[0].split("#host=", 1)[1]
    await page.wait_for_load_state("load")
    assert await page.text_content("#meeting-title") == "Stand-up <b>now</b>"
    # The page took the host key out of the address bar: copying it invites guests, not hosts.
    assert host_key not in page.url and "host=" not in page.url
    assert await page.is_visible("text=Your name")
    assert await page.is_visible("button:has-text('Join')")
    meeting_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    assert await meetings.get(meeting_id) is not None

    await page.goto(origin + f"/m/{meeting_id}")
    await page.wait_for_load_state("networkidle")
    assert len(requests) >= 6  # the pages, their script, stylesheet and icon
    outside = [url for url in requests if not url.startswith(origin + "/")]
    assert outside == []
    # The host key never travels to the server, not even as a query or a path.
    assert len(host_key) >= 22 and all(host_key not in url for url in requests)
