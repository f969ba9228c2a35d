"""bench/forwarding.py and bench/room_size.py against `meetnow serve` with media workers,
several rooms at once (quick versions)."""

from __future__ import annotations

from tests.bench.helpers import need_janus, run_quick

ONE, TWO = "meetnow serve, 1 worker", "meetnow serve, 2 workers"


def test_forwarding_measures_each_worker_with_rooms_at_once(tmp_path):
    need_janus()
    data, stdout = run_quick("forwarding.py", tmp_path / "forwarding.json", "--workers", "1", "2", "--at-once", "2")
    assert "CPU by process %" in stdout and "load average" in stdout
    servers = data["servers"]
    assert set(servers) == {ONE, TWO, "Janus, event_loops=2"}
    assert data["load"]["rooms_at_once"] == 2 and data["load"]["workers"] == [1, 2]
    assert len(data["load_average"]["start"]) == 3
    for label, rows in servers.items():
        viewer = next(r for r in rows if r["name"] == "2 x (1 publisher, K=1)")
        assert not viewer["errors"], (label, viewer["errors"])
        assert viewer["rooms"] == 2 and viewer["legs"] == 2, label  # one leg per room, both measured
        assert viewer["packets_forwarded"] > 100, label
        # Media flowed; no upper bound: a busy machine delivers late frames in bursts.
        assert viewer["fps"] >= 10 and viewer["loss_percent"] < 20, label
        assert viewer["latency_video_ms"] is not None, label
        assert viewer["us_per_packet"] > 0, label
    one = next(r for r in servers[ONE] if r["name"] == "2 x (1 publisher, K=1)")
    assert set(one["process_cpu_percent"]) == {"meetnow"}  # one worker: all in one process
    two = next(r for r in servers[TWO] if r["name"] == "2 x (1 publisher, K=1)")
    # Two rooms on two workers: the pool puts the second room on the idle worker, so both forward.
    assert set(two["process_cpu_percent"]) == {"front", "worker 0", "worker 1"}
    assert two["process_cpu_percent"]["worker 0"] > 0 and two["process_cpu_percent"]["worker 1"] > 0
    assert abs(sum(two["process_cpu_percent"].values()) - two["cpu_percent"]) < 0.01
    ratios = {(c["server"], c["name"]) for c in data["comparison"] if c["us_per_packet_ratio"]}
    assert {(ONE, "2 x (1 publisher, K=1)"), (TWO, "2 x (1 publisher, K=1)")} <= ratios


def test_room_size_grows_rooms_at_once_on_two_workers(tmp_path):
    data, stdout = run_quick("room_size.py", tmp_path / "room_size.json", "--workers", "2", "--at-once", "2",
                             "--servers", "meetnow")
    assert "| rooms x N |" in stdout and "| 2 x 2 |" in stdout
    [server] = data["servers"]
    assert server["server"] == "meetnow serve, 2 workers"
    first = server["steps"][0]
    assert first["rooms"] == 2 and first["publishers"] == 2 and first["legs"] == 4
    assert not first["errors"] and first["fps"] >= 10
    assert all(first["process_cpu_percent"][w] > 0 for w in ("worker 0", "worker 1"))
    assert server["stopped"] in ("failed", "reached --max", "time budget spent")
