"""Recordings over HTTP: the host's start/stop API, the recording page and its file.

- ``POST /api/meetings/{id}/recording`` with ``{"action": "start" | "stop"}`` and the host
  key as ``Authorization: Bearer <key>``;
- ``GET /r/{recording_id}``: the page (player, download link, title, length, expiry and
  who spoke when); 404 for unknown ids, 410 once deleted;
- ``GET /r/{recording_id}/video``: the file itself, with Range support (seeking), served
  by id only: the recordings folder is never exposed;
- ``GET /r/{recording_id}/poster.jpg``: a still from the middle of the file, shown by the
  player before it plays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote

import av
from aiohttp import web

from meeting import ids
from meeting.recording.model import DELETED, FAILED, READY, Recording
from meeting.recording.service import RecordingRefused, RecordingService
from meeting.recording.timeline import one_row_per_name

from .api import BadRequest, read_json_object
from .errors import json_error
from .keys import CONFIG, MEETINGS, POSTERS, RECORDINGS, SESSIONS
from .pages import render
from .poster import PosterCache, PosterError

log = logging.getLogger(__name__)

REFUSED_STATUS = {"e2ee": 409, "empty": 409, "disk": 507}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9 ._-]+")


def add_routes(app: web.Application) -> None:
    app[POSTERS] = PosterCache()
    app.router.add_post("/api/meetings/{meeting_id}/recording", recording_action)
    app.router.add_get("/r/{recording_id}", recording_page)
    app.router.add_get("/r/{recording_id}/video", recording_video)
    app.router.add_get("/r/{recording_id}/poster.jpg", recording_poster)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def recording_action(request: web.Request) -> web.Response:
    """Start or stop recording a meeting; only its hosts may. Starting twice changes nothing."""
    meetings = request.app[MEETINGS]
    meeting = await meetings.get(request.match_info["meeting_id"])
    if meeting is None:
        return json_error(404, "no such meeting")
    if not await meetings.is_host(meeting.id, _bearer(request)):
        return json_error(403, "only the meeting's hosts can start or stop recording")
    try:
        data = await read_json_object(request, {"action"})
        action = data.get("action")
        if action not in ("start", "stop"):
            raise BadRequest('action must be "start" or "stop"')
    except BadRequest as exc:
        return json_error(400, str(exc))
    service = request.app[RECORDINGS]
    try:
        status = await request.app[SESSIONS].recording(meeting, start=action == "start")
    except RecordingRefused as exc:
        return web.json_response({"error": str(exc), "code": exc.code}, status=REFUSED_STATUS.get(exc.code, 409))
    body: dict[str, object] = {"active": status.active}
    if status.since is not None:
        body["since"] = status.since.isoformat(timespec="seconds")
    if status.recording_id is not None:
        # The page exists from the start and shows the recording once it is composed.
        body["url"] = service.url(status.recording_id)
    return web.json_response(body)


async def _find(request: web.Request) -> tuple[Recording, RecordingService]:
    recording_id = request.match_info["recording_id"]
    service = request.app[RECORDINGS]
    recording = await service.store.get_recording(recording_id) if ids.is_valid_id(recording_id) else None
    if recording is None:
        raise web.HTTPNotFound()
    return recording, service


async def recording_page(request: web.Request) -> web.Response:
    """The recording's page, or why there is none: being prepared, failed, deleted (410).

    Dates are written in UTC and carry a machine-readable ``datetime`` for the page's script
    to show in the viewer's own time zone; the meeting's page is linked for the way back.
    """
    recording, service = await _find(request)
    meeting = await request.app[MEETINGS].store.get_meeting(recording.meeting_id)
    title = meeting.title if meeting is not None else "Meeting"
    timeline = one_row_per_name(recording.timeline)
    return render(
        "recording.html",
        status=410 if recording.state == DELETED else 200,
        recording=recording,
        title=title,
        state=recording.state,
        length=format_length(recording.duration) if recording.duration else "",
        made=recording.started_at.strftime("%Y-%m-%d %H:%M UTC"),
        made_iso=recording.started_at.isoformat(timespec="seconds"),
        until=recording.expires_at.date().isoformat(),
        until_iso=recording.expires_at.isoformat(timespec="seconds"),
        deleted_on=recording.deleted_at.date().isoformat() if recording.deleted_at else "",
        retention_days=request.app[CONFIG].recordings.retention_days,
        meeting_url=f"/m/{meeting.id}" if meeting is not None else "",
        video_url=f"/r/{recording.id}/video",
        poster_url=f"/r/{recording.id}/poster.jpg",
        timeline=timeline,
        timeline_json=json.dumps({"duration": recording.duration or 0, "speakers": timeline}),
        format_time=format_time,
        failed=recording.state == FAILED,
    )


async def recording_video(request: web.Request) -> web.StreamResponse:
    """The composed file, seekable (Range); ``?download=1`` makes it a download."""
    recording, service = await _find(request)
    if recording.state == DELETED:
        raise web.HTTPGone()
    path = service.folder / recording.id / recording.file if recording.state == READY and recording.file else None
    if path is None or not await _is_file(path):
        raise web.HTTPNotFound()
    response = web.FileResponse(path, headers={"Content-Type": "video/mp4", "Cache-Control": "private, no-cache"})
    if request.query.get("download"):
        meeting = await request.app[MEETINGS].store.get_meeting(recording.meeting_id)
        title = " ".join((meeting.title if meeting else "").split())[:80] or "Recording"
        name = f"{title} {recording.started_at.date().isoformat()}.mp4"
        # An ASCII name for old clients, the title as written (UTF-8, RFC 6266) for the rest.
        ascii_name = _UNSAFE_FILENAME.sub("", name).strip() or "recording.mp4"
        response.headers["Content-Disposition"] = (
            f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}")
    return response


async def recording_poster(request: web.Request) -> web.StreamResponse:
    """A still from the middle of the composed file (JPEG), made once and kept in memory."""
    recording, service = await _find(request)
    if recording.state == DELETED:
        raise web.HTTPGone()
    path = service.folder / recording.id / recording.file if recording.state == READY and recording.file else None
    if path is None or not await _is_file(path):
        raise web.HTTPNotFound()
    try:
        poster = await request.app[POSTERS].get(recording.id, path, recording.duration or 0.0)
    except (PosterError, av.error.FFmpegError, OSError):
        log.warning("no poster for recording %s", ids.short(recording.id))
        raise web.HTTPNotFound() from None
    return web.Response(body=poster, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})


async def _is_file(path: Path) -> bool:
    return await asyncio.to_thread(path.is_file)


def format_length(seconds: float) -> str:
    """``1 h 02 min``, ``12 min 05 s`` or ``8 s``: whole seconds cut, as players show them."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def format_time(seconds: float) -> str:
    """A player position: ``1:02:03`` or ``2:03``."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
