"""Consumers' cursors into the change log on both backends (migrations 0008): one owner at a
time by a lease, taken over once it has run out (a crashed node blocks nobody for longer),
never moved back nor by an owner that lost it; and outboxes of two nodes on one index
deliver every entry once between them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from app.services.outbox import Outbox
from app.services.ports import Adding, Change, Index
from tests.integration.conftest import TENANT, Backend
from tests.support.records import Records

CONSUMER = "broker"


async def test_one_owner_at_a_time_until_the_lease_runs_out(index: Index) -> None:
    assert await index.claim_cursor(CONSUMER, TENANT, "node-a", 0.5) == 0
    assert await index.claim_cursor(CONSUMER, TENANT, "node-b", 0.5) is None
    assert await index.claim_cursor(CONSUMER, TENANT, "node-a", 0.5) == 0  # renewed
    assert await index.advance_cursor(CONSUMER, TENANT, "node-a", 5, 0.5)
    assert not await index.advance_cursor(CONSUMER, TENANT, "node-b", 9, 0.5)
    # node-a stops renewing (killed): node-b takes over where it got to.
    await asyncio.sleep(0.7)
    assert await index.claim_cursor(CONSUMER, TENANT, "node-b", 10) == 5
    # node-a comes back: it may neither advance nor claim the cursor it lost.
    assert not await index.advance_cursor(CONSUMER, TENANT, "node-a", 7, 10)
    assert await index.claim_cursor(CONSUMER, TENANT, "node-a", 10) is None
    # Never back; a released cursor is free at once.
    assert await index.advance_cursor(CONSUMER, TENANT, "node-b", 3, 10)
    await index.release_cursor(CONSUMER, TENANT, "node-a")  # not its own: no effect
    assert await index.claim_cursor(CONSUMER, TENANT, "node-a", 10) is None
    await index.release_cursor(CONSUMER, TENANT, "node-b")
    assert await index.claim_cursor(CONSUMER, TENANT, "node-a", 10) == 5
    # Cursors are per consumer and tenant.
    assert await index.claim_cursor("webhooks", TENANT, "node-b", 10) == 0
    assert await index.claim_cursor(CONSUMER, "clinic-b", "node-b", 10) == 0


async def test_pending_tenants_are_those_behind_and_not_held_by_another(
    index: Index, records: Records
) -> None:
    assert await index.pending_tenants(CONSUMER, "node-a") == []
    await index.add_instances(
        [Adding(t, records.make(), overwrite=False) for t in (TENANT, "clinic-b", "clinic-b")]
    )
    assert await index.pending_tenants(CONSUMER, "node-a") == ["clinic-a", "clinic-b"]
    assert await index.claim_cursor(CONSUMER, "clinic-b", "node-b", 10) == 0
    assert await index.pending_tenants(CONSUMER, "node-a") == ["clinic-a"]
    assert await index.pending_tenants(CONSUMER, "node-b") == ["clinic-a", "clinic-b"]
    assert await index.advance_cursor(CONSUMER, "clinic-b", "node-b", 2, 10)
    assert await index.pending_tenants(CONSUMER, "node-b") == ["clinic-a"]
    assert await index.pending_tenants("webhooks", "node-b") == ["clinic-a", "clinic-b"]


async def test_concurrent_claims_give_the_cursor_to_one_node(backend: Backend) -> None:
    nodes = [await backend.open(pool_size=2) for _ in range(2)]
    try:
        for round_ in range(5):
            consumer = f"race-{round_}"
            claims = await asyncio.gather(
                *(node.claim_cursor(consumer, TENANT, f"node-{n}", 10) for n, node in
                  enumerate(nodes))
            )  # fmt: skip
            assert sorted(claims, key=str) == [0, None]
    finally:
        for node in nodes:
            await node.close()


class Recorder:
    name = CONSUMER
    metadata = False

    def __init__(self, seen: list[tuple[str, int]]) -> None:
        self.seen = seen

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> None:
        await asyncio.sleep(0.001)  # let the other node's pass interleave
        self.seen += [(tenant, c.sequence) for c in changes]

    async def close(self) -> None:
        pass


async def test_two_nodes_deliver_every_entry_once_between_them(
    backend: Backend, records: Records
) -> None:
    writer = await backend.open(pool_size=2)
    nodes = [await backend.open(pool_size=2) for _ in range(2)]
    seen: list[tuple[str, int]] = []
    outboxes = [
        Outbox(node, [Recorder(seen)], batch=3, lease=10, poll_interval=0.01, owner=f"node-{n}")
        for n, node in enumerate(nodes)
    ]
    tasks = [asyncio.create_task(o.run()) for o in outboxes]
    try:
        expected = []
        for tenant in (TENANT, "clinic-b", "clinic-c"):
            for _ in range(2):
                batch = [Adding(tenant, records.make(), overwrite=False) for _ in range(4)]
                await writer.add_instances(batch)
            expected += [(tenant, n) for n in range(1, 9)]
        for _ in range(1000):
            if len(seen) >= len(expected):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a duplicate would come now
        assert sorted(seen) == expected
        for tenant in (TENANT, "clinic-b", "clinic-c"):
            assert [s for t, s in seen if t == tenant] == list(range(1, 9))  # in order
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for outbox in outboxes:
            await outbox.close()
        for node in [*nodes, writer]:
            await node.close()
