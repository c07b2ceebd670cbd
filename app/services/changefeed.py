"""The change feed: a tenant's change log (`Index.changes`) read from any sequence on, and
long polling, so that a consumer learns of a change within a second without asking again
and again.

A reader waiting for entries beyond its sequence is woken by this process's own stores at
once (`ChangeSignal`, pulsed by the store service when a commit changed something), and
otherwise looks at the index every `poll_interval` seconds: other processes (HTTP workers,
other nodes on one database) store too, and their commits reach us only through the index.
PostgreSQL's LISTEN/NOTIFY would say so sooner, but NOTIFY serialises every notifying commit
of the whole database on one lock, the ingest path the change log must not slow down; a
poll costs one primary-key lookup per waiting reader per interval, and none while nobody
waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from app.auth.principal import Access, Permission
from app.services.ports import Change, Index


class ChangeSignal:
    """Per tenant, wakes the readers of this process waiting for its next change."""

    def __init__(self) -> None:
        # Only tenants someone waits for: at most one entry per waiting request.
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    def changed(self, tenant: str) -> None:
        found = self._events.pop(tenant, None)
        if found is not None:
            found[0].set()

    @contextmanager
    def watching(self, tenant: str) -> Iterator[asyncio.Event]:
        """An event set at the tenant's next change in this process."""
        event, waiting = self._events.get(tenant) or (asyncio.Event(), 0)
        self._events[tenant] = (event, waiting + 1)
        try:
            yield event
        finally:
            current = self._events.get(tenant)
            if current is not None and current[0] is event:
                if current[1] > 1:
                    self._events[tenant] = (event, current[1] - 1)
                else:
                    del self._events[tenant]


class ChangeFeed:
    def __init__(self, index: Index, signal: ChangeSignal, *, poll_interval: float) -> None:
        self.index = index
        self.signal = signal
        self.poll_interval = poll_interval

    async def read(
        self, access: Access, after: int, limit: int, *, metadata: bool, wait: float = 0
    ) -> list[Change]:
        """Entries with a sequence above `after`, at most `limit`; when there are none yet,
        wait up to `wait` seconds for the first (then an empty list)."""
        access.require(Permission.READ)
        found = await self.index.changes(access.tenant, after, limit, metadata=metadata)
        if found or wait <= 0:
            return found
        if await self._wait_beyond(access.tenant, after, wait):
            return await self.index.changes(access.tenant, after, limit, metadata=metadata)
        return []

    async def latest(self, access: Access, *, metadata: bool) -> Change | None:
        access.require(Permission.READ)
        return await self.index.latest_change(access.tenant, metadata=metadata)

    async def _wait_beyond(self, tenant: str, after: int, wait: float) -> bool:
        """Whether an entry above `after` appeared within `wait` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            with self.signal.watching(tenant) as woken:
                # Looked at after watching: a change between the two is not missed.
                latest = await self.index.latest_change(tenant)
                if latest is not None and latest.sequence > after:
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                # On time out, look at the index: another process may have stored.
                with suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, self.poll_interval))
