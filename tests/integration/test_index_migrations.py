"""Index migrations: from empty to the current schema, once, from any number of processes.

The current schema of each backend is checked in as `migrations/<dialect>/schema.snapshot`,
a normalized listing of the catalog after migrating an empty database. A migration that
changes the schema without the snapshot being regenerated (and reviewed) fails here, and so
does a schema that lacks a column the query compiler uses. Regenerate with
`PACS_UPDATE_SCHEMA_SNAPSHOT=1 pytest tests/integration/test_index_migrations.py`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from app.auth.principal import DEFAULT_TENANT
from app.dicom.levels import (
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    Level,
)
from app.index.migrations import MIGRATIONS_ROOT, SchemaError, latest_version
from app.query.columns import TABLE_LEVEL, columns_of
from app.query.qido import parse_qido
from tests.integration.conftest import Backend

DIALECT = {"sqlite": "sqlite", "postgres": "postgres"}

_PG_CATALOG = [
    # Extensions the schema relies on (versions differ between servers, names do not).
    """SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'
       ORDER BY 1""",
    # Columns in table order: type, collation, nullability, default, identity.
    """SELECT format('column %s.%s %s%s%s%s%s', c.relname, a.attname,
                     format_type(a.atttypid, a.atttypmod),
                     CASE WHEN a.attcollation NOT IN (0, 100)
                          THEN ' collate ' || quote_ident(co.collname) ELSE '' END,
                     CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                     coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''),
                     CASE a.attidentity WHEN 'a' THEN ' identity always'
                                        WHEN 'd' THEN ' identity by default' ELSE '' END)
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       LEFT JOIN pg_collation co ON co.oid = a.attcollation
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
       WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
         AND a.attnum > 0 AND NOT a.attisdropped
       ORDER BY c.relname, a.attnum""",
    """SELECT format('constraint %s %s %s', conrelid::regclass, conname,
                     pg_get_constraintdef(oid))
       FROM pg_constraint WHERE connamespace = 'public'::regnamespace
       ORDER BY conrelid::regclass::text, conname""",
    """SELECT 'index ' || pg_get_indexdef(i.indexrelid)
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
       WHERE c.relnamespace = 'public'::regnamespace ORDER BY c.relname""",
    "SELECT 'version ' || version FROM schema_version ORDER BY version",
]


async def schema_of(backend: Backend) -> str:
    """A normalized listing of the schema (and applied versions) of a migrated index."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.location) as db:
            rows = db.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                " ORDER BY type, name"
            ).fetchall()
            versions = db.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        lines = [f"{kind} {name}: {_one_line(sql)}" for kind, name, sql in rows]
        lines += [f"version {v}" for (v,) in versions]
    else:
        conn = await asyncpg.connect(backend.location)
        try:
            lines = [row[0] for query in _PG_CATALOG for row in await conn.fetch(query)]
        finally:
            await conn.close()
    return "\n".join(lines) + "\n"


def _one_line(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()


def snapshot_path(backend: Backend) -> Path:
    return MIGRATIONS_ROOT / DIALECT[backend.name] / "schema.snapshot"


async def test_migrating_from_empty_gives_the_snapshot_schema(backend: Backend) -> None:
    index = await backend.open()
    await index.close()
    schema = await schema_of(backend)
    path = snapshot_path(backend)
    if os.environ.get("PACS_UPDATE_SCHEMA_SNAPSHOT") == "1":
        path.write_text(schema, encoding="utf-8")
    assert path.exists(), f"{path} is missing: regenerate it (see this module's docstring)"
    assert schema == path.read_text(encoding="utf-8"), (
        f"the migrated schema differs from {path}: a migration changed the schema without"
        " the snapshot being regenerated, or the snapshot was edited by hand"
    )


async def test_the_schema_has_every_column_the_queries_use(backend: Backend) -> None:
    index = await backend.open()
    await index.close()
    schema = await schema_of(backend)
    for table in TABLE_LEVEL:
        for column in (*columns_of(table), *_computed_and_json(table)):
            name = column if isinstance(column, str) else column.name
            if backend.name == "sqlite":
                # A table rebuilt by a migration is renamed into place: SQLite quotes it.
                pattern = rf"table {table}: CREATE TABLE \"?{table}\"? \(.*\b{name}\b"
            else:
                pattern = rf"^column {table}\.{name} "
            assert re.search(pattern, schema, re.MULTILINE), f"{table}.{name} is missing"


def _computed_and_json(table: str) -> tuple[str, ...]:
    """Columns app/query/sql.py selects besides the whitelisted ones."""
    return {
        "patient": ("pk", "tenant", "attrs", "num_studies"),
        "study": (
            "pk",
            "tenant",
            "attrs",
            "modalities_in_study",
            "num_series",
            "num_instances",
            "counted_pk",
        ),
        "series": ("pk", "tenant", "study_fk", "attrs", "num_instances", "counted_pk"),
        "instance": ("pk", "tenant", "series_fk", "study_fk", "metadata"),
    }[table]


async def test_reopening_applies_nothing(backend: Backend) -> None:
    for _ in range(2):
        index = await backend.open()
        await index.close()
    versions = re.findall(r"^version ", await schema_of(backend), re.MULTILINE)
    assert len(versions) == latest_version(DIALECT[backend.name])


async def test_concurrent_migrations_of_an_empty_database(backend: Backend) -> None:
    """Several processes starting at once on a new database: all succeed, one schema."""
    opened = await asyncio.gather(
        *(backend.open(pool_size=2) for _ in range(4)), return_exceptions=True
    )
    for index in opened:
        if not isinstance(index, BaseException):
            await index.close()
    assert [i for i in opened if isinstance(i, BaseException)] == []
    assert await schema_of(backend) == snapshot_path(backend).read_text(encoding="utf-8")


async def test_a_schema_newer_than_the_code_is_refused(backend: Backend) -> None:
    index = await backend.open()
    await index.close()
    newer = latest_version(DIALECT[backend.name]) + 1
    if backend.name == "sqlite":
        with sqlite3.connect(backend.location) as db:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (newer,))
    else:
        conn = await asyncpg.connect(backend.location)
        try:
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", newer)
        finally:
            await conn.close()
    with pytest.raises(SchemaError, match=rf"version {newer} is newer .*\({newer - 1}\)"):
        await backend.open()


# Rows as the first schema held them (one of each level, each the first of its table: pk
# 1), in SQL both dialects read.
_VERSION_1_ROWS = [
    """INSERT INTO patient (patient_id, patient_name, num_studies, attrs)
       VALUES ('P1', 'doe^jane', 1, '{}')""",
    """INSERT INTO study (patient_fk, study_instance_uid, patient_id, num_series,
           num_instances, modalities_in_study, attrs, created_at, updated_at)
       VALUES (1, '1.2.3', 'P1', 1, 1, '\\CT\\', '{}', '2024-01-01T00:00:00Z',
           '2024-01-01T00:00:00Z')""",
    """INSERT INTO series (study_fk, series_instance_uid, modality, num_instances, attrs)
       VALUES (1, '1.2.3.4', 'CT', 1, '{}')""",
    """INSERT INTO instance (series_fk, study_fk, sop_instance_uid, sop_class_uid,
           transfer_syntax_uid, blob_key, size, sha256, encapsulated, frames, bulk, metadata,
           created_at)
       VALUES (1, 1, '1.2.3.4.5', '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1',
           'abcdef0123', 10, 'ff', FALSE, '[]', '{}', '{}', '2024-01-01T00:00:00Z')""",
]


async def _version_1_with_rows(backend: Backend) -> None:
    """The database as the code before tenants left it: schema version 1 and some rows."""
    first = (MIGRATIONS_ROOT / DIALECT[backend.name] / "0001_initial.sql").read_text()
    version = [
        # As each backend creates it (the snapshot compares the text on SQLite).
        "CREATE TABLE schema_version (version INTEGER NOT NULL)"
        if backend.name == "sqlite"
        else "CREATE TABLE schema_version (version integer NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (1)",
    ]
    if backend.name == "sqlite":
        with sqlite3.connect(backend.location) as db:
            db.executescript(first)
            for statement in [*version, *_VERSION_1_ROWS]:
                db.execute(statement)
        return
    conn = await asyncpg.connect(backend.location)
    try:
        await conn.execute(first)
        for statement in [*version, *_VERSION_1_ROWS]:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_existing_rows_move_into_the_default_tenant(backend: Backend) -> None:
    await _version_1_with_rows(backend)
    index = await backend.open()  # migrates
    try:
        (found,) = await index.instances(DEFAULT_TENANT, "1.2.3")
        assert (found.series_instance_uid, found.sop_instance_uid) == ("1.2.3.4", "1.2.3.4.5")
        assert found.blob_key == "abcdef0123"  # keys from before tenants stay as they were
        (study,) = await index.search(DEFAULT_TENANT, parse_qido([], Level.STUDY))
        assert study.computed[NUMBER_OF_STUDY_RELATED_INSTANCES] == 1
        # Migration 0005 marks the stored counts as counting every instance there is.
        (series,) = await index.search(DEFAULT_TENANT, parse_qido([], Level.SERIES))
        assert series.computed[NUMBER_OF_SERIES_RELATED_INSTANCES] == 1
        assert await index.instances("clinic-a", "1.2.3") == []
    finally:
        await index.close()
    schema = await schema_of(backend)
    assert schema == snapshot_path(backend).read_text(encoding="utf-8")
