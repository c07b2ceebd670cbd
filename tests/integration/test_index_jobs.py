"""The forwarding job queue on both backends (migrations 0011): a change enqueues a job once
per rule however often it is delivered; a due job is claimed by one node, the best first; a
job whose node died is claimed again once its lease ran out; a failure queues it again
after its backoff or fails it for good with its reason; a failed job can be retried."""

from __future__ import annotations

import asyncio

from app.services.ports import Adding, Index, JobState, NewJob
from tests.integration.conftest import TENANT, Backend
from tests.support.records import Records

STUDY = "1.2.3.4"


def new(seq: int, *, rule: str = "ct", priority: int = 0, tenant: str = TENANT) -> NewJob:
    return NewJob(tenant, rule, "storescp", seq, STUDY, None, None, priority)


async def test_a_change_enqueues_one_job_per_rule(index: Index) -> None:
    assert await index.enqueue_jobs([new(1), new(1, rule="mr"), new(2)]) == 3
    # The outbox delivered the same entries again: nothing more.
    assert await index.enqueue_jobs([new(1), new(2), new(3)]) == 1
    listed = await index.jobs(TENANT, None, 100)
    assert [(j.rule, j.change_seq) for j in listed] == [("ct", 3), ("ct", 2), ("mr", 1), ("ct", 1)]
    assert {j.state for j in listed} == {JobState.QUEUED}
    assert await index.jobs("clinic-b", None, 100) == []


async def test_a_due_job_is_claimed_once_best_first(index: Index) -> None:
    await index.enqueue_jobs([new(1, priority=1), new(2, priority=5), new(3, priority=1)])
    first = await index.claim_job("node-a", 30)
    assert first is not None
    assert (first.change_seq, first.state, first.attempts) == (2, JobState.RUNNING, 1)
    second = await index.claim_job("node-b", 30)
    third = await index.claim_job("node-a", 30)
    assert second is not None and third is not None
    assert (second.change_seq, third.change_seq) == (1, 3)
    assert await index.claim_job("node-b", 30) is None
    # Only the owner finishes its job.
    assert not await index.job_done(first.id, "node-b")
    assert await index.job_done(first.id, "node-a")
    assert [j.change_seq for j in await index.jobs(TENANT, JobState.DONE, 10)] == [2]


async def test_a_dead_nodes_job_is_claimed_again_after_its_lease(index: Index) -> None:
    await index.enqueue_jobs([new(1)])
    job = await index.claim_job("node-a", 0.5)
    assert job is not None
    assert await index.claim_job("node-b", 30) is None
    assert await index.renew_job(job.id, "node-a", 0.5)
    await asyncio.sleep(0.7)  # node-a was killed: no renewal
    taken = await index.claim_job("node-b", 30)
    assert taken is not None
    assert (taken.id, taken.attempts) == (job.id, 2)
    # node-a comes back: the job is no longer its own.
    assert not await index.renew_job(job.id, "node-a", 30)
    assert not await index.job_done(job.id, "node-a")
    assert not await index.job_failed(job.id, "node-a", "late", None)
    assert await index.job_done(job.id, "node-b")


async def test_a_failure_waits_for_its_backoff_then_fails_for_good(index: Index) -> None:
    await index.enqueue_jobs([new(1)])
    job = await index.claim_job("node-a", 30)
    assert job is not None
    assert await index.job_failed(job.id, "node-a", "connection refused", 0.5)
    [queued] = await index.jobs(TENANT, JobState.QUEUED, 10)
    assert queued.last_error == "connection refused"
    assert await index.claim_job("node-a", 30) is None  # not before its next attempt
    await asyncio.sleep(0.7)
    again = await index.claim_job("node-a", 30)
    assert again is not None and again.attempts == 2
    assert await index.job_failed(again.id, "node-a", "refused every instance", None)
    [failed] = await index.jobs(TENANT, JobState.FAILED, 10)
    assert failed.last_error == "refused every instance"
    assert await index.claim_job("node-a", 30) is None
    # Retried (by an administrator): due now, attempts from 0; only a failed job, only
    # by its tenant.
    assert await index.retry_job("clinic-b", failed.id) is None
    retried = await index.retry_job(TENANT, failed.id)
    assert retried is not None
    assert (retried.state, retried.attempts) == (JobState.QUEUED, 0)
    assert await index.retry_job(TENANT, failed.id) is None
    claimed = await index.claim_job("node-b", 30)
    assert claimed is not None and claimed.id == failed.id


async def test_concurrent_claims_never_take_one_job_twice(backend: Backend) -> None:
    nodes = [await backend.open(pool_size=2) for _ in range(3)]
    try:
        await nodes[0].enqueue_jobs([new(seq) for seq in range(1, 13)])
        claimed: list[int] = []

        async def work(n: int) -> None:
            while (job := await nodes[n].claim_job(f"node-{n}", 30)) is not None:
                claimed.append(job.id)

        await asyncio.gather(*(work(n) for n in range(3)))
        assert sorted(claimed) == sorted(set(claimed))
        assert len(claimed) == 12
    finally:
        for node in nodes:
            await node.close()


async def test_forwarding_first_started_gets_only_the_changes_made_from_then_on(
    index: Index, records: Records
) -> None:
    await index.add_instances([Adding(TENANT, records.make(), overwrite=False) for _ in range(3)])
    assert await index.start_cursors("forwarding")
    # History skipped: its cursor is at the latest entry; other consumers are untouched.
    assert await index.claim_cursor("forwarding", TENANT, "node-a", 10) == 3
    assert await index.claim_cursor("kafka:x", TENANT, "node-a", 10) == 0
    # A tenant whose first entries come later gets them all.
    assert await index.claim_cursor("forwarding", "clinic-b", "node-a", 10) == 0
    await index.release_cursor("forwarding", TENANT, "node-a")
    # Later starts change nothing, even with new tenants and entries meanwhile.
    await index.add_instances([Adding("clinic-c", records.make(), overwrite=False)])
    assert not await index.start_cursors("forwarding")
    assert await index.claim_cursor("forwarding", "clinic-c", "node-a", 10) == 0
    assert await index.pending_tenants("forwarding", "node-a") == ["clinic-c"]


async def test_forwarding_started_on_an_empty_archive_then_restarted_skips_nothing(
    index: Index, records: Records
) -> None:
    """Regression: a first start that found no tenant left no trace, so a restart before
    the outbox made a cursor placed it past what was stored in between."""
    assert await index.start_cursors("forwarding")
    await index.add_instances([Adding(TENANT, records.make(), overwrite=False)])
    assert not await index.start_cursors("forwarding")
    assert await index.claim_cursor("forwarding", TENANT, "node-a", 10) == 0
