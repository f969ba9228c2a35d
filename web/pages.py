"""HTML pages, rendered from jinja2 templates with autoescaping on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web

from meeting.recording.model import RECORDING

from .keys import CONFIG, MEETINGS

if TYPE_CHECKING:
    from meeting.models import Meeting

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render(name: str, status: int = 200, **context: Any) -> web.Response:
    """Render a template into an HTML response that no cache keeps."""
    html = TEMPLATES.get_template(name).render(**context)
    response = web.Response(text=html, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


async def home(request: web.Request) -> web.Response:
    """The home page: a "Meet now" button, when minting on the web is allowed."""
    return render("home.html", minting=request.app[CONFIG].server.allow_web_minting)


async def meeting_page(request: web.Request) -> web.Response:
    """The meeting page: title and pre-join form; 404 page for anything unknown.

    Whether the meeting is being recorded is on the page, so people know before joining.
    """
    meeting = await request.app[MEETINGS].get(request.match_info["meeting_id"])
    if meeting is None:
        raise web.HTTPNotFound()
    config = request.app[CONFIG]
    return render(
        "meeting.html",
        meeting=meeting,
        max_participants=config.media.max_participants,
        recording_active=await _recording_active(request, meeting),
    )


async def _recording_active(request: web.Request, meeting: Meeting) -> bool:
    # From the store: the meeting may live in a media worker or on another node.
    recordings = await request.app[MEETINGS].store.meeting_recordings(meeting.id)
    return any(r.state == RECORDING for r in recordings)


async def healthz(request: web.Request) -> web.Response:
    """Liveness and store reachability, for load balancers and monitors."""
    version = await request.app[MEETINGS].store.schema_version()
    return web.json_response({"status": "ok", "schema": version})
