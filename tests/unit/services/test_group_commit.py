"""How group commit batches concurrent ingests and answers each caller (the index's own
transactions are tested on SQLite and PostgreSQL in tests/integration/test_index_batch.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import pytest

from app.services.group_commit import GroupCommit
from app.services.ports import Adding, AddResult, Index, InstanceRecord, Outcome


class BatchIndex:
    """Records the batches it is given; a commit waits for `gate` while it is closed."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing: set[int] = set()  # instances whose own rows fail
        self.raising = False  # the next commit fails as a whole

    async def add_instances(self, batch: Sequence[Adding]) -> list[AddResult | Exception]:
        numbers = [cast(int, adding.record) for adding in batch]
        self.batches.append(numbers)
        await self.gate.wait()
        if self.raising:
            self.raising = False
            raise ConnectionError("commit failed")
        return [
            ValueError(f"instance {n} refused") if n in self.failing else AddResult(Outcome.STORED)
            for n in numbers
        ]


def _adding(number: int) -> Adding:
    return Adding("default", cast(InstanceRecord, number), overwrite=False)


def _group(index: BatchIndex, max_batch: int = 64) -> GroupCommit:
    return GroupCommit(cast(Index, index), max_batch)


async def test_one_instance_is_committed_at_once_alone() -> None:
    index = BatchIndex()
    result = await _group(index).add(_adding(1))
    assert result.outcome is Outcome.STORED
    assert index.batches == [[1]]


async def test_instances_arriving_during_a_commit_share_the_next() -> None:
    index = BatchIndex()
    group = _group(index)
    index.gate.clear()
    first = asyncio.create_task(group.add(_adding(0)))
    await asyncio.sleep(0)  # the first commit starts, alone
    rest = [asyncio.create_task(group.add(_adding(n))) for n in range(1, 6)]
    await asyncio.sleep(0)
    assert group.waiting == 5
    index.gate.set()
    await asyncio.gather(first, *rest)
    assert index.batches == [[0], [1, 2, 3, 4, 5]]


async def test_a_batch_holds_at_most_max_batch() -> None:
    index = BatchIndex()
    group = _group(index, max_batch=2)
    index.gate.clear()
    tasks = [asyncio.create_task(group.add(_adding(n))) for n in range(5)]
    await asyncio.sleep(0)
    index.gate.set()
    await asyncio.gather(*tasks)
    assert index.batches == [[0, 1], [2, 3], [4]]


async def test_an_instance_that_fails_alone_fails_only_its_caller() -> None:
    index = BatchIndex()
    index.failing = {2}
    group = _group(index)
    results = await asyncio.gather(
        *(group.add(_adding(n)) for n in range(4)), return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == [
        "AddResult",
        "AddResult",
        "ValueError",
        "AddResult",
    ]


async def test_a_failed_commit_fails_every_caller_of_its_batch_and_not_the_next() -> None:
    index = BatchIndex()
    group = _group(index)
    index.gate.clear()
    index.raising = True
    failed = [asyncio.create_task(group.add(_adding(n))) for n in range(3)]
    await asyncio.sleep(0)
    index.gate.set()
    results = await asyncio.gather(*failed, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert (await group.add(_adding(9))).outcome is Outcome.STORED
    assert index.batches == [[0, 1, 2], [9]]


def test_a_batch_of_less_than_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _group(BatchIndex(), max_batch=0)


# -- waiting for instances on their way (PACS_INDEX_BATCH_WAIT_MS) --------------------------


async def _add_later(group: GroupCommit, number: int, delay: float) -> AddResult:
    """An instance on its way (its blob being stored) for `delay` seconds, then added."""
    arrived = group.coming()
    await asyncio.sleep(delay)
    arrived()
    return await group.add(_adding(number))


async def test_a_batch_waits_for_instances_on_their_way() -> None:
    index = BatchIndex()
    group = GroupCommit(cast(Index, index), 64, linger=5.0)
    tasks = [asyncio.create_task(_add_later(group, n, 0.01 * n)) for n in range(4)]
    await asyncio.wait_for(asyncio.gather(*tasks), 4)
    # Without waiting: [[0], [1], [2], [3]], one commit each.
    assert index.batches == [[0, 1, 2, 3]]


async def test_a_lone_instance_is_committed_without_waiting() -> None:
    index = BatchIndex()
    group = GroupCommit(cast(Index, index), 64, linger=30.0)
    await asyncio.wait_for(_add_later(group, 1, 0), 2)
    assert index.batches == [[1]]


async def test_a_batch_waits_no_longer_than_linger() -> None:
    index = BatchIndex()
    group = GroupCommit(cast(Index, index), 64, linger=0.05)
    group.coming()  # never arrives
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(group.add(_adding(1)), 2)
    assert 0.04 < asyncio.get_running_loop().time() - started < 1.5
    assert index.batches == [[1]]


async def test_an_instance_that_will_not_come_ends_the_wait() -> None:
    """A store refused before the index (a study mismatch, a full disk) says so."""
    index = BatchIndex()
    group = GroupCommit(cast(Index, index), 64, linger=30.0)
    refused = group.coming()
    adding = asyncio.create_task(group.add(_adding(1)))
    await asyncio.sleep(0.01)
    assert not adding.done()  # waiting for the other
    refused()
    refused()  # said twice (store.py's finally): counted once
    await asyncio.wait_for(adding, 2)
    assert index.batches == [[1]]
    assert await asyncio.wait_for(_add_later(group, 2, 0), 2)  # nothing left counted
    assert index.batches == [[1], [2]]


async def test_a_full_batch_does_not_wait() -> None:
    index = BatchIndex()
    group = GroupCommit(cast(Index, index), 2, linger=30.0)
    group.coming()  # never arrives: does not fit in a full batch anyway
    await asyncio.wait_for(asyncio.gather(*(group.add(_adding(n)) for n in range(2))), 2)
    assert index.batches == [[0, 1]]
