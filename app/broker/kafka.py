"""The broker publisher: change-log entries to a Kafka topic through aiokafka, a consumer of
the outbox (app/services/outbox.py).

Each entry is one message: key the Study Instance UID (Kafka's partitioner sends a study's
messages to one partition, so consumers see them in the order they were stored), value the
entry as the change feed gives it (`Sequence`, `StudyInstanceUid`, `SeriesInstanceUid`,
`SopInstanceUid`, `Action`, `Timestamp`, `State`) plus its `Tenant`, without metadata.
The producer is idempotent with acks=all: a message is acknowledged once every in-sync
replica has it, and the producer's own retries do not duplicate it in the log.

A batch is delivered when the broker has acknowledged every message of it. While the broker
is unreachable aiokafka keeps the messages it was handed and retries without end, and its
acknowledgements never come: the outbox cuts the delivery off and tries again later. The
messages then still in the producer are not handed over again (a second copy each retry,
piling up in its memory): the publisher keeps the acknowledgement it awaits for each entry
and waits on it again. A message the producer gave up on (an error from the broker) makes a
new producer, and its entry is sent again. A kill -9 loses what the producer held; the
cursor was not advanced, so the next process sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from app.services.ports import Change

log = logging.getLogger(__name__)

# Seconds a stop may wait for the producer to flush; it cannot while the broker is down.
STOP_TIMEOUT = 5.0


def message_value(tenant: str, change: Change) -> bytes:
    """The entry as JSON, the change feed's fields and names plus the tenant."""
    return orjson.dumps(
        {
            "Tenant": tenant,
            "Sequence": change.sequence,
            "StudyInstanceUid": change.study_instance_uid,
            "SeriesInstanceUid": change.series_instance_uid,
            "SopInstanceUid": change.sop_instance_uid,
            "Action": str(change.action),
            "Timestamp": _timestamp(change.timestamp),
            "State": str(change.state),
        }
    )


def _failed(ack: asyncio.Future[object]) -> bool:
    return ack.done() and (ack.cancelled() or ack.exception() is not None)


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class KafkaSecurity:
    """How to reach the brokers (aiokafka's security_protocol and SASL settings)."""

    protocol: str = "PLAINTEXT"  # SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str = "PLAIN"  # SCRAM-SHA-256, SCRAM-SHA-512
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""  # TLS: the CA that signed the brokers' certificates; "": the system's

    def producer_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            # The system's CAs unless a CA file is given (aiokafka's own helper loads none).
            try:
                options["ssl_context"] = ssl.create_default_context(cafile=self.ca_file or None)
            except OSError as exc:  # ssl.SSLError too: not PEM certificates
                reason = exc.strerror or str(exc)
                raise ValueError(f"the Kafka CA file {self.ca_file!r}: {reason}") from None
        if self.protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options


class KafkaPublisher:
    def __init__(
        self,
        brokers: Sequence[str],
        topic: str,
        *,
        security: KafkaSecurity | None = None,
        client_id: str = "pacs",
    ) -> None:
        self.brokers = list(brokers)
        self.security = security or KafkaSecurity()
        # Built now: a CA file that cannot be read stops the start with its error.
        self._options = self.security.producer_options()
        self.topic = topic
        self.client_id = client_id
        # The cursor's name: a new topic is published from the beginning of the log.
        self.name = f"kafka:{topic}"
        self.metadata = False  # consumers read it with WADO-RS
        self._producer: AIOKafkaProducer | None = None
        # The acknowledgement awaited for each entry handed to the current producer and not
        # yet acknowledged: (tenant, sequence) -> future.
        self._pending: dict[tuple[str, int], asyncio.Future[object]] = {}

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> None:
        producer = await self._started()
        acks: list[asyncio.Future[object]] = []
        for change in changes:
            key = (tenant, change.sequence)
            ack = self._pending.get(key)
            if ack is None or _failed(ack):
                ack = await producer.send(
                    self.topic,
                    value=message_value(tenant, change),
                    key=change.study_instance_uid.encode(),
                )
                self._pending[key] = ack
            acks.append(ack)
        # asyncio.wait, not gather: a delivery cut off must leave the acknowledgements
        # pending, to be awaited by the next attempt.
        await asyncio.wait(acks)
        for change, ack in zip(changes, acks, strict=True):
            if not _failed(ack):
                self._pending.pop((tenant, change.sequence), None)
        failed = next((ack for ack in acks if _failed(ack)), None)
        if failed is not None:
            await self._discard()
            error = None if failed.cancelled() else failed.exception()
            raise error or RuntimeError("a Kafka send was cancelled")

    async def close(self) -> None:
        await self._discard()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        producer = AIOKafkaProducer(
            bootstrap_servers=self.brokers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            # Fewer reconnection attempts per second while the broker is down.
            retry_backoff_ms=500,
            **self._options,
        )
        try:
            await producer.start()  # fails at once when the broker cannot be reached
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _discard(self) -> None:
        """Stop the producer (its successor starts a new idempotent session); what it still
        held is sent again by the next attempt."""
        producer, self._producer = self._producer, None
        for ack in self._pending.values():
            ack.cancel()
        self._pending.clear()
        if producer is None:
            return
        try:
            # A stop flushes first, which never ends while the broker is down.
            await asyncio.wait_for(producer.stop(), STOP_TIMEOUT)
        except Exception as exc:
            log.warning("events: the Kafka producer did not stop cleanly: %s", type(exc).__name__)
