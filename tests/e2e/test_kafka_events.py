"""The broker publisher end to end: `pacs serve` with PACS_KAFKA_BOOTSTRAP and a real Kafka
broker (tests/support/kafka.py), the topic read back with aiokafka as a consumer would.

Every stored instance's event reaches the topic (key: its study); a broker that is down does
not stop ingest and gets the events once it is back; and a server killed (SIGKILL) while
its delivery waits for a broker that is down delivers every event after a restart (duplicates
allowed, losses not)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from pydicom.uid import generate_uid

from tests.support.dicom_factory import make_file
from tests.support.kafka import SASL_USER, KafkaBroker
from tests.support.server import PIDS, free_port, running_server

LEASE = 3  # seconds: how long a killed server's claim delays its successor


def _env(kafka: KafkaBroker, topic: str) -> dict[str, str]:
    return {
        "PACS_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "PACS_KAFKA_TOPIC": topic,
        "PACS_OUTBOX_POLL_MS": "100",
        "PACS_OUTBOX_LEASE": str(LEASE),
        "PACS_OUTBOX_RETRY_MAX": "1",
    }


@contextmanager
def _serving(data: Path, env: dict[str, str], port: int | None = None) -> Iterator[str]:
    with running_server(data, env=env, port=port) as url:
        yield url


def _stow(url: str, study: str, count: int) -> list[str]:
    """Store `count` instances of `study` one request each; their SOP Instance UIDs."""
    sops = []
    with httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as client:
        for _ in range(count):
            sop = generate_uid()
            response = client.post(
                "/studies",
                content=make_file(study=study, sop=sop),
                headers={"Content-Type": "application/dicom"},
            )
            assert response.status_code == 200, response.text
            sops.append(sop)
    return sops


def _consume(kafka: KafkaBroker, topic: str, wanted: set[str], timeout: float) -> list[Any]:
    """The topic's messages from the start until every SOP Instance UID in `wanted` was seen
    (or `timeout` seconds passed): (key, value as JSON) pairs."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        found: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    found += [(r.key.decode(), orjson.loads(r.value)) for r in records]
                if wanted <= {value["SopInstanceUid"] for _, value in found}:
                    break
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())


def _sops(messages: list[Any]) -> set[str]:
    return {value["SopInstanceUid"] for _, value in messages}


def test_every_stored_instance_is_published_keyed_by_its_study(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    topic = f"pacs-{uuid.uuid4().hex}"
    studies = [generate_uid(), generate_uid()]
    with _serving(tmp_path / "data", _env(kafka, topic)) as url:
        stored = {study: _stow(url, study, 3) for study in studies}
        wanted = {sop for sops in stored.values() for sop in sops}
        messages = _consume(kafka, topic, wanted, timeout=30)
    assert _sops(messages) == wanted
    assert len(messages) == 6  # no duplicates without a failure
    for key, value in messages:
        assert value["StudyInstanceUid"] == key
        assert value["SopInstanceUid"] in stored[key]
        assert value["Tenant"] == "default"
        assert value["Action"] == "instance.stored"
        assert value["State"] == "current"
        assert value["Timestamp"].endswith("Z")
    # A study's events are on one partition, in the order of the log.
    assert sorted(v["Sequence"] for _, v in messages) == list(range(1, 7))
    for study in studies:
        sequences = [v["Sequence"] for k, v in messages if k == study]
        assert sequences == sorted(sequences)


def test_broker_down_ingest_goes_on_and_events_are_published_when_it_is_back(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    topic = f"pacs-{uuid.uuid4().hex}"
    data = tmp_path / "data"
    with _serving(data, _env(kafka, topic)) as url:
        before = _stow(url, generate_uid(), 1)
        assert _sops(_consume(kafka, topic, set(before), timeout=30)) == set(before)
        kafka.stop()
        try:
            during = _stow(url, generate_uid(), 3)  # acknowledged while the broker is down
            time.sleep(1.5)  # the publisher fails and backs off meanwhile
        finally:
            kafka.start()
        messages = _consume(kafka, topic, set(before + during), timeout=30)
        assert httpx.get(f"{url}/health").status_code == 200
    assert _sops(messages) == set(before + during)
    # The attempts while it was down waited on the messages already handed to the
    # producer rather than handing them over again: one copy each.
    assert len(messages) == len(before + during)
    log = (data / "server.log").read_text()
    assert "events: delivery to kafka:" in log
    assert " ERROR " not in log and "Traceback" not in log


def test_sigkill_during_delivery_then_restart_delivers_every_event(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    """Done when (issue 12): kill -9 of a node during broker delivery; after the restart
    every event is delivered, duplicates allowed, losses not."""
    topic = f"pacs-{uuid.uuid4().hex}"
    data = tmp_path / "data"
    env = _env(kafka, topic)
    port = free_port()
    with _serving(data, env, port) as url:
        first = _stow(url, generate_uid(), 2)
        assert _sops(_consume(kafka, topic, set(first), timeout=30)) == set(first)
        # Down, not frozen (SIGSTOP): a frozen broker's kernel would still take the
        # requests into its socket buffers and append them once thawed, so a delivery
        # wrongly marked done before the kill would go unnoticed.
        kafka.stop()
        try:
            stored = _stow(url, generate_uid(), 4)
            time.sleep(1.0)  # the outbox has handed them to the producer, awaiting acks
            os.kill(PIDS[url], signal.SIGKILL)
        finally:
            kafka.start()
    with _serving(data, env, port):
        # The killed server's claim runs out after LEASE seconds; the new one takes over.
        messages = _consume(kafka, topic, set(first + stored), timeout=30 + LEASE)
    assert _sops(messages) == set(first + stored)


def test_sasl_over_tls_publishes_and_a_wrong_password_only_holds_events_back(
    kafka: KafkaBroker, tmp_path: Path
) -> None:
    topic = f"pacs-{uuid.uuid4().hex}"
    user, password = SASL_USER
    secure = {
        **_env(kafka, topic),
        "PACS_KAFKA_BOOTSTRAP": kafka.sasl_bootstrap,
        "PACS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PACS_KAFKA_USERNAME": user,
        "PACS_KAFKA_PASSWORD": "not-the-password",
        "PACS_KAFKA_CA": str(kafka.ca),
    }
    data = tmp_path / "data"
    with _serving(data, secure) as url:
        held = _stow(url, generate_uid(), 2)  # stored although nothing can be published
        time.sleep(1.5)
    log = (data / "server.log").read_text()
    assert "events: delivery to kafka:" in log
    assert "not-the-password" not in log
    with _serving(data, {**secure, "PACS_KAFKA_PASSWORD": password}) as url:
        stored = _stow(url, generate_uid(), 1)
        messages = _consume(kafka, topic, set(held + stored), timeout=30 + LEASE)
    assert _sops(messages) == set(held + stored)
