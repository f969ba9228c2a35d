"""bench/join.py --quick: two second-joins in Chromium against `meetnow serve`."""

from __future__ import annotations

import pytest

from tests.bench.helpers import run_quick

pytestmark = pytest.mark.browser


def test_join_measures_first_remote_frame(tmp_path):
    data, stdout = run_quick("join.py", tmp_path / "join.json")
    assert "first frame presented" in stdout
    assert len(data["joins"]) == 2 and not data["errors"]
    for timing in data["joins"]:
        assert 0 < timing["click"] <= timing["pc"] <= timing["connected"] <= timing["firstFrame"] < 20000
    assert data["summary"]["firstFrame"]["median_ms"] > 0
