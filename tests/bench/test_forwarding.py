"""bench/forwarding.py --quick: meetnow and Janus side by side, with ratios."""

from __future__ import annotations

from tests.bench.helpers import need_janus, run_quick


def test_forwarding_compares_meetnow_with_janus(tmp_path):
    need_janus()
    data, stdout = run_quick("forwarding.py", tmp_path / "forwarding.json")
    assert "| row | server |" in stdout and "meetnow / Janus, event_loops=2" in stdout
    assert "veth" in data["network"] and not data["skipped"]
    servers = data["servers"]
    assert set(servers) == {"meetnow", "Janus, event_loops=2"}
    for label, rows in servers.items():
        by_name = {r["name"]: r for r in rows}
        baseline, viewer = by_name["1 publisher, K=0"], by_name["1 publisher, K=1"]
        assert baseline["legs"] == 0 and viewer["legs"] == 1, label
        assert not viewer["errors"], (label, viewer["errors"])
        # Loose bounds: the script must work; the figures depend on the machine.
        assert viewer["packets_forwarded"] > 50, label
        assert 0 <= viewer["cpu_percent"] < 100, label
        assert 10 <= viewer["fps"] <= 40, label
        assert viewer["loss_percent"] < 20, label
        assert viewer["latency_video_ms"] is not None and 0 <= viewer["latency_video_ms"] < 500, label
        assert viewer["us_per_packet"] > 0, label
    ratios = {c["name"]: c for c in data["comparison"]}
    assert ratios["1 publisher, K=1"]["us_per_packet_ratio"] > 0
    assert "cpu_ratio" in ratios["1 publisher, K=0"]  # None when Janus used under one clock tick
    assert data["machine"]["cpus"] >= 1 and data["janus_version"]
