"""The common OHIF/PACS queries use an index on PostgreSQL once the tables are large.

20,000 studies (5,000 patients, 40,000 series, 120,000 instances) are inserted directly
with generate_series, the tables analyzed, and each query compiled exactly as the archive
runs it is EXPLAINed with its parameters: no sequential scan of study, series or instance,
and the index meant for it in the plan.

The rows belong to two tenants: the common queries run in the large one (99% of the rows,
as in an archive with one main tenant), and a study list runs in the small one, where
only an index leading with tenant avoids reading the large tenant's rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from app.dicom.levels import Level
from app.index.change_rows import select_changes
from app.index.postgres import PostgresIndex, retrieval_sql
from app.query.qido import parse_qido
from app.query.sql import POSTGRES, compile_counted_search
from tests.support.postgres import require_postgres, temporary_database

pytestmark = pytest.mark.asyncio(loop_scope="module")

STUDIES = 20_000
TENANT, SMALL_TENANT = "large", "small"
# The tenant of patient number i (and of its studies, series and instances).
_TENANT_OF = "CASE WHEN {i} % 100 = 99 THEN 'small' ELSE 'large' END"

_FILL = [
    f"""INSERT INTO patient (tenant, patient_id, patient_name, attrs)
        SELECT {_TENANT_OF.format(i="i")}, 'PID' || i,
               CASE WHEN i % 1000 = 0 THEN 'smith^john' || i ELSE 'pat' || i || '^given' END,
               '{{}}'
        FROM generate_series(1, {STUDIES // 4}) AS i""",
    f"""INSERT INTO study (tenant, patient_fk, study_instance_uid, study_date, study_time,
            accession_number, study_id, referring_physician_name, study_description,
            patient_id, patient_name, modalities_in_study, num_series, attrs)
        SELECT {_TENANT_OF.format(i="p")}, p, '1.2.3.' || i,
               to_char(date '2000-01-01' + (i % 9000), 'YYYYMMDD'), '101500.000000',
               'ACC' || i, i::text,
               CASE WHEN i % 500 = 0 THEN 'jones^amy' ELSE 'ref' || (i % 300) || '^doc' END,
               'Study description ' || i, 'PID' || p,
               CASE WHEN p % 1000 = 0 THEN 'smith^john' || p ELSE 'pat' || p || '^given' END,
               '\\CT\\MR\\', 2,
               jsonb_build_object('00102160',
                   jsonb_build_object('vr', 'SH', 'Value', jsonb_build_array('G' || i % 2000)))
        FROM generate_series(1, {STUDIES}) AS i,
             LATERAL (SELECT (i - 1) % {STUDIES // 4} + 1) AS x(p)""",
    f"""INSERT INTO series (tenant, study_fk, series_instance_uid, modality, series_number,
            series_description, attrs)
        SELECT study.tenant, (i + 1) / 2, '1.2.3.' || (i + 1) / 2 || '.' || i % 2,
               CASE WHEN i % 2 = 0 THEN 'CT' ELSE 'MR' END, i % 2 + 1, 'Series ' || i, '{{}}'
        FROM generate_series(1, {STUDIES * 2}) AS i JOIN study ON study.pk = (i + 1) / 2""",
    f"""INSERT INTO instance (tenant, series_fk, study_fk, sop_instance_uid, sop_class_uid,
            instance_number, transfer_syntax_uid, blob_key, size, sha256, frames, bulk,
            metadata)
        SELECT series.tenant, (i + 2) / 3, ((i + 2) / 3 + 1) / 2, '1.2.3.9.' || i,
               '1.2.840.10008.5.1.4.1.1.2',
               i % 3, '1.2.840.10008.1.2.1', md5(i::text), 1000, md5(i::text), '[]', '{{}}',
               '{{}}'
        FROM generate_series(1, {STUDIES * 6}) AS i JOIN series ON series.pk = (i + 2) / 3""",
    # One change-log entry per instance, numbered per tenant in pk order.
    """INSERT INTO change_log (tenant, seq, action, changed_at, study_instance_uid,
            series_instance_uid, sop_instance_uid, blob_key)
        SELECT instance.tenant, row_number() OVER (PARTITION BY instance.tenant ORDER BY pk),
               'instance.stored', now(), '1.2.3', '1.2.3.4', sop_instance_uid, blob_key
        FROM instance""",
    "ANALYZE",
]

# A study of the large tenant, one of its series and one of that series' instances.
STUDY_UID, SERIES_UID, SOP_UID = "1.2.3.777", "1.2.3.777.1", "1.2.3.9.4657"

# name: (level, QIDO parameters, URL scope, the indexes the plan must use)
QIDO: dict[str, tuple[Level, list[tuple[str, str]], dict[int, str], set[str]]] = {
    "PatientID": (Level.STUDY, [("PatientID", "PID123")], {}, {"study_patient_id"}),
    "PatientName=*SMITH*": (
        Level.STUDY,
        [("PatientName", "*SMITH*")],
        {},
        {"study_patient_name_trgm"},
    ),
    "PatientName=SMITH^JOHN1000": (
        Level.STUDY,
        [("PatientName", "SMITH^JOHN1000")],
        {},
        {"study_patient_name"},
    ),
    "StudyDate range": (
        Level.STUDY,
        [("StudyDate", "20100101-20100131")],
        {},
        {"study_study_date"},
    ),
    "StudyDate range, ModalitiesInStudy": (
        Level.STUDY,
        [("StudyDate", "20100101-20100131"), ("ModalitiesInStudy", "CT")],
        {},
        {"study_study_date"},
    ),
    "AccessionNumber": (
        Level.STUDY,
        [("AccessionNumber", "ACC777")],
        {},
        {"study_accession_number"},
    ),
    "StudyInstanceUID": (
        Level.STUDY,
        [("StudyInstanceUID", STUDY_UID)],
        {},
        {"study_tenant_study_instance_uid_key"},
    ),
    "ReferringPhysicianName=*JONES*": (
        Level.STUDY,
        [("ReferringPhysicianName", "*JONES*")],
        {},
        {"study_referring_physician_name_trgm"},
    ),
    "StudyDescription=*description 1234*": (
        Level.STUDY,
        [("StudyDescription", "*description 1234*")],
        {},
        {"study_study_description_trgm"},
    ),
    "EthnicGroup (stored JSON)": (
        Level.STUDY,
        [("EthnicGroup", "G42")],
        {},
        {"study_attrs"},
    ),
    "/studies/{s}/series": (
        Level.SERIES,
        [],
        {0x0020000D: STUDY_UID},
        {"study_tenant_study_instance_uid_key", "series_study_fk"},
    ),
    "/series?SeriesInstanceUID": (
        Level.SERIES,
        [("SeriesInstanceUID", SERIES_UID)],
        {},
        {"series_tenant_series_instance_uid_key"},
    ),
    "/studies/{s}/instances": (
        Level.INSTANCE,
        [],
        {0x0020000D: STUDY_UID},
        {"study_tenant_study_instance_uid_key", "instance_study_fk"},
    ),
    "/studies/{s}/series/{se}/instances": (
        Level.INSTANCE,
        [],
        {0x0020000D: STUDY_UID, 0x0020000E: SERIES_UID},
        {"series_tenant_series_instance_uid_key", "instance_series_fk"},
    ),
    "/instances?SOPInstanceUID": (
        Level.INSTANCE,
        [("SOPInstanceUID", SOP_UID)],
        {},
        {"instance_tenant_sop_instance_uid_key"},
    ),
}

# The same in the small tenant.
SMALL_TENANT_QIDO: dict[str, tuple[Level, list[tuple[str, str]], dict[int, str], set[str]]] = {
    "/studies (a study list's first page)": (Level.STUDY, [], {}, {"study_tenant"}),
    "/studies?StudyDate range": (
        Level.STUDY,
        [("StudyDate", "20100101-20100131")],
        {},
        {"study_study_date"},
    ),
    # A few hundred rows: the tenant's rows (any index leading with tenant) may serve.
    "PatientName=*SMITH*": (Level.STUDY, [("PatientName", "*SMITH*")], {}, set()),
}

# The indexes each retrieval's plan must use (any one of the sets).
RETRIEVAL: dict[str, tuple[tuple[str, str | None, str | None], list[set[str]]]] = {
    "a study": (
        (STUDY_UID, None, None),
        [{"study_tenant_study_instance_uid_key", "instance_study_fk"}],
    ),
    "a series": (
        (STUDY_UID, SERIES_UID, None),
        [{"series_tenant_series_instance_uid_key", "instance_series_fk"}],
    ),
    # A few rows either way: the instance's own key, or its series' key and its rows.
    "an instance": (
        (STUDY_UID, SERIES_UID, SOP_UID),
        [
            {"instance_tenant_sop_instance_uid_key"},
            {"series_tenant_series_instance_uid_key", "instance_series_fk"},
        ],
    ),
}

# Which index each query used, printed at the end of the module (pytest -s).
USED: dict[str, list[str]] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def conn() -> AsyncIterator[asyncpg.Connection]:
    require_postgres()
    async with temporary_database() as url:
        index = await PostgresIndex.open(url)  # the schema, as the archive creates it
        await index.close()
        connection = await asyncpg.connect(url)
        try:
            for statement in _FILL:
                await connection.execute(statement)
            yield connection
        finally:
            await connection.close()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    for name, indexes in USED.items():
        print(f"{name}: {', '.join(indexes)}")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def explain(conn: asyncpg.Connection, sql: str, params: object) -> list[dict[str, Any]]:
    text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
    return list(_nodes(json.loads(text)[0]["Plan"]))


def check(name: str, nodes: list[dict[str, Any]], expected: set[str] | list[set[str]]) -> None:
    scans = [n for n in nodes if n["Node Type"] == "Seq Scan"]
    assert not [n["Relation Name"] for n in scans], f"{name}: sequential scan in {nodes}"
    used = [n["Index Name"] for n in nodes if "Index Name" in n]
    USED[name] = used
    choices = expected if isinstance(expected, list) else [expected]
    assert any(c <= set(used) for c in choices), f"{name}: uses {used}, not {choices}"


async def test_the_tables_are_large(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SELECT count(*) FROM study") == STUDIES
    assert await conn.fetchval("SELECT count(*) FROM instance") == STUDIES * 6
    assert await conn.fetchval("SELECT count(*) FROM study WHERE patient_name LIKE 'smith%'")


@pytest.mark.parametrize("name", list(QIDO))
async def test_qido_uses_an_index(conn: asyncpg.Connection, name: str) -> None:
    level, params, scope, expected = QIDO[name]
    compiled = compile_counted_search(TENANT, parse_qido(params, level, scope=scope), POSTGRES)
    check(name, await explain(conn, compiled.sql, compiled.params), expected)


@pytest.mark.parametrize("name", list(SMALL_TENANT_QIDO))
async def test_qido_in_a_small_tenant_uses_an_index(conn: asyncpg.Connection, name: str) -> None:
    level, params, scope, expected = SMALL_TENANT_QIDO[name]
    compiled = compile_counted_search(
        SMALL_TENANT, parse_qido(params, level, scope=scope), POSTGRES
    )
    check(f"{name} (small tenant)", await explain(conn, compiled.sql, compiled.params), expected)


@pytest.mark.parametrize("name", list(RETRIEVAL))
async def test_retrieval_uses_an_index(conn: asyncpg.Connection, name: str) -> None:
    uids, expected = RETRIEVAL[name]
    sql, params = retrieval_sql("instance.metadata::text", TENANT, *uids)
    check(f"metadata/instances of {name}", await explain(conn, sql, params), expected)


# The instance counts of a page of hits (app/query/sql.py, compile_counted_search): the
# first page of the study list (100 studies) and a study's series count each parent's
# instances not folded into its row yet on a range of the instance (fk, pk) indexes.
COUNTED: dict[str, tuple[Level, dict[int, str], set[str]]] = {
    "/studies": (Level.STUDY, {}, {"instance_study_fk"}),
    "/studies/{s}/series": (
        Level.SERIES,
        {0x0020000D: STUDY_UID},
        {"series_study_fk", "instance_study_fk", "instance_series_fk"},
    ),
}


@pytest.mark.parametrize("name", list(COUNTED))
async def test_counting_a_pages_instances_uses_an_index(
    conn: asyncpg.Connection, name: str
) -> None:
    level, scope, expected = COUNTED[name]
    compiled = compile_counted_search(TENANT, parse_qido([], level, scope=scope), POSTGRES)
    check(
        f"{name} with instance counts", await explain(conn, compiled.sql, compiled.params), expected
    )


# The change feed: a page from the middle of a large tenant's log (with the metadata of
# each entry's instance), and its latest entry.
@pytest.mark.parametrize("latest", [False, True], ids=["a page", "latest"])
async def test_the_change_feed_uses_an_index(conn: asyncpg.Connection, latest: bool) -> None:
    sql = select_changes(
        lambda n: f"${n}", metadata=True, metadata_text="i.metadata::text", latest=latest
    )
    params = (TENANT,) if latest else (TENANT, STUDIES * 3, 100)
    expected = {"change_log_pkey", "instance_tenant_sop_instance_uid_key"}
    check(
        f"change feed, {'latest' if latest else 'a page'}",
        await explain(conn, sql, params),
        expected,
    )
