from aiohttp.test_utils import TestClient

from meeting import ids
from meeting.models import Origin
from meeting.service import MeetingService
from tests.web.test_record_pages import assert_strict_page
from web.security import SECURITY_HEADERS


async def test_home_page_has_meet_now(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    html = await response.text()
    assert "Meet now" in html
    assert 'src="/static/home.js"' in html


async def test_meeting_page_shows_escaped_title_and_prejoin_form(
    client: TestClient, meetings: MeetingService
) -> None:
    minted = await meetings.mint("<script>alert(1)</script>", Origin("web"))
    response = await client.get(f"/m/{minted.meeting.id}")
    assert response.status == 200
    html = await response.text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<label for="name">Your name</label>' in html
    assert ">Join</button>" in html
    assert response.headers["Cache-Control"] == "no-store"
    assert_strict_page(html)  # icons are inline SVG; no inline script or style, nothing external
    assert 'data-recording="false"' in html


async def test_unknown_meeting_is_a_plain_404_that_reveals_nothing(client: TestClient) -> None:
    unknown = ids.new_id()
    for path in (f"/m/{unknown}", "/m/short", "/m/" + "x" * 300, "/no/such/page"):
        response = await client.get(path)
        assert response.status == 404
        html = await response.text()
        assert "Not found" in html
        assert unknown not in html and "short" not in html
        assert "Ask whoever sent it for the link again" in html and 'href="/"' in html  # what to do next


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_security_headers_on_every_response(client: TestClient, meetings: MeetingService) -> None:
    minted = await meetings.mint(None, Origin("web"))
    requests = [
        ("GET", "/"), ("GET", f"/m/{minted.meeting.id}"), ("GET", "/m/unknown"),
        ("GET", "/healthz"), ("GET", "/static/style.css"), ("GET", "/static/home.js"),
        ("GET", "/static/"), ("GET", "/static/../pyproject.toml"), ("POST", "/api/meetings"),
        ("GET", "/api/meetings"), ("POST", "/"),
    ]
    for method, path in requests:
        response = await client.request(method, path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (method, path, name)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "http" not in csp  # no outside origin anywhere in the policy


async def test_static_has_no_listing_or_escape(client: TestClient) -> None:
    assert (await client.get("/static/")).status in (403, 404)
    assert (await client.get("/static/../pyproject.toml")).status in (403, 404)
    css = await client.get("/static/style.css")
    assert css.status == 200 and css.content_type == "text/css"


async def test_hsts_only_where_the_site_is_https(tmp_path, store) -> None:
    from aiohttp.test_utils import TestServer

    from tests.conftest import make_config, serving
    
    for public_url, expected in (("https://meet.example.org", True), ("http://127.0.0.1:8080", False)):
        config = make_config(tmp_path, public_url=public_url)
        async with serving(config, store) as (client, _):
            response = await client.get("/")
            assert ("Strict-Transport-Security" in response.headers) is expected
