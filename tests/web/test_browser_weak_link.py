"""Four people in Chromium, each on a link of their own; one viewer's downlink made poor.

The scenario is bench/weak_viewer.py's (network namespaces and veth links from
bench/netlab.py, shaped with tbf and an nftables random drop). The thresholds are the
issue's: with 500 kbit/s and 2% loss towards one viewer, after 10 s that viewer decodes
every publisher at 10 fps or more with under 2 s of freezes in 20 s and hears everyone;
the others keep the high layer (600 px wide or more) at the frame rate they had; the
publishers keep sending at 70% or more of what they sent; a thumbnail gets the low
layer; lifting the limit brings the high layer back within 15 s.

Four Chromium participants take most of a 2-core machine: run this on an otherwise quiet
one (the failure message says how busy the machine was).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import netlab, weak_viewer

pytestmark = pytest.mark.browser

# Frame rates "they had" are compared within this share: the browsers' own frame rate
# varies this much from one 10 s window to the next on an idle machine.
SAME_FRAME_RATE = 0.9


async def test_a_weak_viewer_gets_low_layers_and_nobody_else_suffers(tmp_path: Path) -> None:
    missing = netlab.missing_tools()
    assert not missing, f"the weak-link test makes network namespaces: it needs {', '.join(missing)}"
    options = weak_viewer.Options(server_log=str(tmp_path / "meetnow.log"))
    result = await weak_viewer.run(options, tmp_path, progress=lambda _: None)
    context = "\n" + weak_viewer.table(result) + f"\nmachine: {json.dumps(result.machine)}"
    assert result.error is None, f"{result.error}{context}"
    weak = weak_viewer.name(options.weak)
    others = [weak_viewer.name(n) for n in range(1, options.people + 1) if n != options.weak]

    limited = result.limited[weak]
    for who, video in limited["video"].items():
        assert video["fps"] >= 10, f"the weak viewer decodes {who} at {video['fps']} fps{context}"
        assert video["frozen_s"] < 2.0, f"the weak viewer's {who} froze {video['frozen_s']} s{context}"
    assert sorted(limited["video"]) == sorted(others), context
    for who, audio in limited["audio"].items():
        assert audio["energy"] > 0, f"the weak viewer does not hear {who}{context}"
    assert sorted(limited["audio"]) == sorted(others), context

    for viewer in others:
        for who, video in result.limited[viewer]["video"].items():
            before = result.baseline[viewer]["video"][who]
            assert video["min_width"] >= 600, f"{viewer} got {who} at {video['min_width']} px{context}"
            assert video["fps"] >= SAME_FRAME_RATE * before["fps"], (
                f"{viewer} decodes {who} at {video['fps']} fps, {before['fps']} before{context}")
    for publisher in [weak_viewer.name(n) for n in range(1, options.people + 1)]:
        before = result.baseline[publisher]["sent_video_kbps"]
        after = result.limited[publisher]["sent_video_kbps"]
        assert after >= 0.7 * before, f"{publisher} sends {after} kbit/s of video, {before} before{context}"

    assert result.small["seconds"] is not None and result.small["seconds"] <= options.small_within, (
        f"thumbnails did not get the low layer: {result.small}{context}")
    assert result.lifted["seconds"] is not None and result.lifted["seconds"] <= options.lift_within, (
        f"the high layer did not come back in time: {result.lifted.get('seconds')}{context}")
