#!/usr/bin/env python3
"""QIDO latency at scale on PostgreSQL: p50, p95 and p99 of study, series and instance
searches over HTTP against an index of about a million instances.

The index is filled through the PostgreSQL index's own `add_instance` (what STOW and C-STORE
call), with records made from a few generated files whose UIDs, patient, date, accession and
modality are varied per study, into the database `--database` on the server of
`PACS_TEST_POSTGRES_URL`. The database is kept, so that a second run measures at once; a
database already holding `--instances` instances is not filled again (`--drop` starts anew).
Then a `pacs serve` on that database answers QIDO requests sent one at a time (so that every
figure is one request's own latency, queueing excluded), each query kind in turn, after a
warm-up; the table gives p50, p95, p99 and p95/p50 per kind.

    PACS_TEST_POSTGRES_URL=postgresql://pacs_test:pacs_test@127.0.0.1:5432/postgres \\
        .venv/bin/python load-tests/qido_scale.py --instances 1000000 --studies 40000

Run from the repository root (it imports `tests.support`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
import servers
from pydicom.uid import generate_uid

from app.index.postgres import PostgresIndex
from app.services.ports import InstanceRecord
from tests.support.postgres import ADMIN_URL, database_url
from tests.support.records import Records

SERIES_PER_STUDY = 3
MODALITIES = ("CT", "MR", "PT", "US", "CR")
SURNAMES = ("SMITH", "JONES", "GARCIA", "MULLER", "ROSSI", "DUBOIS", "NOVAK", "SATO")
GIVEN = ("ANNA", "JOHN", "MARIA", "PETER", "LUCIA", "KARL", "EMMA", "OMAR")


def _value(tag: str, vr: str, value: Any) -> dict[str, Any]:
    return {tag: {"vr": vr, "Value": [value]}}


class Maker:
    """Records for study `n`: templates (one per modality) with the study's identity."""

    def __init__(self, folder: Path) -> None:
        records = Records(folder)
        self.templates = {m: records.make(Modality=m, seed=i) for i, m in enumerate(MODALITIES)}

    def study(self, n: int, instances: int) -> list[InstanceRecord]:
        modality = MODALITIES[n % len(MODALITIES)]
        patient = n // 2  # two studies per patient
        name = f"{SURNAMES[patient % len(SURNAMES)]}{patient}^{GIVEN[patient % len(GIVEN)]}"
        study_uid = generate_uid()
        series_uids = [generate_uid() for _ in range(SERIES_PER_STUDY)]
        date = f"{2000 + n % 25}{1 + n % 12:02d}{1 + n % 28:02d}"
        common = {
            **_value("00100020", "LO", f"PID{patient}"),
            **{"00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]}},
            **_value("00080020", "DA", date),
            **_value("00080050", "SH", f"ACC{n}"),
            **_value("0020000D", "UI", study_uid),
            **_value("00080060", "CS", modality),
        }
        template = self.templates[modality]
        made = []
        for k in range(instances):
            series = series_uids[k * SERIES_PER_STUDY // instances]
            sop = generate_uid()
            metadata = {
                **template.metadata,
                **common,
                **_value("0020000E", "UI", series),
                **_value("00080018", "UI", sop),
                **_value("00200013", "IS", k + 1),
            }
            made.append(
                replace(
                    template,
                    study_instance_uid=study_uid,
                    series_instance_uid=series,
                    sop_instance_uid=sop,
                    blob_key=uuid.uuid4().hex,
                    metadata=metadata,
                    patient_id=f"PID{patient}",
                )
            )
        return made


async def instance_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('instance') IS NOT NULL")
        return int(await conn.fetchval("SELECT count(*) FROM instance")) if exists else 0
    finally:
        await conn.close()


async def prepare_database(name: str, drop: bool) -> str:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and drop:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
        # The fill is not what is measured: commit without waiting for the WAL flush.
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await conn.close()
    return database_url(name)


async def fill(url: str, instances: int, studies: int, concurrency: int) -> None:
    """Add studies until the index holds `instances` instances (resuming a partial fill)."""
    have = await instance_count(url)
    if have >= instances:
        print(f"index holds {have} instances already", flush=True)
        return
    per_study = max(1, instances // studies)
    first = have // per_study
    with tempfile.TemporaryDirectory() as folder:
        maker = Maker(Path(folder))
    index = await PostgresIndex.open(url, pool_size=concurrency)
    # Each worker stores whole studies, as several modalities sending at once do (workers on
    # one study would mostly wait for each other's row locks).
    queue = asyncio.Queue[list[InstanceRecord]](maxsize=concurrency * 2)
    done = 0
    started = time.perf_counter()

    async def produce() -> None:
        for n in range(first, studies):
            await queue.put(maker.study(n, per_study))

    async def consume() -> None:
        nonlocal done
        while True:
            study = await queue.get()
            for record in study:
                await index.add_instance("default", record, overwrite=False)
                done += 1
                if done % 50_000 == 0:
                    rate = done / (time.perf_counter() - started)
                    print(f"  {have + done} instances ({rate:.0f} inst/s)", flush=True)
            queue.task_done()

    workers = [asyncio.create_task(consume()) for _ in range(concurrency)]
    await produce()
    await queue.join()
    for worker in workers:
        worker.cancel()
    await index.close()
    elapsed = time.perf_counter() - started
    print(f"filled {done} instances in {elapsed:.0f} s ({done / elapsed:.0f} inst/s)")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")  # as autovacuum would, soon after a load
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" RESET synchronous_commit')
    finally:
        await conn.close()


Query = Callable[[random.Random], tuple[str, dict[str, str]]]


async def sample_uids(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    conn = await asyncpg.connect(url)
    try:
        studies = await conn.fetch(
            "SELECT study_instance_uid FROM study TABLESAMPLE SYSTEM (5) LIMIT 2000"
        )
        series = await conn.fetch(
            """SELECT st.study_instance_uid, se.series_instance_uid
               FROM series se TABLESAMPLE SYSTEM (5) JOIN study st ON st.pk = se.study_fk
               LIMIT 2000"""
        )
    finally:
        await conn.close()
    return [r[0] for r in studies], [(r[0], r[1]) for r in series]


def queries(studies: int, study_uids: list[str], series: list[tuple[str, str]]) -> dict[str, Query]:
    def patient(rng: random.Random) -> int:
        return rng.randrange(max(1, studies // 2))

    return {
        "studies by PatientID": lambda r: ("/studies", {"PatientID": f"PID{patient(r)}"}),
        "studies by PatientName*": lambda r: (
            "/studies",
            {"PatientName": f"{SURNAMES[(p := patient(r)) % len(SURNAMES)]}{p}*"},
        ),
        "studies by AccessionNumber": lambda r: (
            "/studies",
            {"AccessionNumber": f"ACC{r.randrange(studies)}"},
        ),
        "studies by date + modality": lambda r: (
            "/studies",
            {
                "StudyDate": f"{2000 + r.randrange(25)}0101-{2000 + r.randrange(25)}0131",
                "ModalitiesInStudy": r.choice(MODALITIES),
                "limit": "25",
            },
        ),
        "series of a study": lambda r: (f"/studies/{r.choice(study_uids)}/series", {}),
        "instances of a series": lambda r: (
            "/studies/{}/series/{}/instances".format(*r.choice(series)),
            {},
        ),
    }


async def measure(base: str, named: dict[str, Query], requests: int) -> dict[str, list[float]]:
    rng = random.Random(1)
    found: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for name, query in named.items():
            for _ in range(20):  # warm-up: connections, plans, caches
                path, params = query(rng)
                (await client.get(path, params=params)).raise_for_status()
            times = []
            for _ in range(requests):
                path, params = query(rng)
                started = time.perf_counter()
                response = await client.get(path, params=params)
                times.append((time.perf_counter() - started) * 1000)
                if response.status_code not in (200, 204):
                    raise SystemExit(f"{name}: {response.status_code} {response.text[:200]}")
            found[name] = times
    return found


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--studies", type=int, default=40_000)
    parser.add_argument("--database", default="pacs_qido_scale")
    parser.add_argument("--drop", action="store_true", help="start from an empty database")
    parser.add_argument("--concurrency", type=int, default=8, help="add_instance in flight")
    parser.add_argument("--requests", type=int, default=1000, help="per query kind")
    parser.add_argument("--fill-only", action="store_true")
    parser.add_argument("--pacs", default=servers.default_pacs(), help="`pacs` executable")
    args = parser.parse_args()

    url = asyncio.run(prepare_database(args.database, args.drop))
    asyncio.run(fill(url, args.instances, args.studies, args.concurrency))
    if args.fill_only:
        return
    study_uids, series = asyncio.run(sample_uids(url))
    named = queries(args.studies, study_uids, series)
    with servers.pacs_server(args.pacs, env={"PACS_DATABASE_URL": url}) as server:
        found = asyncio.run(measure(server.url, named, args.requests))
        rss = server.rss() / 2**20
    held = asyncio.run(instance_count(url))
    print(
        f"\n{held} instances, {args.requests} requests per kind, one at a time; RSS {rss:.0f} MiB"
    )
    print(f"{'query':<30} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p95/p50':>8}")
    for name, times in found.items():
        p50, p95, p99 = (percentile(times, p) for p in (50, 95, 99))
        print(f"{name:<30} {p50:>8.2f} {p95:>8.2f} {p99:>8.2f} {p95 / p50:>8.2f}")


if __name__ == "__main__":
    main()
