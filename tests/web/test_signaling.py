import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meeting.session.messages import (
    MAX_MESSAGE_BYTES, Answer, Candidate, Join, Leave, MediaState, Ping, SignalingError, parse_message,
)


def test_valid_messages() -> None:
    assert parse_message('{"type":"join","name":"Ann"}') == Join("Ann", frozenset({"mic", "camera"}), None)
    assert parse_message('{"type":"join","name":"A","publish":["mic"],"resume":"t"}') == Join(
        "A", frozenset({"mic"}), "t")
    assert parse_message('{"type":"answer","sdp":"v=0\\r\\n"}') == Answer("v=0\r\n")
    assert parse_message('{"type":"candidate","candidate":"","sdpMid":null,"sdpMLineIndex":null}') == Candidate(
        "", None, None)
    assert parse_message('{"type":"media","audio_muted":true,"video_muted":false}') == MediaState(True, False)
    assert parse_message('{"type":"ping"}') == Ping()
    assert parse_message('{"type":"leave"}') == Leave()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("nope", "bad-json"),
        ("[]", "bad-message"),
        ('{"name":"x"}', "unknown-type"),
        ('{"type":"explode"}', "unknown-type"),
        ('{"type":"join"}', "bad-message"),
        ('{"type":"join","name":5}', "bad-message"),
        ('{"type":"join","name":"a","publish":["screen"]}', "bad-message"),
        ('{"type":"join","name":"a","admin":true}', "bad-message"),
        ('{"type":"answer","sdp":"hello"}', "bad-sdp"),
        ('{"type":"candidate","candidate":"x","sdpMLineIndex":true}', "bad-message"),
        ('{"type":"candidate","candidate":"' + "x" * 2000 + '"}', "bad-candidate"),
        ('{"type":"media","audio_muted":1,"video_muted":false}', "bad-message"),
        ('{"type":"ping","x":' + "[" * 100000 + "]" * 100000 + "}", "too-large"),
        ("[" * 5000 + "]" * 5000, "bad-json"),
        ('{"type":"answer","sdp":"v=0' + "a" * MAX_MESSAGE_BYTES + '"}', "too-large"),
        ('{"type":"ping","pad":"' + "\u20ac" * (MAX_MESSAGE_BYTES // 3 + 1) + '"}', "too-large"),  # bytes, not characters
        ('{"name":"a"}', "unknown-type"),
    ],
)
def test_bad_messages_raise_with_a_code(raw: str, code: str) -> None:
    with pytest.raises(SignalingError) as error:
        parse_message(raw)
    assert error.value.code == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["type", "name", "sdp", "candidate", "publish", "resume",
                                        "audio_muted", "video_muted", "sdpMid", "x"]),
                       json_values | st.sampled_from(["join", "answer", "candidate", "media", "ping"])))
def test_any_json_object_parses_or_raises_signaling_error(data: dict) -> None:
    try:
        parse_message(json.dumps(data))
    except SignalingError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_parse_or_raise_signaling_error(raw: bytes | str) -> None:
    try:
        parse_message(raw)
    except SignalingError:
        pass
