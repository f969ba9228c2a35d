"""The /meetnow benchmark runs, stays on loopback, and writes the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "command.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "command.py"), "--quick", "--sequential", "40",
         "--concurrent", "80", "--concurrency", "8", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "p99 ms" in done.stdout
    result = json.loads(out.read_text())
    sequential, concurrent = result["sequential"], result["concurrent"]
    assert (sequential["requests"], sequential["concurrency"], sequential["errors"]) == (40, 1, 0)
    assert (concurrent["requests"], concurrent["concurrency"], concurrent["errors"]) == (80, 8, 0)
    for phase in (sequential, concurrent):
        assert 0 < phase["p50_ms"] <= phase["p90_ms"] <= phase["p99_ms"] <= phase["max_ms"]
        assert phase["throughput_rps"] > 0
    # The commands' channel posts went out through the outbox to the fake Slack.
    posts = result["channel_posts"]
    assert posts["commands"] == 40 + 80 + result["warmup_requests"]
    assert 0 < posts["delivered"] <= posts["commands"]


def test_help_describes_the_options() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "command.py"), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for option in ("--quick", "--sequential", "--concurrency", "--out", "--timeout"):
        assert option in done.stdout
