"""Log fields and terminal text: what a client wrote can neither forge a line nor drive a terminal."""

from __future__ import annotations

import pytest

from meeting.logfmt import kv, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Design review", "Design review"),
        ("é 😀 日本", "é 😀 日本"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # clear screen
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # set the window title
        ("a\x00b\rc\nd\te", "a\\x00b\\rc\\nd\\te"),
        ("\x7f\x9b31m", "\\x7f\\x9b31m"),  # DEL, and CSI in its one-byte C1 form
        ("invoice\u202egnp.exe", "invoice\\u202egnp.exe"),  # right-to-left override
        ("a\u2028b\u2066c", "a\\u2028b\\u2066c"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_kv_quotes_and_escapes_what_could_forge_a_line() -> None:
    assert kv(method="GET", status=200) == "method=GET status=200"
    assert kv(path="/a b") == 'path="/a b"'
    assert kv(path='/x" status=200') == 'path="/x\\" status=200"'
    assert kv(path="/m/\x1b]0;t\x07") == 'path="/m/\\x1b]0;t\\x07"'
    assert kv(path="/a\nINFO forged") == 'path="/a\\nINFO forged"'
    # A backslash quotes the value, so an escape in the output always means a control character.
    assert kv(path="/a\\x1b") == 'path="/a\\\\x1b"'
    assert kv(empty="") == 'empty=""'
