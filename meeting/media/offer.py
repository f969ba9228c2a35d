"""What the server offers a browser, and the shape of an offer as the session sees it.

Forwarding never transcodes, so every peer connection offers the same codecs with the same
payload types and header extensions, and a publisher's packets suit every viewer
unchanged. VP8 only: H264 would need every viewer to decode the profile a publisher picked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import RTCRtpSender
from aiortc.codecs import HEADER_EXTENSIONS

CODEC_PREFERENCES = {
    "audio": [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"],
    "video": [
        c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")
    ],
}
OFFERED_EXTENSION_IDS = {kind: {x.id for x in HEADER_EXTENSIONS[kind]} for kind in ("audio", "video")}
_MSID_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_CNAME = re.compile(r"^a=ssrc:\d+ cname:(\S+)", re.MULTILINE)


class SdpError(ValueError):
    """A malformed or unusable answer, or no offer outstanding; nothing changed."""


class CandidateError(ValueError):
    """A malformed ICE candidate; nothing changed."""


@dataclass(frozen=True)
class TrackSlot:
    """One m-line as the browser must see it."""

    mid: str
    kind: str  # "audio" | "video"
    source: str  # "mic" | "camera" | "screen"
    direction: str  # "publish" (the browser sends on this mid) | "receive" (browser receives)
    participant: str  # owner of the media: the peer itself for "publish", the publisher for "receive"


@dataclass(frozen=True)
class Offer:
    sdp: str
    slots: tuple[TrackSlot, ...]  # every active m-line of this offer


def stream_id(participant_id: str) -> str:
    """The msid stream id of a participant's tracks: safe characters, at most 64."""
    return _MSID_UNSAFE.sub("_", participant_id)[:64] or "-"


def cname_of(sdp: str) -> str | None:
    """The RTCP CNAME a browser's SDP declares, if any."""
    match = _CNAME.search(sdp)
    return match.group(1) if match else None
