"""How the configured connection limits meet the open-file limit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import make_config
from web.edge import connection_limits


@pytest.mark.parametrize(
    ("configured", "open_files", "total"),
    [
        (0, 1024, 512),  # automatic: half
        (0, 1, 1),
        (0, 1 << 20, 10_000),  # automatic, with a very high open-file limit
        (300, 1024, 300),
        (5000, 1024, 768),  # lowered to three quarters
        (5000, 1 << 20, 5000),
    ],
)
def test_total(tmp_path: Path, configured: int, open_files: int, total: int,
               caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path, max_connections=configured, max_connections_per_address=7,
                         header_timeout=4)
    with caplog.at_level(logging.WARNING):
        limits = connection_limits(config, open_files)
    assert (limits.total, limits.per_address, limits.header_timeout) == (total, 7, 4)
    lowered = [r.getMessage() for r in caplog.records if "lowered" in r.getMessage()]
    assert lowered == ([f"connection limit lowered max_connections={configured} to={total} "
                        f"open_files={open_files}"] if configured > total else [])
