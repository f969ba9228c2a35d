"""The JSON API: minting meetings over HTTP."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from meeting import jsontext
from meeting.models import Origin
from meeting.service import TitleError

from .errors import json_error
from .keys import CONFIG, MEETINGS, MINT_LIMIT

MINT_FIELDS = {"title", "e2ee"}


class BadRequest(ValueError):
    """A request body the API will not act on; the message goes back to the caller."""


async def read_json_object(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` fields; an empty body is ``{}``."""
    body = await request.read()
    if not body.strip():
        return {}
    if request.content_type != "application/json":
        raise BadRequest("content type must be application/json")
    try:
        data = jsontext.loads(body)
    except jsontext.JSONTextError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"unknown field: {unknown[0]}")
    return data


async def create_meeting(request: web.Request) -> web.Response:
    """``POST /api/meetings``: mint a meeting; 201 with its id, title, both links, e2ee."""
    if not request.app[CONFIG].server.allow_web_minting:
        return json_error(403, "minting meetings over HTTP is switched off on this server")
    if not await request.app[MINT_LIMIT].allow(request.remote or ""):
        response = json_error(429, "too many meetings minted from your address; wait a moment")
        response.headers["Retry-After"] = "5"
        return response
    try:
        data = await read_json_object(request, MINT_FIELDS)
        e2ee = data.get("e2ee", False)
        if not isinstance(e2ee, bool):
            raise BadRequest("e2ee must be true or false")
        minted = await request.app[MEETINGS].mint(data.get("title"), Origin("web"), e2ee=e2ee)
    except (BadRequest, TitleError) as exc:
        return json_error(400, str(exc))
    meeting = minted.meeting
    # For an E2EE meeting the caller makes the key and adds it to both links' fragments.
    return web.json_response(
        {"id": meeting.id, "title": meeting.title, "url": minted.url, "host_url": minted.host_url,
         "e2ee": meeting.e2ee},
        status=201,
    )
