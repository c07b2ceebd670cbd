"""Group commit: the instances that concurrent ingests (STOW-RS requests, the parts of one
request, C-STORE associations) are indexing at the same moment share one index transaction
and one commit, hence one sync of the index to disk instead of one per instance.

No batch waits to fill: the first instance is committed at once, alone; those that arrive
while a commit is running wait for it and go together in the next. One instance at a time
therefore costs what it did before, and N at once cost about one commit. Each caller is
answered only when the commit of its batch has returned, so an acknowledged instance is
as durable as before.

Callers may also say that an instance is on its way (`coming`: received, its blob being
put) before they add it. A batch whose instances are fewer than those on their way waits
for them, up to `linger` seconds, instead of leaving them to the next commit: at 8 STOW
requests in flight batches held some 4 instances, as most were still syncing their blob
when a commit began. A lone instance (nothing else on its way) never waits.

A batcher belongs to one process (one event loop): several processes or machines on one
database each group their own ingests, and the index's transactions (SQLite's write lock,
PostgreSQL's row and advisory locks) order them against each other as they order single
writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.services.ports import Adding, AddResult, Index

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, index: Index, max_batch: int, linger: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError(f"a batch holds at least 1 instance, not {max_batch}")
        self.index = index
        self.max_batch = max_batch
        self.linger = linger
        self._waiting: list[tuple[Adding, asyncio.Future[AddResult]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._coming = 0  # instances said to be on their way, not added yet
        self._wake: asyncio.Future[None] | None = None  # set while a batch lingers

    def coming(self) -> Callable[[], None]:
        """Note an instance on its way to `add`; call what this returns once it is added
        or will never be (any number of times): a lingering batch stops waiting for it."""
        self._coming += 1
        arrived = False

        def gone() -> None:
            nonlocal arrived
            if not arrived:
                arrived = True
                self._coming -= 1
                self._nudge()

        return gone

    def _nudge(self) -> None:
        """Wake a lingering batch once it has nothing left to wait for (not per arrival)."""
        if self._wake is not None and not self._wake.done() and not self._wanted():
            self._wake.set_result(None)

    @property
    def waiting(self) -> int:
        """Instances waiting for the next batch (the running one not counted)."""
        return len(self._waiting)

    async def add(self, adding: Adding) -> AddResult:
        """Index `adding` in the next batch; its result once that batch is committed.

        Raises the instance's own error, or the batch's (nothing of it was kept). If the
        caller is cancelled, the instance may still be committed with its batch.
        """
        future: asyncio.Future[AddResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((adding, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_all())
        else:
            self._nudge()
        return await future

    async def _gather(self) -> None:
        """Wait, up to `linger` seconds, while instances on their way could still join
        the batch about to be committed."""
        if self.linger <= 0 or not self._wanted():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger
        while self._wanted() and (left := deadline - loop.time()) > 0:
            self._wake = wake = loop.create_future()
            timer = loop.call_later(left, _settle, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None

    def _wanted(self) -> bool:
        """Whether instances on their way could join the next batch."""
        return 0 < len(self._waiting) < self.max_batch and self._coming > 0

    async def _commit_all(self) -> None:
        try:
            while self._waiting:
                await self._gather()
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                await self._commit(batch)
        finally:
            self._committer = None
            # Left only if this task was cancelled (the loop is closing): nobody will commit.
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()

    async def _commit(self, batch: list[tuple[Adding, asyncio.Future[AddResult]]]) -> None:
        try:
            results = await self.index.add_instances([adding for adding, _ in batch])
        except Exception as exc:  # nothing of the batch was kept: every caller hears it
            log.debug("index batch of %d failed: %s", len(batch), type(exc).__name__)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        log.debug("index batch of %d committed", len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller gave up (cancelled) meanwhile
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
