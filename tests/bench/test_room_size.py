"""bench/room_size.py --quick: two tiny rooms per server."""

from __future__ import annotations

from tests.bench.helpers import need_janus, run_quick


def test_room_size_steps_up_on_both_servers(tmp_path):
    need_janus()
    data, stdout = run_quick("room_size.py", tmp_path / "room_size.json")
    assert "largest room held" in stdout
    servers = {s["server"]: s for s in data["servers"]}
    assert set(servers) == {"meetnow", "Janus, event_loops=2"}
    for label, server in servers.items():
        steps = server["steps"]
        assert steps and steps[0]["publishers"] == 2, label
        assert steps[0]["legs"] == 2 and not steps[0]["errors"], (label, steps[0]["errors"])
        assert 10 <= steps[0]["fps"] <= 40, label
        assert "bottleneck" in steps[0] and isinstance(steps[0]["holds"], bool)
        # Which sizes held depends on the machine; the search must end with a verdict.
        assert server["stopped"] in ("failed", "reached --max", "time budget spent")
