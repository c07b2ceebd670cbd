"""Group commit: the instances that concurrent ingests (STOW-RS requests, the parts of one
request, C-STORE associations) are indexing at the same moment share one index transaction
and one commit, hence one sync of the index to disk instead of one per instance.

No batch waits to fill: the first instance is committed at once, alone; those that arrive
while a commit is running wait for it and go together in the next. One instance at a time
therefore costs what it did before, and N at once cost about one commit. Each caller is
answered only when the commit of its batch has returned, so an acknowledged instance is
as durable as before.

A batcher belongs to one process (one event loop): several processes or machines on one
database each group their own ingests, and the index's transactions (SQLite's write lock,
PostgreSQL's row and advisory locks) order them against each other as they order single
writes.
"""

from __future__ import annotations

import asyncio
import logging

from app.services.ports import Adding, AddResult, Index

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, index: Index, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"a batch holds at least 1 instance, not {max_batch}")
        self.index = index
        self.max_batch = max_batch
        self._waiting: list[tuple[Adding, asyncio.Future[AddResult]]] = []
        self._committer: asyncio.Task[None] | None = None

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
        return await future

    async def _commit_all(self) -> None:
        try:
            while self._waiting:
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
