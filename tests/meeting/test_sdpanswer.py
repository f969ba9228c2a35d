"""Checking answers against offers, on SDP text only."""

from __future__ import annotations

import pytest

from meeting.media.sdpanswer import AnswerError, check_answer

OFFER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=msid-semantic:WMS *
m=audio 5000 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=recvonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=rtcp-mux
a=ssrc:1 cname:x
a=rtpmap:96 opus/48000/2
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuv
a=fingerprint:sha-256 AA:BB
a=setup:actpass
m=video 5000 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 127.0.0.1
a=recvonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:1
a=rtcp-mux
a=ssrc-group:FID 2 3
a=ssrc:2 cname:x
a=ssrc:3 cname:x
a=rtpmap:97 VP8/90000
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuv
a=fingerprint:sha-256 AA:BB
a=setup:actpass
m=video 5000 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:2
a=rtcp-mux
a=rtpmap:97 VP8/90000
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuv
a=fingerprint:sha-256 AA:BB
a=setup:actpass
""".replace("\n", "\r\n")

# What Chrome answers, trimmed: extra attributes aiortc does not model are harmless.
ANSWER = """v=0
o=- 99 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=extmap-allow-mixed
a=msid-semantic: WMS stream
m=audio 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:wxyz
a=ice-pwd:zyxwvutsrqponmlkjihgfe
a=ice-options:trickle
a=fingerprint:sha-256 CC:DD
a=setup:active
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=sendonly
a=msid:stream track-a
a=rtcp-mux
a=rtpmap:96 opus/48000/2
a=fmtp:96 minptime=10;useinbandfec=1
a=ssrc:1001 cname:abc
m=video 9 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:wxyz
a=ice-pwd:zyxwvutsrqponmlkjihgfe
a=fingerprint:sha-256 CC:DD
a=setup:active
a=mid:1
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=sendonly
a=msid:stream track-v
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=ssrc-group:FID 2001 2002
a=ssrc:2001 cname:abc
a=ssrc:2002 cname:abc
m=video 9 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 0.0.0.0
a=ice-ufrag:wxyz
a=ice-pwd:zyxwvutsrqponmlkjihgfe
a=fingerprint:sha-256 CC:DD
a=setup:active
a=mid:2
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtpmap:97 VP8/90000
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
""".replace("\n", "\r\n")


def test_a_browser_like_answer_is_accepted_and_described():
    mic, camera, view = check_answer(OFFER, ANSWER)
    assert (mic.mid, mic.kind, mic.direction, mic.ssrc, mic.rtx_ssrc) == ("0", "audio", "sendonly", 1001, None)
    assert (camera.ssrc, camera.rtx_ssrc) == (2001, 2002)
    assert camera.rtx_map() == {98: 97} and camera.rtx_for() == {97: 98}
    assert camera.media_codec.name == "VP8"
    assert camera.extensions == {
        "urn:ietf:params:rtp-hdrext:sdes:mid": 1,
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 3,
    }
    assert view.direction == "recvonly" and view.ssrc is None
    assert view.extensions == {"urn:ietf:params:rtp-hdrext:sdes:mid": 1}  # abs-send-time declined


def test_lf_line_endings_are_accepted():
    assert len(check_answer(OFFER, ANSWER.replace("\r\n", "\n"))) == 3


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda a: "", "empty"),
        (lambda a: "hello", "m-lines"),
        (lambda a: a.split("m=video")[0], "m-lines"),
        (lambda a: a.replace("a=mid:1", "a=mid:9"), "does not match"),
        (lambda a: a.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 1 0 2"), "BUNDLE"),
        (lambda a: a.replace("a=sendonly\r\na=msid:stream track-v", "a=recvonly\r\na=msid:stream track-v"), "direction"),
        (lambda a: a.replace("a=recvonly", "a=sendonly"), "direction"),
        (lambda a: a.replace("a=setup:active", "a=setup:actpass"), "DTLS"),
        (lambda a: a.replace("a=fingerprint:sha-256 CC:DD\r\n", ""), "fingerprint"),
        (lambda a: a.replace("a=ice-pwd:zyxwvutsrqponmlkjihgfe\r\n", ""), "ICE"),
        (lambda a: a.replace("a=rtcp-mux\r\n", ""), "rtcp-mux"),
        (lambda a: a.replace("a=rtpmap:96 opus/48000/2", "a=rtpmap:96 speex/8000"), "codec"),
        (lambda a: a.replace("m=audio 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 96 300"), "parsed"),
        (lambda a: a.replace("a=setup:active", "a=setup:sideways"), "parsed"),
    ],
)
def test_unusable_answers_are_rejected(edit, reason):
    with pytest.raises(AnswerError, match=reason):
        check_answer(OFFER, edit(ANSWER))
