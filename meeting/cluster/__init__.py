"""Several meetnow nodes behind one URL, coordinated through Redis.

- ``nodes.py``: each node's heartbeat and load, so others know it is alive and how busy;
- ``directory.py``: which node hosts each live meeting, as leases that lapse with the node;
- ``bridge.py``: any node takes a meeting's websocket and relays it to the hosting node
  (the same per-connection protocol as media workers), over Redis pub/sub;
- ``leader.py``: one node at a time holds a job (a chat bot's gateway connection);
- ``limits.py``: rate limits shared by all nodes.

Media never crosses nodes: browsers reach the hosting node's own announced addresses.
"""
