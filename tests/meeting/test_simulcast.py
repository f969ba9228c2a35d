"""Simulcast in the server's offer, and the RIDs read back from a browser's answer."""

from __future__ import annotations

from meeting.media.rtp import REPAIRED_RID_URI, RID_URI
from meeting.media.sdpanswer import check_answer
from meeting.media.simulcast import RIDS, answered_rids, media_sections, offer_simulcast

OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2",
    "m=audio 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=recvonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid", "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=mid:0", "a=rtcp-mux", "a=rtpmap:96 opus/48000/2",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuv", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "c=IN IP4 0.0.0.0", "a=recvonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=mid:1", "a=rtcp-mux", "a=rtpmap:97 VP8/90000", "a=rtcp-fb:97 nack", "a=rtpmap:98 rtx/90000",
    "a=fmtp:98 apt=97",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuv", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "c=IN IP4 0.0.0.0", "a=sendonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=mid:2", "a=rtcp-mux", "a=rtpmap:97 VP8/90000", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97",
    "a=ssrc-group:FID 11 12", "a=ssrc:11 cname:x", "a=ssrc:12 cname:x",
    "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuv", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass", "",
])


def answer_for(offer: str, simulcast_line: str | None = "a=simulcast:send lo;hi") -> str:
    """A browser-like answer: directions flipped, the RIDs echoed as Chromium does."""
    out = []
    for line in offer.split("\r\n"):
        if line in ("a=recvonly", "a=sendonly"):
            line = "a=sendonly" if line == "a=recvonly" else "a=recvonly"
        elif line == "a=setup:actpass":
            line = "a=setup:active"
        elif line.startswith("a=rid:"):
            line = line.replace(" recv", " send")
        elif line.startswith("a=simulcast:"):
            if simulcast_line is None:
                continue
            line = simulcast_line
        out.append(line)
    return "\r\n".join(out)


def test_only_the_named_m_lines_ask_for_simulcast():
    offer = offer_simulcast(OFFER, {"1"})
    audio, publish, receive = media_sections(offer)
    assert "a=rid:lo recv\na=rid:hi recv\na=simulcast:recv lo;hi\n" in publish
    assert f"a=extmap:13 {RID_URI}" in publish and f"a=extmap:14 {REPAIRED_RID_URI}" in publish
    assert "rid" not in audio and "rid" not in receive
    assert offer_simulcast(OFFER, set()) == OFFER
    assert offer.count("\r\n") == offer.count("\n")  # line endings kept


def test_the_answer_says_which_layers_come_lowest_first():
    offer = offer_simulcast(OFFER, {"1"})
    lines = check_answer(offer, answer_for(offer, "a=simulcast:send hi;~lo"))
    assert [line.rids for line in lines] == [(), RIDS, ()]
    assert lines[1].extensions[RID_URI] == 13 and lines[1].ssrc is None


def test_an_answer_without_simulcast_is_one_stream():
    offer = offer_simulcast(OFFER, {"1"})
    assert [line.rids for line in check_answer(offer, answer_for(offer, None))] == [(), (), ()]


def test_rids_the_server_did_not_offer_are_ignored():
    section = "m=video 9 X 97\na=rid:lo send\na=rid:zz send\na=simulcast:send zz;lo,hi;hi\n"
    assert answered_rids(section) == ("lo",)  # hi is not declared with a=rid
    assert answered_rids("m=video 9 X 97\na=rid:lo recv\na=simulcast:recv lo\n") == ()
