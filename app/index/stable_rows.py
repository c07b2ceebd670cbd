"""Stable series and studies, shared by the index backends (table stable_pending,
migrations/*/0009_stable_pending.sql): the rows an ingest transaction marks as arrived, the
statement that counts what a claimed row announces, and the entries it makes.

A row is keyed (tenant, study, series), the study's own row with series ''. Ingest writes
each row a batch touches once (not once per instance), last but the change log; an
announcement claims quiet rows, deletes them and writes their entries in one transaction
(app/index/postgres_stable.py, app/index/sqlite_stable.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.index.change_rows import PendingChange
from app.index.rows import Row
from app.services.ports import ChangeAction

# The series_instance_uid of a study's own row.
STUDY = ""
# What makes a study and its series unstable again: an instance stored or replaced in it.
_ARRIVALS = frozenset({ChangeAction.INSTANCE_STORED, ChangeAction.INSTANCE_REPLACED})

Key = tuple[str, str, str]


def arrivals(changes: Iterable[PendingChange]) -> list[Key]:
    """The rows a transaction's entries mark as arrived: each study and series an instance
    arrived in, once (a row is written once per statement), sorted: the order in which
    every transaction locks them, so two ingests cannot deadlock on them."""
    keys: set[Key] = set()
    for change in changes:
        if change.action in _ARRIVALS and change.series_instance_uid is not None:
            keys.add((change.tenant, change.study_instance_uid, STUDY))
            keys.add((change.tenant, change.study_instance_uid, change.series_instance_uid))
    return sorted(keys)


def _instances(table: str, fk: str) -> str:
    # As a search counts them (app/query/sql.py): the folded count and the newer ones.
    return f"""{table}.num_instances + (SELECT count(*) FROM instance
               WHERE instance.{fk} = {table}.pk AND instance.pk > {table}.counted_pk)"""


def counted_sql(claimed: str) -> str:
    """The counts of the rows of `claimed` (a table or subquery of stable_pending keys):
    num_instances is NULL for a study or series no longer stored (deleted meanwhile: it is
    not announced). Ordered as the entries are written: the series of a study before it."""
    return f"""SELECT c.tenant, c.study_instance_uid, c.series_instance_uid,
            study.num_series,
            CASE WHEN study.pk IS NULL THEN NULL
                 WHEN c.series_instance_uid = '' THEN {_instances("study", "study_fk")}
                 WHEN series.pk IS NULL THEN NULL
                 ELSE {_instances("series", "series_fk")} END AS num_instances
        FROM {claimed} c
        LEFT JOIN study ON study.tenant = c.tenant
            AND study.study_instance_uid = c.study_instance_uid
        LEFT JOIN series ON c.series_instance_uid <> '' AND series.tenant = c.tenant
            AND series.series_instance_uid = c.series_instance_uid
            AND series.study_fk = study.pk
        ORDER BY c.tenant, c.study_instance_uid, c.series_instance_uid = '',
            c.series_instance_uid"""


def announcements(rows: Iterable[Row]) -> list[PendingChange]:
    """The entries of the rows of `counted_sql`, in their order, the counts under their
    DICOM keywords (as QIDO names them); none for what is gone."""
    found: list[PendingChange] = []
    for row in rows:
        instances = row["num_instances"]
        if instances is None:
            continue
        tenant, study, series = row["tenant"], row["study_instance_uid"], row["series_instance_uid"]
        if series == STUDY:
            detail = {
                "NumberOfStudyRelatedSeries": int(row["num_series"]),
                "NumberOfStudyRelatedInstances": int(instances),
            }
            found.append(
                PendingChange(tenant, ChangeAction.STUDY_STABLE, study, None, None, None, detail)
            )
        else:
            detail = {"NumberOfSeriesRelatedInstances": int(instances)}
            found.append(
                PendingChange(tenant, ChangeAction.SERIES_STABLE, study, series, None, None, detail)
            )
    return found


def per_tenant(changes: Iterable[PendingChange]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.tenant] = counts.get(change.tenant, 0) + 1
    return counts
