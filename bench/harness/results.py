"""How every benchmark reports: the machine it ran on, its table, and its JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness.processes import ROOT

RESULTS = ROOT / "bench" / "results"  # not committed: figures are copied into bench/README.md


def machine() -> dict[str, Any]:
    """The CPUs, Python and platform the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


def git_commit() -> str:
    """The short commit of the code that was measured, or nothing outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or "-" when there is none."""
    return "-" if value is None else format(value, spec)


def report(result: dict[str, Any], output: Path, table: str, started: float) -> None:
    """Record the run's wall time (from ``started``, a ``time.monotonic()``), write the
    result as JSON to ``output`` and print the table."""
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"\nwritten to {output} ({result['wall_seconds']} s)")
