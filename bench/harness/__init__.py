"""What the benchmark scripts share, so that each script keeps only its own figures.

- :mod:`~bench.harness.control`: meetnow's SFU in a child process behind a JSON-lines
  control socket (both ends of that protocol);
- :mod:`~bench.harness.servers`: the servers a forwarding row runs on (that process, Janus),
  starting them, and their command-line options;
- :mod:`~bench.harness.load`: the synthetic participants of a room, and the latency of a
  direct aiortc-to-aiortc path;
- :mod:`~bench.harness.serve`: the real ``meetnow serve`` with its media workers, driven
  over its signaling websocket;
- :mod:`~bench.harness.rows`: one measured window of one room on one server;
- :mod:`~bench.harness.cpu`: CPU time and dropped datagrams from /proc;
- :mod:`~bench.harness.processes`: child processes: ports, readiness, ending them;
- :mod:`~bench.harness.results`: the machine's description, formatting, JSON output.

The private network namespace is bench/netns.py. Nothing in bench/ imports tests/; the
tests import from bench/.
"""
