"""The strict JSON decoder: what it refuses, what it keeps, and that it raises nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meeting.jsontext import MAX_DEPTH, MAX_INT_DIGITS, JSONTextError, loads


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("1" * 5000, f"more than {MAX_INT_DIGITS} digits"),
        ('{"n": -' + "9" * (MAX_INT_DIGITS + 1) + "}", f"more than {MAX_INT_DIGITS} digits"),
        ("[" * 30_000 + "]" * 30_000, f"deeper than {MAX_DEPTH}"),
        ('{"a":' * 30_000 + "1" + "}" * 30_000, f"deeper than {MAX_DEPTH}"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
        ('"\\ud800"', "lone UTF-16 surrogate"),
        ('{"title": "x\\udfffy"}', "lone UTF-16 surrogate"),
        ('{"\\udc00": 1}', "lone UTF-16 surrogate"),
        ('["\\ude00\\ud83d"]', "lone UTF-16 surrogate"),  # low before high is no pair
        ('"\ud800"', "lone UTF-16 surrogate"),  # already in the text
        ("NaN", "NaN is not a JSON number"),
        ('{"x": -Infinity}', "-Infinity is not a JSON number"),
        ("1e400", "out of range"),
        ("-1E+999", "out of range"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0xff at position 0)"),
        (b'{"t": "\xed\xa0\x80"}', "not UTF-8 text"),  # a surrogate encoded as UTF-8
        (b"\xef\xbb\xbf{}", "byte order mark"),
        ('{"a": 1, "a": 2}', 'names member "a" twice'),
        ("{not json", "line 1, column 2"),
        ("", "Expecting value"),
        ('"unterminated', "Unterminated string"),
        ('"' + '\\"' * 20_000, "Unterminated string"),
    ],
)
def test_refused_with_a_clear_message(data: str | bytes, message: str) -> None:
    with pytest.raises(JSONTextError) as caught:
        loads(data)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ('{"title": "Design review", "e2ee": false}', {"title": "Design review", "e2ee": False}),
        (b'{"t": "\xc3\xa9\xf0\x9f\x98\x80"}', {"t": "é😀"}),
        ('"\\ud83d\\ude00"', "😀"),  # a surrogate pair is one character
        ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, not a surrogate
        ('{"s": "[[[[{{{{"}', {"s": "[[[[{{{{"}),  # brackets inside strings are not nesting
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)),
        ("-" + "9" * MAX_INT_DIGITS, -int("9" * MAX_INT_DIGITS)),
        ("1.5e300", 1.5e300),
        ("null", None),
    ],
)
def test_kept(data: str | bytes, value: Any) -> None:
    assert loads(data) == value


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(_json_values)
def test_any_reasonable_value_round_trips(value: Any) -> None:
    assert loads(json.dumps(value)) == value
    assert loads(json.dumps(value, ensure_ascii=False).encode()) == value


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.text(alphabet='[]{}",:\\u0123456789dDeE.-+ natrufls', max_size=200)))
def test_raises_nothing_but_its_own_error(data: str | bytes) -> None:
    try:
        loads(data)
    except JSONTextError:
        pass
