"""A webhook consumer on a real SQLite index with a real HTTP receiver: POSTs share one
connection; a subscription deleted (through any node) before the registry noticed sends
nothing, although the outbox's claim made its cursor again at 0."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import pytest

from app.broker.webhooks import WebhookConsumer, WebhookFailed
from app.index.sqlite import SqliteIndex
from app.services.entry_attributes import entry_datasets
from app.services.ports import Adding, Webhook
from tests.support.records import Records
from tests.support.webhook_receiver import webhook_receiver


def _hook(url: str) -> Webhook:
    return Webhook(
        tenant="clinic-a",
        id="a" * 32,
        url=url + "/hook",
        events=("instance.stored",),
        filter=(),
        secret="s" * 16,
        active=True,
        created=datetime.now(UTC),
    )


async def test_a_deleted_subscription_sends_nothing(index: SqliteIndex, tmp_path: Path) -> None:
    records = Records(tmp_path / "files")
    with webhook_receiver() as receiver:
        hook = _hook(receiver.url)
        await index.create_webhook(hook)
        await index.add_instances([Adding("clinic-a", records.make(), overwrite=False)])
        changes = await index.changes("clinic-a", 0, 10)
        async with httpx.AsyncClient() as client:
            consumer = WebhookConsumer(
                hook,
                index,
                client,
                datasets=partial(entry_datasets, index),
                timeout=5,
                max_attempts=3,
                budget=5,
            )
            assert await consumer.deliver("clinic-a", changes) is None
            assert len(receiver.delivered("/hook")) == 1
            assert await index.delete_webhook("clinic-a", hook.id)
            with pytest.raises(WebhookFailed, match="deleted"):
                await consumer.deliver("clinic-a", changes)
        assert len(receiver.received) == 1


async def test_posts_share_one_connection(index: SqliteIndex, tmp_path: Path) -> None:
    """Regression: the answer's body was not read, so each POST closed its connection
    and the next one opened another (179 instead of 438 events a second)."""
    records = Records(tmp_path / "files")
    with webhook_receiver() as receiver:
        hook = _hook(receiver.url)
        await index.create_webhook(hook)
        await index.add_instances(
            [Adding("clinic-a", records.make(), overwrite=False) for _ in range(3)]
        )
        async with httpx.AsyncClient() as client:
            consumer = WebhookConsumer(
                hook,
                index,
                client,
                datasets=partial(entry_datasets, index),
                timeout=5,
                max_attempts=3,
                budget=5,
            )
            assert (
                await consumer.deliver("clinic-a", await index.changes("clinic-a", 0, 10)) is None
            )
        assert len(receiver.delivered()) == 3
        assert len({r.client for r in receiver.received}) == 1
