"""The change feed of two `pacs serve` nodes on one PostgreSQL database (and one S3 bucket)
while both ingest concurrently (issue 12, done when): read from either node, it lists every
stored instance exactly once, in one order, with no gaps, and a consumer following it
with long polls, alternating between the nodes, never sees a gap or an entry twice; a long
poll on one node hears of a store through the other within a second."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.production import production_backends
from tests.support.server import running_server

STUDIES, SERIES, PER_SERIES = 3, 2, 15  # 90 instances
SENT_TWICE = 15  # through both nodes at once: stored once, one entry


def _files() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for _ in range(STUDIES):
        study = generate_uid()
        for s in range(SERIES):
            series = generate_uid()
            for n in range(PER_SERIES):
                ds = make_dataset(study=study, series=series, SeriesNumber=s + 1, seed=n)
                files[ds.SOPInstanceUID] = to_bytes(ds)
    return files


def _store(url: str, blob: bytes) -> int:
    answer = httpx.post(
        f"{url}/dicomweb/studies",
        content=blob,
        headers={"Content-Type": "application/dicom"},
        timeout=60,
    )
    return answer.status_code


def _page(node: str, offset: int, **params: Any) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{node}/dicomweb/changefeed",
        params={"offset": offset, "limit": 100, "includemetadata": "false", **params},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def _follow(nodes: list[str], expected: int, done: threading.Event) -> list[dict[str, Any]]:
    """A consumer: long polls from the last sequence it has seen, on each node in turn."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    turn = 0
    while len(seen) < expected and time.monotonic() < deadline:
        offset = len(seen)
        page = _page(nodes[turn % 2], offset, wait=0 if done.is_set() else 2)
        turn += 1
        sequences = [entry["Sequence"] for entry in page]
        # Each page continues exactly where the consumer stopped: no gap, no repeat.
        assert sequences == list(range(offset + 1, offset + 1 + len(page))), sequences
        seen += page
    return seen


def test_two_nodes_ingesting_concurrently_give_one_gapless_feed(tmp_path: Path) -> None:
    files = _files()
    rng = random.Random(12)
    twice = set(rng.sample(sorted(files), SENT_TWICE))

    with (
        production_backends(tmp_path) as env,
        running_server(tmp_path / "node1", env=env) as node1,
        running_server(tmp_path / "node2", env=env) as node2,
    ):
        nodes = [node1, node2]
        jobs = []
        for i, (sop, blob) in enumerate(files.items()):
            jobs.append((nodes[i % 2], blob))
            if sop in twice:
                jobs.append((nodes[(i + 1) % 2], blob))
        rng.shuffle(jobs)
        done = threading.Event()
        with ThreadPoolExecutor(9) as pool:
            consumer = pool.submit(_follow, nodes, len(files), done)
            statuses = list(pool.map(lambda job: _store(*job), jobs))
            done.set()
            followed = consumer.result(timeout=150)
        assert statuses == [200] * len(jobs)

        feeds = [_page(node, 0) for node in nodes]
        assert feeds[0] == feeds[1], "the two nodes list different feeds"
        feed = feeds[0]
        assert [e["Sequence"] for e in feed] == list(range(1, len(files) + 1))
        assert sorted(e["SopInstanceUid"] for e in feed) == sorted(files), (
            "each stored instance exactly once"
        )
        assert {(e["Action"], e["State"]) for e in feed} == {("instance.stored", "current")}
        assert followed == feed, "the consumer saw another order than the feed"
        for node in nodes:
            latest = httpx.get(f"{node}/dicomweb/changefeed/latest", timeout=30).json()
            assert latest["Sequence"] == len(files)
        _check_a_long_poll_hears_of_the_other_node(nodes, len(files))


def _check_a_long_poll_hears_of_the_other_node(nodes: list[str], offset: int) -> None:
    """A consumer long polling node 2 learns within a second (PACS_CHANGEFEED_POLL_MS,
    500 ms) of an instance stored through node 1."""
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_page, nodes[1], offset, wait=20)
        time.sleep(0.5)
        assert not waiting.done()
        assert _store(nodes[0], to_bytes(make_dataset())) == 200
        stored = time.monotonic()
        (entry,) = waiting.result(timeout=20)
        heard = time.monotonic() - stored
    assert entry["Sequence"] == offset + 1
    assert heard < 1.0, f"node 2 answered {heard:.2f} s after node 1 stored"
