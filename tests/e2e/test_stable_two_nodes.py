"""Stable studies with two `pacs serve` nodes on one PostgreSQL database (issue 12): both
look for quiet studies every 100 ms, and the change feed, read from either node, shows
exactly one series.stable per series and one study.stable per study once no instance has
arrived for PACS_STABLE_AFTER, with the counts at that moment; instances added later bring
exactly one more of each for what they changed."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid

from tests.conformance.helpers import stow_ok
from tests.support.dicom_factory import make_file
from tests.support.production import production_backends
from tests.support.server import running_server

QUIET = 1  # PACS_STABLE_AFTER, seconds
STABLE = ("series.stable", "study.stable")


def _store(node: str, study: str, series: list[tuple[str, int]]) -> None:
    """One STOW-RS request: its instances arrive within a few milliseconds, well inside
    one quiet period however busy the machine (separate requests might not)."""
    files = [make_file(study=study, series=uid, seed=seed) for uid, seed in series]
    with httpx.Client(base_url=f"{node}/dicomweb", timeout=60) as http:
        stow_ok(http, files)


def _feed(node: str, offset: int = 0, wait: int = 0) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{node}/dicomweb/changefeed",
        params={"offset": offset, "limit": 100, "includemetadata": "false", "wait": wait},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def _until_study_stable(node: str, offset: int) -> list[dict[str, Any]]:
    """Entries after `offset`, long polling until a study.stable comes (at most 15 s)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while not any(e["Action"] == "study.stable" for e in seen):
        assert time.monotonic() < deadline, f"no study.stable after {seen}"
        seen += _feed(node, offset + len(seen), wait=2)
    return seen


def _stable(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The stable entries: action, series, counts."""
    return sorted(
        (
            e["Action"],
            e["SeriesInstanceUid"] or "",
            e.get("NumberOfSeriesRelatedInstances"),
            e.get("NumberOfStudyRelatedSeries"),
            e.get("NumberOfStudyRelatedInstances"),
        )
        for e in entries
        if e["Action"] in STABLE
    )


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["Timestamp"])


def test_two_nodes_announce_each_quiet_study_once(tmp_path: Path) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    with production_backends(tmp_path) as backends:
        env = {**backends, "PACS_STABLE_AFTER": str(QUIET), "PACS_STABLE_SCAN_MS": "100"}
        with (
            running_server(tmp_path / "node1", env=env) as node1,
            running_server(tmp_path / "node2", env=env) as node2,
        ):
            _store(node1, study, [(ct, 0), (ct, 1), (ct, 2), (mr, 10), (mr, 11)])
            first = _until_study_stable(node2, 0)
            time.sleep(QUIET + 0.5)  # many scans of both nodes later: still one of each
            feed = _feed(node1)
            assert feed == _feed(node2), "the two nodes list different feeds"
            assert _stable(feed) == sorted(
                [
                    ("series.stable", ct, 3, None, None),
                    ("series.stable", mr, 2, None, None),
                    ("study.stable", "", None, 2, 5),
                ]
            )
            assert feed[: len(first)] == first
            stored = [e for e in feed if e["Action"] == "instance.stored"]
            announced = next(e for e in feed if e["Action"] == "study.stable")
            # Not before the quiet time (both stamped by the database's clock).
            quiet_for = (_at(announced) - max(_at(e) for e in stored)).total_seconds()
            assert quiet_for >= QUIET - 0.001, quiet_for
            assert {e["StudyInstanceUid"] for e in feed} == {study}
            assert {e["SopInstanceUid"] for e in feed if e["Action"] in STABLE} == {None}

            # More instances of one series: one more announcement of it and of the study.
            _store(node2, study, [(ct, 20), (ct, 21)])
            _until_study_stable(node1, len(feed))
            time.sleep(QUIET + 0.5)
            later = _feed(node2, len(feed))
            assert _stable(later) == [
                ("series.stable", ct, 5, None, None),
                ("study.stable", "", None, 2, 7),
            ]
            assert [e["Sequence"] for e in feed + later] == list(range(1, len(feed + later) + 1))
