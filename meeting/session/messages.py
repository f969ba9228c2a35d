"""The signaling protocol, both ways: declared schemas, checked, no I/O.

Every message is a JSON object with a ``type``. What a client may send is declared in
``SCHEMA``; anything else (too big, not JSON, unknown type, unknown field, wrong type) raises
``SignalingError`` with a code the page can act on, and the connection carries on unchanged.
What the server sends is declared in ``SERVER_SCHEMA`` and built only through :func:`reply`,
which refuses a message that does not fit it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from meeting import jsontext

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_BYTES = 48 * 1024
MAX_CANDIDATE_BYTES = 1024
MAX_CHAT_CHARS = 1000
# E2EE chat carries base64 AES-GCM of up to MAX_CHAT_CHARS characters (4 bytes each at most).
MAX_CHAT_CIPHERTEXT = 6000
# Reactions: a fixed set, so a reaction says nothing but which of these it is. In encrypted
# meetings they travel sealed like chat (base64 of a 12-byte IV, the emoji, a 16-byte tag).
REACTIONS = ("\U0001F44D", "\U0001F44F", "\u2764\uFE0F", "\U0001F602", "\U0001F62E", "\U0001F389",
             "\U0001F914", "\U0001F44B")
MAX_REACTION_CIPHERTEXT = 128
# The end-to-end key check in a join: the first 8 bytes of HMAC-SHA256(key, "meetnow key
# check"), in hex. Pages compare them to see who holds another key; it is never the key.
KEY_CHECK = re.compile(r"[0-9a-f]{16}")
MUTE_ANSWERS = ("accepted", "declined")
MAX_REQUEST_ID = 64
MAX_TILES = 64  # tiles one video-sizes message may describe
MAX_TILE_PIXELS = 16384  # width or height, device pixels
ID_FIELD: dict[str, tuple[type | tuple[type, ...], bool]] = {"id": (str, True)}

# type -> field -> (python type, required)
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "join": {"name": (str, True), "publish": (list, False), "resume": (str, False),
             "host_key": (str, False), "audio_muted": (bool, False), "video_muted": (bool, False),
             "key_check": (str, False)},
    # Before joining: be told whether the meeting records, is locked, has a host (pre-join).
    "watch": {},
    "answer": {"sdp": (str, True)},
    "candidate": {"candidate": (str, True), "sdpMid": ((str, type(None)), False),
                  "sdpMLineIndex": ((int, type(None)), False)},
    "media": {"audio_muted": (bool, True), "video_muted": (bool, True)},
    "ping": {},
    "leave": {},
    "chat": {"text": (str, False), "ciphertext": (str, False)},
    "publish": {"source": (str, True)},
    "unpublish": {"source": (str, True)},
    "hand": {"raised": (bool, True)},
    "react": {"emoji": (str, False), "ciphertext": (str, False)},
    "mute-answer": {"request": (str, True), "answer": (str, True)},
    # how large the page shows each remote video: [{participant, source, width, height}]
    "video-sizes": {"tiles": (list, True)},
    # host actions
    "lock": {"locked": (bool, True)},
    "admit": ID_FIELD,
    "deny": ID_FIELD,
    "remove": ID_FIELD,
    "ask-mute": ID_FIELD,
    "mute-all": {},
    "lower-hand": ID_FIELD,
    "make-host": ID_FIELD,
    "end-meeting": {},
    "start-recording": {},
    "stop-recording": {},
}
HOST_ACTIONS = ("lock", "admit", "deny", "remove", "ask-mute", "mute-all", "lower-hand", "make-host",
                "end-meeting", "start-recording", "stop-recording")


# What the server sends: type -> field -> (python type, required).
_TEXT: dict[str, tuple[type | tuple[type, ...], bool]] = {"message": (str, True)}
SERVER_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "welcome": {"you": (dict, True), "participants": (list, True), "ice_servers": (list, True),
                "resume": (str, True), "locked": (bool, True), "e2ee": (bool, True),
                "recording": (dict, False), "recordings": (list, False)},
    "offer": {"sdp": (str, True), "slots": (list, True)},
    "participant-joined": {"participant": (dict, True)},
    "participant-updated": {"participant": (dict, True)},
    "participant-left": {"id": (str, True)},
    "chat": {"from": (str, True), "name": (str, True), "at": (str, True), "text": (str, False),
             "ciphertext": (str, False)},
    "locked": {"locked": (bool, True)},
    "lobby": {"waiting": (list, True)},
    "lobby-added": {"waiting": (dict, True)},
    "lobby-removed": {"id": (str, True)},
    "waiting": {"message": (str, True), "hosts_present": (bool, False)},
    "mute-request": {"by": (str, True), "request": (str, True)},
    "mute-answer": {"request": (str, True), "id": (str, True), "name": (str, True), "answer": (str, True)},
    "muted": {"by": (str, True)},
    "hand-lowered": {"by": (str, True)},
    "reaction": {"from": (str, True), "emoji": (str, False), "ciphertext": (str, False)},
    "made-host": {"by": (str, True), "recordings": (list, False)},
    "status": {"recording": (bool, True), "locked": (bool, True), "hosts_present": (bool, True)},
    "knocking": {"count": (int, True)},
    "recording": {"active": (bool, True), "available": (bool, True), "since": (str, False),
                  "reason": (str, False), "message": (str, False)},
    "recording-ready": {"id": (str, True), "url": (str, True), "started_at": (str, True),
                        "delete_on": (str, True)},
    "notice": {"text": (str, True)},
    # a tile's video stopped (or came back) to save this viewer's bandwidth
    "video-paused": {"participant": (str, True), "source": (str, True), "paused": (bool, True)},
    "denied": _TEXT,
    "removed": _TEXT,
    "meeting-ended": _TEXT,
    "error": {"code": (str, True), "message": (str, True)},
    "pong": {},
}

# Websocket close codes the server uses (4000-4999 are the application's own).
CLOSE_GOING_AWAY = 1001  # the server is shutting down: reconnecting later may work
CLOSE_FINAL = 4000  # ended on purpose (meeting ended, removed, denied, full): do not reconnect
CLOSE_RETRY = 4001  # this connection failed (media, rate limits): a fresh join may work


def reply(kind: str, **fields: Any) -> dict[str, Any]:
    """A server message of ``kind``; raises ValueError if it does not fit SERVER_SCHEMA."""
    schema = SERVER_SCHEMA.get(kind)
    if schema is None:
        raise ValueError(f"no server message of type {kind!r}")
    for name, value in fields.items():
        if name not in schema:
            raise ValueError(f"{kind}: undeclared field {name}")
        expected = schema[name][0]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ValueError(f"{kind}: field {name} has the wrong type")
    for name, (_, required) in schema.items():
        if required and name not in fields:
            raise ValueError(f"{kind}: missing field {name}")
    return {"type": kind, **fields}


def error(code: str, message: str) -> dict[str, Any]:
    """An ``error`` message: ``code`` for programs, ``message`` for people."""
    return reply("error", code=code, message=message)


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
    host_key: str | None = None
    audio_muted: bool = False
    video_muted: bool = False
    key_check: str | None = None  # end-to-end encrypted meetings only


@dataclass(frozen=True)
class Watch:
    pass


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


@dataclass(frozen=True)
class Chat:
    text: str | None  # plain meetings
    ciphertext: str | None  # end-to-end encrypted meetings: the server cannot read it


@dataclass(frozen=True)
class Publish:
    source: str
    on: bool


@dataclass(frozen=True)
class Hand:
    raised: bool


@dataclass(frozen=True)
class React:
    emoji: str | None  # plain meetings: one of REACTIONS
    ciphertext: str | None  # end-to-end encrypted meetings


@dataclass(frozen=True)
class MuteAnswer:
    request: str
    accepted: bool


@dataclass(frozen=True)
class TileSize:
    participant: str
    source: str  # "camera" | "screen"
    width: int  # device pixels; 0 when the tile is not shown
    height: int


@dataclass(frozen=True)
class VideoSizes:
    """How large the page shows each remote video (the server picks a quality to match)."""

    tiles: tuple[TileSize, ...]


@dataclass(frozen=True)
class HostAction:
    """A host's command: ``action`` is one of HOST_ACTIONS; ``target`` a participant or lobby id."""

    action: str
    target: str | None = None
    locked: bool | None = None


ClientMessage = Union[Join, Watch, Answer, Candidate, MediaState, Ping, Leave, Chat, Publish, Hand, React,
                      MuteAnswer, VideoSizes, HostAction]


def parse_message(text: str | bytes) -> ClientMessage:
    """Decode and validate one client message, or raise SignalingError."""
    size = len(text)
    if isinstance(text, str) and size * 4 > MAX_MESSAGE_BYTES:
        size = len(text.encode("utf-8", "surrogatepass"))  # the limit is in bytes, as sent
    if size > MAX_MESSAGE_BYTES:
        raise SignalingError("too-large", f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        data = jsontext.loads(text)
    except jsontext.JSONTextError as exc:
        raise SignalingError("bad-json", f"message is not usable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SignalingError("bad-message", "message must be a JSON object")
    kind = data.pop("type", None)
    if kind is None:
        raise SignalingError("unknown-type", "message has no type")
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
        key_check = data.get("key_check")
        if key_check is not None and not KEY_CHECK.fullmatch(key_check):
            raise SignalingError("bad-message", "join: key_check is 16 hexadecimal digits")
        return Join(data["name"], frozenset(publish), data.get("resume"), data.get("host_key"),
                    data.get("audio_muted", False), data.get("video_muted", False), key_check)
    if kind == "watch":
        return Watch()
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
    if kind == "leave":
        return Leave()
    if kind == "chat":
        return _chat(data)
    if kind in ("publish", "unpublish"):
        if data["source"] != "screen":
            raise SignalingError("bad-message", f"{kind}: only screen can be added or removed")
        return Publish("screen", kind == "publish")
    if kind == "hand":
        return Hand(data["raised"])
    if kind == "react":
        return _react(data)
    if kind == "mute-answer":
        if data["answer"] not in MUTE_ANSWERS or len(data["request"]) > MAX_REQUEST_ID:
            raise SignalingError("bad-message", "mute-answer: answer is accepted or declined, to a request")
        return MuteAnswer(data["request"], data["answer"] == "accepted")
    if kind == "video-sizes":
        return _video_sizes(data["tiles"])
    if kind == "lock":
        return HostAction("lock", locked=data["locked"])
    return HostAction(kind, target=data.get("id"))


def _video_sizes(items: list[Any]) -> VideoSizes:
    if len(items) > MAX_TILES:
        raise SignalingError("bad-message", f"video-sizes: at most {MAX_TILES} tiles")
    tiles = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"participant", "source", "width", "height"}:
            raise SignalingError("bad-message", "video-sizes: each tile has participant, source, width, height")
        participant, source, width, height = item["participant"], item["source"], item["width"], item["height"]
        if not isinstance(participant, str) or not 0 < len(participant) <= 64:
            raise SignalingError("bad-message", "video-sizes: participant must be an id")
        if source not in ("camera", "screen"):
            raise SignalingError("bad-message", "video-sizes: source is camera or screen")
        for value in (width, height):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TILE_PIXELS:
                raise SignalingError("bad-message", f"video-sizes: sizes are 0 to {MAX_TILE_PIXELS} pixels")
        tiles.append(TileSize(participant, source, width, height))
    return VideoSizes(tuple(tiles))


def _chat(data: dict[str, Any]) -> Chat:
    text, ciphertext = data.get("text"), data.get("ciphertext")
    if (text is None) == (ciphertext is None):
        raise SignalingError("bad-message", "chat: send text or ciphertext")
    if text is not None:
        text = text.strip()
        if not text:
            raise SignalingError("bad-message", "chat: empty message")
        if len(text) > MAX_CHAT_CHARS:
            raise SignalingError("chat-too-long", f"messages are limited to {MAX_CHAT_CHARS} characters")
    elif len(ciphertext) > MAX_CHAT_CIPHERTEXT:  # type: ignore[arg-type]
        raise SignalingError("chat-too-long", f"messages are limited to {MAX_CHAT_CHARS} characters")
    return Chat(text, ciphertext)


def _react(data: dict[str, Any]) -> React:
    emoji, ciphertext = data.get("emoji"), data.get("ciphertext")
    if (emoji is None) == (ciphertext is None):
        raise SignalingError("bad-message", "react: send emoji or ciphertext")
    if emoji is not None and emoji not in REACTIONS:
        raise SignalingError("bad-message", "react: not one of the reactions")
    if ciphertext is not None and not 0 < len(ciphertext) <= MAX_REACTION_CIPHERTEXT:
        raise SignalingError("bad-message", "react: ciphertext of the wrong size")
    return React(emoji, ciphertext)
