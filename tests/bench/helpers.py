"""Run a benchmark script's --quick mode in a subprocess and read its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def run_quick(script: str, output: Path, *extra: str, timeout: float = 240) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--output", str(output), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(output.read_text()), result.stdout


def need_janus() -> None:
    """Janus runs in a network namespace the script makes (root); it must be installed."""
    sys.path.insert(0, str(ROOT))
    from bench import netns

    assert netns.available(), (
        "Janus never uses loopback, so its benchmark runs in a network namespace of its own, "
        "which needs root: run the tests as root (as `make test` in CI does)")
    assert shutil.which("janus"), "Janus is not installed: apt-get install -y janus (the Makefile's test target does)"
