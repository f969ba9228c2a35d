"""The signaling protocol's client messages: a declared schema, checked on arrival, no I/O.

Every message is a JSON object with a ``type``. What a type may carry is declared in
``SCHEMA``; anything else (too big, not JSON, unknown type, unknown field, wrong type) raises
``SignalingError`` with a code the page can act on, and the connection carries on unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Union

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_BYTES = 48 * 1024
MAX_CANDIDATE_BYTES = 1024

# type -> field -> (python type, required)
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "join": {"name": (str, True), "publish": (list, False), "resume": (str, False)},
    "answer": {"sdp": (str, True)},
    "candidate": {"candidate": (str, True), "sdpMid": ((str, type(None)), False),
                  "sdpMLineIndex": ((int, type(None)), False)},
    "media": {"audio_muted": (bool, True), "video_muted": (bool, True)},
    "ping": {},
    "leave": {},
}


class SignalingError(ValueError):
    """A message refused; ``code`` is stable for programs, the text is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Join:
    name: str
    publish: frozenset[str]
    resume: str | None


@dataclass(frozen=True)
class Answer:
    sdp: str


@dataclass(frozen=True)
class Candidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True)
class MediaState:
    audio_muted: bool
    video_muted: bool


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Leave:
    pass


ClientMessage = Union[Join, Answer, Candidate, MediaState, Ping, Leave]


def parse_message(text: str | bytes) -> ClientMessage:
    """Decode and validate one client message, or raise SignalingError."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise SignalingError("too-large", f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SignalingError("bad-json", "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise SignalingError("bad-message", "message must be a JSON object")
    kind = data.pop("type", None)
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise SignalingError("unknown-type", f"unknown message type: {str(kind)[:40]}")
    _check_fields(kind, data)
    return _build(kind, data)


def _check_fields(kind: str, data: dict[str, Any]) -> None:
    fields = SCHEMA[kind]
    for name in data:
        if name not in fields:
            raise SignalingError("bad-message", f"{kind}: unknown field {name[:40]}")
    for name, (expected, required) in fields.items():
        if name not in data:
            if required:
                raise SignalingError("bad-message", f"{kind}: missing field {name}")
            continue
        value = data[name]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise SignalingError("bad-message", f"{kind}: field {name} has the wrong type")


def _build(kind: str, data: dict[str, Any]) -> ClientMessage:
    if kind == "join":
        publish = data.get("publish", ["mic", "camera"])
        if not all(isinstance(s, str) and s in ("mic", "camera") for s in publish):
            raise SignalingError("bad-message", "join: publish lists only mic and camera")
        return Join(data["name"], frozenset(publish), data.get("resume"))
    if kind == "answer":
        if len(data["sdp"]) > MAX_SDP_BYTES or not data["sdp"].startswith("v=0"):
            raise SignalingError("bad-sdp", "answer: not a session description")
        return Answer(data["sdp"])
    if kind == "candidate":
        if len(data["candidate"]) > MAX_CANDIDATE_BYTES:
            raise SignalingError("bad-candidate", "candidate too long")
        return Candidate(data["candidate"], data.get("sdpMid"), data.get("sdpMLineIndex"))
    if kind == "media":
        return MediaState(data["audio_muted"], data["video_muted"])
    if kind == "ping":
        return Ping()
    return Leave()
