"""One server's outbox alone in a process, for the test that kills a server mid-delivery.

``python -m tests.meeting.outbox_node URL LEASE_S DELIVERIES`` delivers DELIVERIES entries
from the PostgreSQL store at URL, printing ``delivered KEY`` for each, then starts one more
delivery that never ends, after printing ``holding KEY``: the test kills it there.
"""

from __future__ import annotations

import asyncio
import sys

from meeting.outbox import ANNOUNCE, ChatPost, Delivered, Delivery, Outbox, OutboxEntry
from meeting.store.postgres import PostgresStore


class HangingCourier:
    """Delivers ``deliveries`` entries, then hangs in the next one."""

    platform = "slack"

    def __init__(self, deliveries: int) -> None:
        self.left = deliveries

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        if self.left == 0:
            print("holding", entry.event_key, flush=True)
            await asyncio.Event().wait()  # a delivery that never comes back: killed here
        self.left -= 1
        print("delivered", entry.event_key, flush=True)
        if entry.kind == ANNOUNCE:
            return Delivered(ChatPost(entry.meeting_id, "slack", "C1", entry.event_key))
        return Delivered()


async def main(url: str, lease_s: float, deliveries: int) -> None:
    store = PostgresStore(url, lease_s=lease_s)
    await store.open()
    print("node", store.node, flush=True)
    outbox = Outbox(store)
    outbox.register(HangingCourier(deliveries))
    await outbox.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
