#!/usr/bin/env python3
"""Row versions written per instance stored: N instances in S studies through the PostgreSQL
index's own `add_instance`, into a new database; print pg_stat_user_tables' inserted,
updated, HOT-updated and dead row versions of patient, study, series and instance, scaled
to 1,000 instances, the add_instance throughput, and then how long the index takes to
answer a study list, a study's series and a study's instances (QIDO's searches, after a
VACUUM ANALYZE such as autovacuum makes).

    PACS_TEST_POSTGRES_URL=postgresql://pacs_test:pacs_test@127.0.0.1:5432/postgres \\
        .venv/bin/python load-tests/row_versions.py --instances 1000 --studies 10

Autovacuum is switched off on the new database's tables, so that the dead versions counted
are all those left behind (page pruning of HOT chains still removes some). Run from the
repository root (it imports `tests.support`); the database is dropped afterwards.

What counting the instances not folded yet costs a study list of large studies (rows
inserted with SQL, not through add_instance, FOLD_AT - 1 of each study and series not
folded: the worst case; the page alone against the page with its counts):

    .venv/bin/python load-tests/row_versions.py --count-cost 100 2000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from pydicom.uid import generate_uid

from app.dicom.levels import Level
from app.index.postgres import PostgresIndex
from app.index.rows import FOLD_AT
from app.query.qido import parse_qido
from app.query.sql import POSTGRES, compile_counted_search, compile_search
from app.services.ports import InstanceRecord
from tests.support.postgres import temporary_database
from tests.support.records import Records

TABLES = ("patient", "study", "series", "instance")
SERIES_PER_STUDY = 4
MODALITIES = ("CT", "MR", "PT", "SR")
STATS = """SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup
           FROM pg_stat_user_tables WHERE relname = ANY($1::text[])"""


def records(instances: int, studies: int, folder: Path) -> list[InstanceRecord]:
    """Instances spread over `studies` studies of 4 series, in the order a modality sends
    them (study by study, series by series); one patient per two studies."""
    study_uids = [generate_uid() for _ in range(studies)]
    series_uids = [[generate_uid() for _ in range(SERIES_PER_STUDY)] for _ in study_uids]
    per_study = max(1, instances // studies)
    maker = Records(folder)
    made = []
    for n in range(instances):
        s = min(studies - 1, n // per_study)
        k = min(SERIES_PER_STUDY - 1, (n - s * per_study) * SERIES_PER_STUDY // per_study)
        made.append(
            maker.make(
                study=study_uids[s],
                series=series_uids[s][k],
                Modality=MODALITIES[k],
                PatientID=f"P{s // 2}",
                InstanceNumber=n,
                seed=n,
            )
        )
    return made


async def stats(url: str) -> dict[str, tuple[int, ...]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(STATS, list(TABLES))
    finally:
        await conn.close()
    return {r["relname"]: tuple(r[1:]) for r in rows}


async def measure(made: list[InstanceRecord], concurrency: int) -> None:
    async with temporary_database() as url:
        index = await PostgresIndex.open(url, pool_size=concurrency)
        conn = await asyncpg.connect(url)
        for table in TABLES:
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await conn.close()
        queue = list(reversed(made))

        async def worker() -> None:
            while queue:
                await index.add_instance("default", queue.pop(), overwrite=False)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        # Backends report their statistics when they exit at the latest.
        await index.close()
        await asyncio.sleep(1.0)
        found = await stats(url)
        conn = await asyncpg.connect(url)
        await conn.execute("VACUUM ANALYZE")
        await conn.close()
        index = await PostgresIndex.open(url)
        searches = await time_searches(index, made[0].study_instance_uid)
        await index.close()
    scale = 1000 / len(made)
    print(f"{len(made)} instances, {concurrency} in flight: {len(made) / elapsed:.0f} inst/s")
    print(f"per 1,000 instances:  {'inserted':>9} {'updated':>9} {'HOT':>9} {'dead':>9}")
    for table in TABLES:
        values = found.get(table, (0, 0, 0, 0))
        print(f"  {table:<18} " + " ".join(f"{v * scale:>9.0f}" for v in values))
    for name, (median, p95) in searches.items():
        print(f"  {name:<32} median {median:.2f} ms, p95 {p95:.2f} ms")


async def time_searches(
    index: PostgresIndex, study: str, rounds: int = 100
) -> dict[str, tuple[float, float]]:
    """Median and 95th percentile of each search, in milliseconds."""
    scope = {0x0020000D: study}
    searches = {
        "study list (100)": parse_qido([], Level.STUDY),
        "series of a study": parse_qido([], Level.SERIES, scope=scope),
        "instances of a study (100)": parse_qido([], Level.INSTANCE, scope=scope),
    }
    timed = {}
    for name, query in searches.items():
        took = []
        for _ in range(rounds):
            started = time.perf_counter()
            await index.search("default", query)
            took.append((time.perf_counter() - started) * 1000)
        took.sort()
        timed[name] = (took[len(took) // 2], took[int(len(took) * 0.95)])
    return timed


# Studies of one patient, each with 4 series of `per_series` instances (SQL, as in
# tests/integration/test_postgres_plans.py).
_FILL = [
    """INSERT INTO patient (tenant, patient_id, attrs) VALUES ('default', 'P', '{{}}')""",
    """INSERT INTO study (tenant, patient_fk, study_instance_uid, num_series, attrs)
       SELECT 'default', 1, '1.2.3.' || i, 4, '{{}}' FROM generate_series(1, {studies}) AS i""",
    """INSERT INTO series (tenant, study_fk, series_instance_uid, modality, attrs)
       SELECT 'default', (i + 3) / 4, '1.2.3.4.' || i, 'CT', '{{}}'
       FROM generate_series(1, {studies} * 4) AS i""",
    """INSERT INTO instance (tenant, series_fk, study_fk, sop_instance_uid, sop_class_uid,
           transfer_syntax_uid, blob_key, size, sha256, frames, bulk, metadata)
       SELECT 'default', s, (s + 3) / 4, '1.2.3.9.' || s || '.' || i, '1.2', '1.2', 'k', 1,
              'h', '[]', '{{}}', '{{}}'
       FROM generate_series(1, {studies} * 4) AS s, generate_series(1, {per_series}) AS i""",
    # The worst case: FOLD_AT - 1 instances of each study and series not folded yet.
    """UPDATE study SET (num_instances, counted_pk) = (SELECT count(*), coalesce(max(pk), 0)
       FROM (SELECT pk FROM instance WHERE study_fk = study.pk ORDER BY pk
             LIMIT greatest(0, {per_series} * 4 - {unfolded})) AS folded)""",
    """UPDATE series SET (num_instances, counted_pk) = (SELECT count(*), coalesce(max(pk), 0)
       FROM (SELECT pk FROM instance WHERE series_fk = series.pk ORDER BY pk
             LIMIT greatest(0, {per_series} - {unfolded})) AS folded)""",
    "VACUUM ANALYZE",
]


async def count_cost(studies: int, per_study: int, rounds: int = 200) -> None:
    """The study list's first page with and without its instance counts."""
    async with temporary_database() as url:
        index = await PostgresIndex.open(url)
        await index.close()
        conn = await asyncpg.connect(url)
        try:
            for statement in _FILL:
                await conn.execute(
                    statement.format(
                        studies=studies, per_series=per_study // 4, unfolded=FOLD_AT - 1
                    )
                )
            query = parse_qido([], Level.STUDY)
            for name, compiled in (
                ("page only (as before 0005)", compile_search("default", query, POSTGRES)),
                ("page and counts", compile_counted_search("default", query, POSTGRES)),
            ):
                took = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    await conn.fetch(compiled.sql, *compiled.params)
                    took.append((time.perf_counter() - started) * 1000)
                took.sort()
                print(
                    f"{studies} studies of {per_study} instances, study list, {name}:"
                    f" median {took[len(took) // 2]:.2f} ms, p95 {took[int(rounds * 0.95)]:.2f} ms"
                )
        finally:
            await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--count-cost", type=int, nargs=2, metavar=("STUDIES", "PER_STUDY"))
    args = parser.parse_args()
    if args.count_cost:
        asyncio.run(count_cost(*args.count_cost))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        made = records(args.instances, args.studies, Path(folder))
    for concurrency in args.concurrency:
        asyncio.run(measure(made, concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
