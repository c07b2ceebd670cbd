"""The forwarding worker on both backends with a real DICOM peer that accepts connections
and never answers: the attempt waits, and a stop meanwhile gives the job back at once
(queued, due now, the reason recorded) instead of leaving it to its lease."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.forwarding.dicom import DicomSender
from app.services.delivery import Delivery
from app.services.forward_rules import DicomNode
from app.services.forwarding import Backoff, ForwardWorker
from app.services.imaging import ImagingService
from app.services.plan import Planner
from app.services.ports import Adding, Index, JobState, NewJob
from app.services.retrieve import RetrieveService
from app.storage.filesystem import FolderBlobStore
from tests.integration.conftest import TENANT
from tests.support.records import Records


async def test_a_stop_during_an_attempt_gives_the_job_back(
    index: Index, records: Records, tmp_path: Path
) -> None:
    record = records.make()
    await index.add_instances([Adding(TENANT, record, overwrite=False)])
    await index.enqueue_jobs(
        [NewJob(TENANT, "ct", "SILENT", 1, record.study_instance_uid, None, None, 0)]
    )
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    retrieve = RetrieveService(index, FolderBlobStore(tmp_path / "blobs"))
    delivery = Delivery(Planner(retrieve, ImagingService(retrieve)), tmp_path)
    sender = DicomSender(DicomNode("SILENT", "127.0.0.1", port), delivery, calling_ae="PACS",
                         timeout=60)  # fmt: skip
    worker = ForwardWorker(
        index, {"ct": sender}, owner="node-a", lease=60, poll_interval=0.05,
        backoff=Backoff(3, 1, 1),
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if await index.jobs(TENANT, JobState.RUNNING, 10):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the job never ran")
        await asyncio.sleep(0.1)  # well inside the association request
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    [job] = await index.jobs(TENANT, None, 10)
    assert (job.state, job.last_error, job.attempts) == (JobState.QUEUED, "the node stopped", 1)
    # Due now, for any node: not after the 60 s lease.
    again = await index.claim_job("node-b", 60)
    assert again is not None and again.id == job.id


async def test_a_job_whose_study_was_deleted_is_done_and_one_of_a_removed_rule_fails(
    index: Index, tmp_path: Path
) -> None:
    await index.enqueue_jobs(
        [NewJob(TENANT, rule, "X", n, "1.2.3.999", None, None, p)
         for n, (rule, p) in enumerate((("ct", 1), ("gone", 0)), 1)]
    )  # fmt: skip
    retrieve = RetrieveService(index, FolderBlobStore(tmp_path / "blobs"))
    delivery = Delivery(Planner(retrieve, ImagingService(retrieve)), tmp_path)
    # Nothing listens on port 9: were it called, the attempt would fail and be retried.
    sender = DicomSender(DicomNode("X", "127.0.0.1", 9), delivery, calling_ae="PACS", timeout=5)
    worker = ForwardWorker(
        index, {"ct": sender}, owner="node-a", lease=60, poll_interval=0.05,
        backoff=Backoff(3, 1, 1),
    )  # fmt: skip
    assert await worker.run_once()
    assert await worker.run_once()
    assert not await worker.run_once()
    done, failed = sorted(await index.jobs(TENANT, None, 10), key=lambda j: j.rule)
    assert (done.rule, done.state, done.last_error) == ("ct", JobState.DONE, None)
    assert (failed.state, failed.last_error) == (
        JobState.FAILED,
        "rule 'gone' is no longer configured",
    )
