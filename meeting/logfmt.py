"""key=value log fields, so log lines stay greppable and machine-readable, and text made safe
for a log line or a terminal."""

from __future__ import annotations

import re
from typing import Any

# What a terminal or log viewer acts on instead of showing: C0 and C1 controls (ESC starts
# colour and OSC sequences, CR rewrites a line, NUL cuts it), DEL, line and paragraph
# separators, and the bidirectional overrides that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with control and bidirectional characters written as escapes (``\\x1b``)."""
    return _UNSAFE.sub(_escape, text)


def kv(**fields: Any) -> str:
    """Render fields as ``key=value`` pairs, quoting values that contain spaces or quotes.

    A quoted value has its backslashes, quotes and control characters escaped, so a value
    from a client can neither forge a line nor send a terminal sequence.
    """
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def _value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\\') or _UNSAFE.search(text):
        return '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
