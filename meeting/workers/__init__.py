"""Live meetings on media worker processes: one event loop and one core each.

``pool.py`` runs in the front process (pages, API, bots, outbox, composing) and places each
live meeting on the least-loaded worker; ``worker.py`` is a worker process, hosting
:class:`~meeting.session.host.Sessions` for the meetings placed on it; ``pipe.py`` is the
JSON-lines protocol between them over a socket pair; ``ledger.py`` keeps the chat bots'
view of a meeting right when its worker dies; ``load.py`` measures a process's load.
"""
