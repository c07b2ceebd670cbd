"""A webhook consumer on a real SQLite index with a real HTTP receiver: a subscription
deleted (through any node) before the registry noticed sends nothing, although the outbox's
claim made its cursor again at 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.broker.webhooks import WebhookConsumer, WebhookFailed
from app.index.sqlite import SqliteIndex
from app.services.ports import Adding, Webhook
from tests.support.records import Records
from tests.support.webhook_receiver import webhook_receiver


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[SqliteIndex]:
    opened = await SqliteIndex.open(tmp_path / "index.sqlite")
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_deleted_subscription_sends_nothing(index: SqliteIndex, tmp_path: Path) -> None:
    records = Records(tmp_path / "files")
    with webhook_receiver() as receiver:
        hook = Webhook(
            tenant="clinic-a",
            id="a" * 32,
            url=receiver.url + "/hook",
            events=("instance.stored",),
            filter=(),
            secret="s" * 16,
            active=True,
            created=datetime.now(UTC),
        )
        await index.create_webhook(hook)
        await index.add_instances([Adding("clinic-a", records.make(), overwrite=False)])
        changes = await index.changes("clinic-a", 0, 10)
        async with httpx.AsyncClient() as client:
            consumer = WebhookConsumer(hook, index, client, timeout=5, max_attempts=3, budget=5)
            assert await consumer.deliver("clinic-a", changes) is None
            assert len(receiver.delivered("/hook")) == 1
            assert await index.delete_webhook("clinic-a", hook.id)
            with pytest.raises(WebhookFailed, match="deleted"):
                await consumer.deliver("clinic-a", changes)
        assert len(receiver.received) == 1
