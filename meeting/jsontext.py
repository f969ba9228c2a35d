"""Strict JSON from clients: ``loads(data)`` returns the value or raises ``JSONTextError``.

Python's ``json`` accepts text that fails later, far from the parser, as a traceback: an
integer of thousands of digits (slow to convert, a ValueError past 4300 digits), nesting
deep enough for a RecursionError, a lone UTF-16 surrogate (``"\\ud800"``) that cannot be
encoded again, NaN and Infinity, bytes that are not UTF-8. ``loads`` refuses each of them,
as the I-JSON profile (RFC 7493) does, and also an object that names a member twice. Every
refusal is one ``JSONTextError`` (a ValueError) whose message can go back to the client.

The caller bounds the size of ``data`` (a request body limit, a websocket message limit).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deeper than any message meetnow sends or expects, far from Python's recursion limit.
MAX_DEPTH = 32
# Digits in one integer: a 128-bit number fits (39), a number meant to be slow does not.
MAX_INT_DIGITS = 40

__all__ = ["JSONTextError", "MAX_DEPTH", "MAX_INT_DIGITS", "loads"]


class JSONTextError(ValueError):
    """JSON text that ``loads`` refuses; ``str(error)`` says why, for the client."""


def loads(data: str | bytes) -> Any:
    """Parse one JSON value from ``data`` (UTF-8 bytes or text).

    Raises ``JSONTextError`` for anything that is not JSON, and for integers of more than
    ``MAX_INT_DIGITS`` digits, numbers too large for a float, NaN and Infinity, nesting
    deeper than ``MAX_DEPTH``, lone surrogates, a repeated member name, and bytes that are
    not UTF-8. Never raises anything else.
    """
    text = _text(data)
    if text.startswith("\ufeff"):
        raise JSONTextError("text starts with a byte order mark")
    _check_depth(text)
    if _SURROGATE.search(text):
        raise JSONTextError("text holds a lone UTF-16 surrogate")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_float,
                           parse_constant=_constant, object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise JSONTextError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    # Escapes such as \ud800 become surrogates only while parsing; a pair becomes one
    # character, so a surrogate left in the value was alone.
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A string (to its closing quote, or to the end when there is none) or one bracket. A match
# never fails once started, so the scan never backtracks and stays linear.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]+|\\.?)*"?|([\[\]{}])', re.S)


def _text(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONTextError(f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
                            f"{exc.start})") from None


def _check_depth(text: str) -> None:
    # Counted on the brackets outside strings, before json recurses into them.
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    brackets = "".join(_STRING_OR_BRACKET.findall(text))
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise JSONTextError(f"nested deeper than {MAX_DEPTH} levels")
        else:
            depth -= 1


def _integer(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONTextError(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(literal)


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JSONTextError(f"number out of range: {literal[:20]}")
    return value


def _constant(name: str) -> Any:
    raise JSONTextError(f"{name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JSONTextError(f"object names member {_shown(key)} twice")
            seen.add(key)
    return result


def _check_strings(value: Any) -> None:
    # Depth is bounded by MAX_DEPTH, so this recursion is too.
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise JSONTextError("string holds a lone UTF-16 surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def _shown(key: str) -> str:
    return json.dumps(key[:40])
