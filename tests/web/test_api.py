import json
import logging

import pytest
from aiohttp.test_utils import TestClient

from meeting import ids
from meeting.store.sqlite import SqliteStore
from tests.conftest import make_config, serving
from meeting.service import MeetingService
from aiohttp.test_utils import TestServer


async def _count(store: SqliteStore) -> int:
    async with store.db.execute("SELECT COUNT(*) FROM meetings") as cursor:
        return (await cursor.fetchone())[0]


async def test_mint_with_title(client: TestClient, store: SqliteStore) -> None:
    response = await client.post("/api/meetings", json={"title": "Design review"})
    assert response.status == 201
    body = await response.json()
    assert set(body) == {"id", "title", "url", "host_url", "e2ee"}
    assert body["e2ee"] is False
    assert body["title"] == "Design review"
    assert body["url"].endswith(f"/m/{body['id']}")
    assert body["host_url"].startswith(body["url"] + "#host=")
    assert (await store.get_meeting(body["id"])) is not None
    page = await client.get(f"/m/{body['id']}")
    assert page.status == 200
    assert "Design review" in await page.text()


async def test_mint_without_body_or_title(client: TestClient) -> None:
    for kwargs in ({}, {"json": {}}):
        response = await client.post("/api/meetings", **kwargs)
        assert response.status == 201
        assert (await response.json())["title"] == "Meeting"


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ("{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        ("[1, 2]", {"Content-Type": "application/json"}, 400, "JSON object"),
        ('"title"', {"Content-Type": "application/json"}, 400, "JSON object"),
        ('{"title": 5}', {"Content-Type": "application/json"}, 400, "string"),
        ('{"title": null, "x": 1}', {"Content-Type": "application/json"}, 400, "unknown field: x"),
        (json.dumps({"title": "a" * 201}), {"Content-Type": "application/json"}, 400, "200"),
        ('{"title": "x"}', {"Content-Type": "text/plain"}, 400, "application/json"),
        ('{"e2ee": "yes"}', {"Content-Type": "application/json"}, 400, "e2ee"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        ("x" * 70_000, {"Content-Type": "application/json"}, 413, "too large"),
    ],
)
async def test_bad_input_is_refused_and_stores_nothing(
    client: TestClient, store: SqliteStore, body: str, headers: dict, status: int, message: str
) -> None:
    response = await client.post("/api/meetings", data=body, headers=headers)
    assert response.status == status
    assert response.content_type == "application/json"
    assert message.lower() in (await response.json())["error"].lower()
    assert await _count(store) == 0


async def test_wrong_method_gets_json_error(client: TestClient, store: SqliteStore) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/api/meetings")
        assert response.status == 405
        assert "error" in await response.json()
    assert await _count(store) == 0


async def test_minting_can_be_switched_off(tmp_path, store: SqliteStore) -> None:
    config = make_config(tmp_path, allow_web_minting=False)
    async with serving(config, store) as (client, _):
        response = await client.post("/api/meetings", json={"title": "x"})
        assert response.status == 403
        assert "switched off" in (await response.json())["error"]
        home = await (await client.get("/")).text()
        assert "Meet now" not in home
    assert await _count(store) == 0


async def test_unknown_api_route_is_json_404(client: TestClient) -> None:
    response = await client.get(f"/api/meetings/{ids.new_id()}")
    assert response.status == 404
    assert (await response.json())["error"] == "not found"


async def test_mint_end_to_end_encrypted(client: TestClient, store: SqliteStore) -> None:
    response = await client.post("/api/meetings", json={"title": "Secret", "e2ee": True})
    body = await response.json()
    assert response.status == 201 and body["e2ee"] is True
    assert "key=" not in body["url"] + body["host_url"]  # the server never makes or sees the key
    assert (await store.get_meeting(body["id"])).e2ee is True


async def test_minting_is_limited_per_address(client: TestClient, store: SqliteStore) -> None:
    statuses = [(await client.post("/api/meetings", json={})).status for _ in range(30)]
    assert statuses.count(201) == 20 and statuses[-1] == 429
    response = await client.post("/api/meetings", json={})
    assert response.headers["Retry-After"] == "5" and "wait" in (await response.json())["error"]
    assert await _count(store) == 20


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"title": ' + "9" * 5000 + "}", "digits"),
        ('{"e2ee": ' + "1" * 5000 + "}", "digits"),
        ('{"title": ' + "[" * 30_000 + "]" * 30_000 + "}", "nested deeper"),
        ("[" * 30_000, "nested deeper"),
        ('{"title": "\\ud800"}', "surrogate"),
        ('{"title": "a\\udc00b", "e2ee": false}', "surrogate"),
        ('{"title": NaN}', "NaN"),
        ('{"e2ee": 1e999}', "out of range"),
        ('{"title": "a", "title": "b"}', "twice"),
    ],
)
async def test_hostile_json_is_a_400_without_a_traceback(
    client: TestClient, store: SqliteStore, body: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/api/meetings", data=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("body is not valid JSON: ") and message in error
    assert await _count(store) == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
