"""The outbox: feeds the change log to its consumers (ports.ChangeConsumer: the broker
publisher, later webhooks and forwarding) in the background, at least once, never from the
request path (DESIGN "Events").

Each consumer has a cursor per tenant in the index (`change_cursor`): the last sequence it
has delivered. A pass reads the entries beyond it, hands them to `deliver`, and advances the
cursor only once `deliver` returned: a failure, a timeout or a crash (kill -9) in between
leaves the cursor where it was and the same entries are delivered again (duplicates
possible, losses not). A consumer whose delivery fails is retried with exponential backoff
(`retry_min` doubling up to `retry_max`); ingest is not affected: it only writes the log.

Several nodes on one PostgreSQL run this loop each; one of them works on a given cursor at a
time, by a lease in the cursor's row: claimed in a one-statement transaction when it is free
or its lease has run out, renewed by each advance, given up at a graceful stop. Why a lease
rather than a row lock (`SELECT ... FOR UPDATE SKIP LOCKED`) or an advisory lock held
while delivering: a lock lives as long as a transaction or a session, so it would hold a
pooled connection (and, for the row lock, an open transaction that stops vacuum) for the
whole delivery, which lasts as long as the broker or a webhook takes, minutes while it is
down; and neither exists on SQLite, where several HTTP worker processes share one file.
A lease costs one short write per batch and works alike on both backends. What it costs: a
node killed while it held a cursor delays that consumer by up to one lease (`lease`,
PACS_OUTBOX_LEASE) until another node (or the restarted one) takes over; a node paused
longer than its lease may deliver a batch that its successor delivers too (at least once
allows it), and cannot move the cursor any more (an advance names its owner). A delivery is
cut off at half the lease, so a working node renews its lease long before it runs out.

Tenants are served one after the other, at most `TURN_BATCHES` batches each per pass, so a
busy tenant does not starve the others. Each consumer runs in a task of its own, so a slow
one (a webhook receiver taking its time) does not hold back the others; the set of
consumers may change while it runs (`set_consumers`: webhook subscriptions come and go).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from app.services.ports import Change, ChangeConsumer, Index, TenantConsumer

log = logging.getLogger(__name__)

# Batches delivered for one tenant before the pass moves to the next tenant.
TURN_BATCHES = 20
# How long a graceful stop may spend releasing cursors (the leases expire anyway).
RELEASE_TIMEOUT = 5.0


def node_owner() -> str:
    """This process's name as the owner of a lease: host and pid say to an operator which
    node holds a cursor; the random part tells a restarted process from its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class _Retry:
    failures: int = 0
    not_before: float = 0.0  # loop time


class Outbox:
    def __init__(
        self,
        index: Index,
        consumers: Sequence[ChangeConsumer],
        *,
        batch: int,
        lease: float,
        poll_interval: float,
        retry_min: float = 1.0,
        retry_max: float = 60.0,
        owner: str | None = None,
    ) -> None:
        self.index = index
        self.consumers = list(consumers)
        self.batch = batch
        self.lease = lease
        self.poll_interval = poll_interval
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.owner = owner or node_owner()
        self._retry = {c.name: _Retry() for c in self.consumers}
        self._claimed: set[tuple[str, str]] = set()  # (consumer, tenant)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()

    def set_consumers(self, consumers: Sequence[ChangeConsumer]) -> None:
        """Deliver to `consumers` from now on (those that stay keep their retry state)."""
        self.consumers = list(consumers)
        self._retry = {c.name: self._retry.get(c.name) or _Retry() for c in self.consumers}
        self._changed.set()

    async def run(self) -> None:
        """Deliver until cancelled, each consumer in a task of its own: a pass, then (when it
        found nothing to do) a pause of `poll_interval`; other processes and nodes write the
        log too, so it is polled."""
        try:
            while True:
                self._changed.clear()
                self._sync_tasks()
                await self._changed.wait()
        finally:
            tasks = list(self._tasks.values())
            self._tasks.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _sync_tasks(self) -> None:
        names = {c.name for c in self.consumers}
        for name in [n for n in self._tasks if n not in names]:
            self._tasks.pop(name).cancel()
        for consumer in self.consumers:
            if consumer.name not in self._tasks:
                self._tasks[consumer.name] = asyncio.create_task(
                    self._run_consumer(consumer), name=f"outbox {consumer.name}"
                )

    async def _run_consumer(self, consumer: ChangeConsumer) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._retry[consumer.name].not_before - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif not await self._pass(consumer):
                await asyncio.sleep(self.poll_interval)

    async def run_once(self) -> int:
        """One pass over every consumer whose retry time has come: the number of entries
        delivered. Never raises for a failed delivery or an unreachable index."""
        delivered = 0
        for consumer in self.consumers:
            if asyncio.get_running_loop().time() >= self._retry[consumer.name].not_before:
                delivered += await self._pass(consumer)
        return delivered

    async def _pass(self, consumer: ChangeConsumer) -> int:
        retry = self._retry[consumer.name]
        try:
            delivered = await self._serve(consumer)
        except Exception as exc:  # the consumer's or the index's: retried after a pause
            self._failed(consumer.name, retry, exc)
            return 0
        if retry.failures:
            log.info(
                "events: %s delivers again after %d failed attempts",
                consumer.name,
                retry.failures,
            )
        retry.failures = 0
        return delivered

    async def close(self) -> None:
        """Give up this node's leases so that another node may go on at once, then close
        the consumers."""
        with suppress(Exception, TimeoutError):
            async with asyncio.timeout(RELEASE_TIMEOUT):
                for name, tenant in sorted(self._claimed):
                    await self.index.release_cursor(name, tenant, self.owner)
        self._claimed.clear()
        for consumer in self.consumers:
            try:
                await consumer.close()
            except Exception as exc:
                log.warning("events: closing %s failed: %s", consumer.name, _describe(exc))

    async def _serve(self, consumer: ChangeConsumer) -> int:
        delivered = 0
        for tenant in await self.index.pending_tenants(consumer.name, self.owner):
            if isinstance(consumer, TenantConsumer) and tenant != consumer.tenant:
                continue  # a webhook subscription of another tenant
            delivered += await self._serve_tenant(consumer, tenant)
        return delivered

    async def _serve_tenant(self, consumer: ChangeConsumer, tenant: str) -> int:
        name = consumer.name
        last = await self.index.claim_cursor(name, tenant, self.owner, self.lease)
        if last is None:  # another node holds it
            self._claimed.discard((name, tenant))
            return 0
        self._claimed.add((name, tenant))
        delivered = 0
        for _ in range(TURN_BATCHES):
            changes = await self.index.changes(tenant, last, self.batch, metadata=consumer.metadata)
            if not changes:
                break
            done = await self._deliver(consumer, tenant, changes)
            if done is not None and not last < done <= changes[-1].sequence:
                raise RuntimeError(f"{name} reported sequence {done} outside its batch")
            last = changes[-1].sequence if done is None else done
            if not await self.index.advance_cursor(name, tenant, self.owner, last, self.lease):
                log.info("events: %s's cursor of tenant %s was taken over by another node",
                         name, tenant)  # fmt: skip
                self._claimed.discard((name, tenant))
                break
            delivered += sum(1 for c in changes if c.sequence <= last)
        return delivered

    async def _deliver(
        self, consumer: ChangeConsumer, tenant: str, changes: Sequence[Change]
    ) -> int | None:
        # Cut off well within the lease: a node still delivering when its lease runs out
        # would overlap with the node that takes the cursor over.
        cut = asyncio.timeout(self.lease / 2)
        try:
            async with cut:
                return await consumer.deliver(tenant, changes)
        except TimeoutError:
            if not cut.expired():
                raise
            raise TimeoutError(
                f"{len(changes)} entries of tenant {tenant} not delivered within "
                f"{self.lease / 2:g} s (half of PACS_OUTBOX_LEASE)"
            ) from None

    def _failed(self, name: str, retry: _Retry, exc: Exception) -> None:
        retry.failures += 1
        pause = min(self.retry_max, self.retry_min * 2 ** (retry.failures - 1))
        retry.not_before = asyncio.get_running_loop().time() + pause
        # No patient data: the exception is the consumer's or the index's (a broker or a
        # database unreachable), not the entries'.
        log.warning(
            "events: delivery to %s failed (attempt %d, next in %g s): %s",
            name,
            retry.failures,
            pause,
            _describe(exc),
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind
