#!/usr/bin/env python3
"""Events published per second: the outbox (app/services/outbox.py) draining a change log of
`--events` entries to a real Kafka broker (tests/support/kafka.py, `make kafka` first)
through the Kafka publisher, acknowledged by the broker (acks=all, idempotent), on SQLite
and PostgreSQL; and the same drain to a consumer that does nothing, which is the outbox's
own cost (reading the log, claiming and advancing the cursor).

    PACS_TEST_POSTGRES_URL=postgresql://pacs_test:pacs_test@127.0.0.1:5432/postgres \\
        .venv/bin/python load-tests/events_published.py --events 20000 --rounds 3

The log's entries are written directly (as the ingest transaction writes them, without the
instances: their state reads `deleted`, which costs the read the same). Each round drains
the whole log under a new consumer name (a new cursor, a new topic), alternating the null
consumer and Kafka. Run from the repository root; databases and the broker are removed
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from pydicom.uid import generate_uid

from app.broker.kafka import KafkaPublisher
from app.index import postgres_changes, sqlite_changes
from app.index.change_rows import PendingChange
from app.index.postgres import PostgresIndex
from app.index.sqlite import SqliteIndex
from app.services.outbox import Outbox
from app.services.ports import Change, ChangeAction, ChangeConsumer, Index
from tests.support.kafka import running_kafka
from tests.support.postgres import temporary_database

TENANT = "bench"


class Nothing:
    """A consumer that takes every batch at once: the outbox's own cost."""

    def __init__(self) -> None:
        self.name = f"null-{uuid.uuid4().hex}"
        self.metadata = False

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> None:
        return None

    async def close(self) -> None:
        return None


def _entries(count: int) -> list[PendingChange]:
    # 100 instances per study, 4 series per study, as a CT study's images come.
    studies = [generate_uid() for _ in range(max(1, count // 100))]
    series = {s: [generate_uid() for _ in range(4)] for s in studies}
    return [
        PendingChange(
            TENANT,
            ChangeAction.INSTANCE_STORED,
            studies[n // 100 % len(studies)],
            series[studies[n // 100 % len(studies)]][n % 4],
            generate_uid(),
            uuid.uuid4().hex,
        )
        for n in range(count)
    ]


@asynccontextmanager
async def _sqlite(folder: Path, entries: list[PendingChange]) -> AsyncIterator[Index]:
    path = folder / "index.sqlite"
    index = await SqliteIndex.open(path)
    with sqlite3.connect(path) as db:
        sqlite_changes.record_changes(db, entries)
    try:
        yield index
    finally:
        await index.close()


@asynccontextmanager
async def _postgres(folder: Path, entries: list[PendingChange]) -> AsyncIterator[Index]:
    async with temporary_database() as url:
        index = await PostgresIndex.open(url)
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await postgres_changes.record_changes(conn, entries)
        finally:
            await conn.close()
        try:
            yield index
        finally:
            await index.close()


async def _drain(index: Index, consumer: ChangeConsumer, count: int, batch: int) -> float:
    """Events per second delivered by the outbox from an untouched cursor to the end."""
    outbox = Outbox(index, [consumer], batch=batch, lease=30, poll_interval=0.01)
    started = time.perf_counter()
    delivered = 0
    try:
        while delivered < count:
            delivered += await outbox.run_once()
    finally:
        await outbox.close()
    return count / (time.perf_counter() - started)


async def measure(name: str, folder: Path, bootstrap: str, args: argparse.Namespace) -> None:
    opened = {"sqlite": _sqlite, "postgres": _postgres}[name]
    async with opened(folder, _entries(args.events)) as index:
        await _drain(index, Nothing(), args.events, args.batch)  # warm-up: pages, connections
        nothing, kafka = [], []
        for _ in range(args.rounds):
            nothing.append(await _drain(index, Nothing(), args.events, args.batch))
            publisher = KafkaPublisher([bootstrap], f"bench-{uuid.uuid4().hex}")
            kafka.append(await _drain(index, publisher, args.events, args.batch))
    print(
        f"{name}: {statistics.median(kafka):,.0f} events/s published to Kafka "
        f"(rounds {', '.join(f'{x:,.0f}' for x in kafka)}); outbox alone "
        f"{statistics.median(nothing):,.0f} events/s "
        f"(rounds {', '.join(f'{x:,.0f}' for x in nothing)}); "
        f"{args.events} events, batches of {args.batch}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20000, help="change-log entries")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each consumer")
    parser.add_argument("--batch", type=int, default=500, help="entries per delivery")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's first metadata
    with (
        tempfile.TemporaryDirectory(prefix="events-published-") as folder,
        running_kafka(Path(folder) / "kafka") as broker,
    ):
        for name in args.backends.split(","):
            (Path(folder) / name.strip()).mkdir()
            asyncio.run(measure(name.strip(), Path(folder) / name, broker.bootstrap, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
