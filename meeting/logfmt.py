"""key=value log fields, so log lines stay greppable and machine-readable."""

from __future__ import annotations

from typing import Any


def kv(**fields: Any) -> str:
    """Render fields as ``key=value`` pairs, quoting values that contain spaces or quotes."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def _value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text
