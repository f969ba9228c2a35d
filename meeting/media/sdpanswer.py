"""Checking a browser's SDP answer against the server's offer, before aiortc applies it.

aiortc's ``setRemoteDescription`` validates some things up front but fails on others
half-way (for instance "no common codec" after earlier m-lines were updated), and it
stops the shared transport when the BUNDLE group of an answer names another m-line
first. So the answer is checked here first, with no side effects, and only a clean
answer reaches aiortc. The same pass extracts what the media plane needs per m-line:
the answerer's direction, SSRCs, header-extension ids, payload types and the simulcast
layers (RIDs) it agreed to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import sdp as aiortc_sdp

from meeting.media.rtp import RID_URI
from meeting.media.simulcast import answered_rids, media_sections

_ANSWER_DIRECTIONS = {
    # offered direction -> directions the answer may use (RFC 3264 section 6.1)
    "sendonly": ("recvonly", "inactive"),
    "recvonly": ("sendonly", "inactive"),
    "sendrecv": ("sendrecv", "sendonly", "recvonly", "inactive"),
    "inactive": ("inactive",),
}


class AnswerError(ValueError):
    """The answer cannot be used; the message says why."""


@dataclass(frozen=True)
class AnsweredCodec:
    payload_type: int
    name: str  # "VP8", "opus", "rtx", ...
    clock_rate: int
    apt: int | None = None  # for RTX: the payload type it repairs


@dataclass(frozen=True)
class AnsweredLine:
    """One m-line of an accepted answer, seen from the answerer (the browser)."""

    mid: str
    kind: str
    direction: str
    codecs: tuple[AnsweredCodec, ...]
    extensions: dict[str, int] = field(default_factory=dict)  # uri -> id
    ssrc: int | None = None
    rtx_ssrc: int | None = None
    rids: tuple[str, ...] = ()  # simulcast layers it sends, lowest first (none: one stream)

    @property
    def media_codec(self) -> AnsweredCodec | None:
        """The codec the answerer will send first (its first non-RTX codec)."""
        return next((c for c in self.codecs if c.name.lower() != "rtx"), None)

    def rtx_map(self) -> dict[int, int]:
        """RTX payload type -> media payload type."""
        return {c.payload_type: c.apt for c in self.codecs if c.apt is not None}

    def rtx_for(self) -> dict[int, int]:
        """Media payload type -> RTX payload type."""
        return {c.apt: c.payload_type for c in self.codecs if c.apt is not None}


def check_answer(offer_sdp: str, answer_sdp: str) -> tuple[AnsweredLine, ...]:
    """Validate ``answer_sdp`` against ``offer_sdp``; return its m-lines.

    Raises AnswerError for anything aiortc would reject or mishandle.
    """
    if not isinstance(answer_sdp, str) or not answer_sdp.strip():
        raise AnswerError("answer is empty")
    try:
        offer = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # our own SDP: a bug if it happens
        raise AnswerError(f"offer cannot be parsed: {exc}") from None
    try:
        answer = aiortc_sdp.SessionDescription.parse(answer_sdp.replace("\r\n", "\n").replace("\n", "\r\n"))
    except Exception as exc:  # aiortc's parser raises assorted errors on bad input
        raise AnswerError(f"answer cannot be parsed: {type(exc).__name__}") from None

    if len(answer.media) != len(offer.media):
        raise AnswerError(f"answer has {len(answer.media)} m-lines, offer has {len(offer.media)}")

    bundle = next((g for g in answer.group if g.semantic == "BUNDLE"), None)
    if bundle is not None and bundle.items and offer.media and bundle.items[0] != offer.media[0].rtp.muxId:
        # aiortc would replace and stop the transport every m-line shares.
        raise AnswerError("answer BUNDLE group must start with the offer's first m-line")

    sections = media_sections(answer_sdp)
    lines = []
    for i, (om, am) in enumerate(zip(offer.media, answer.media)):
        where = f"m-line {i}"
        if (am.kind, am.rtp.muxId) != (om.kind, om.rtp.muxId):
            raise AnswerError(f"{where}: kind/mid {am.kind}/{am.rtp.muxId} does not match the offer")
        if am.kind not in ("audio", "video"):
            raise AnswerError(f"{where}: unexpected media kind {am.kind}")
        if am.ice is None or not am.ice.usernameFragment or not am.ice.password:
            raise AnswerError(f"{where}: ICE username fragment or password is missing")
        if am.dtls is None or am.dtls.role not in ("client", "server"):
            raise AnswerError(f"{where}: DTLS setup must be active or passive in an answer")
        if not am.dtls.fingerprints:
            raise AnswerError(f"{where}: DTLS fingerprint is missing")
        if not am.rtcp_mux:
            raise AnswerError(f"{where}: rtcp-mux is required")
        offered = om.direction or "sendrecv"
        direction = am.direction or "sendrecv"
        if direction not in _ANSWER_DIRECTIONS[offered]:
            raise AnswerError(f"{where}: direction {direction} cannot answer {offered}")
        offered_codecs = {(c.payloadType, c.name.lower(), c.clockRate) for c in om.rtp.codecs}
        codecs = []
        for c in am.rtp.codecs:
            if (c.payloadType, c.name.lower(), c.clockRate) not in offered_codecs:
                continue  # aiortc ignores codecs it did not offer too
            apt = c.parameters.get("apt") if c.name.lower() == "rtx" else None
            if c.name.lower() == "rtx" and not isinstance(apt, int):
                continue
            codecs.append(AnsweredCodec(c.payloadType, c.name, c.clockRate, apt))
        if not any(c.apt is None for c in codecs):
            raise AnswerError(f"{where}: no codec in common with the offer")
        offered_ext = {(x.id, x.uri) for x in om.rtp.headerExtensions}
        extensions = {x.uri: x.id for x in am.rtp.headerExtensions if (x.id, x.uri) in offered_ext}
        ssrc, rtx_ssrc = _answer_ssrcs(am)
        # Layers are told apart by their RID: without the extension there is one stream.
        rids = answered_rids(sections[i]) if RID_URI in extensions and i < len(sections) else ()
        lines.append(
            AnsweredLine(
                mid=am.rtp.muxId,
                kind=am.kind,
                direction=direction,
                codecs=tuple(codecs),
                extensions=extensions,
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                rids=rids,
            )
        )
    return tuple(lines)


def _answer_ssrcs(media: aiortc_sdp.MediaDescription) -> tuple[int | None, int | None]:
    for group in media.ssrc_group:
        if group.semantic == "FID" and len(group.items) >= 2:
            return int(group.items[0]), int(group.items[1])
    if media.ssrc:
        return media.ssrc[0].ssrc, None
    return None, None
