"""Webhook subscriptions and dead letters on both backends (migration 0010): a new
subscription's cursor starts at its tenant's latest entry, its status is read with its
cursor and dead letters, retries are asked for and made, a deletion takes everything, and
tenants see only their own."""

from __future__ import annotations

from datetime import UTC, datetime

from app.services.ports import Adding, DeadLetter, Index, Webhook
from tests.integration.conftest import TENANT
from tests.support.records import Records


def _hook(tenant: str, n: int) -> Webhook:
    return Webhook(
        tenant=tenant,
        id=f"{n:032x}",
        url=f"https://receiver.example/{n}",
        events=("instance.stored",),
        filter=(("Modality", "CT"), ("BodyPartExamined", "CHEST")),
        secret="s" * 32,
        active=n != 3,
        created=datetime(2026, 12, 7, 12, n, tzinfo=UTC),
    )


def _letter(sequence: int, reason: str = "HTTP 400") -> DeadLetter:
    return DeadLetter(sequence, "instance.stored", reason, 1, datetime.now(UTC), retry=False)


async def test_subscriptions_status_and_dead_letters(index: Index, records: Records) -> None:
    await index.add_instances([Adding(TENANT, records.make(), overwrite=False) for _ in range(2)])
    first, other_tenant, inactive = _hook(TENANT, 1), _hook("clinic-b", 2), _hook(TENANT, 3)
    for hook in (first, other_tenant, inactive):
        await index.create_webhook(hook)

    (status,) = await index.webhooks(TENANT, first.id)
    assert status.webhook == first  # filter order, secret and time kept
    # It gets what happens from now on: its cursor starts at the tenant's latest entry.
    assert status.last_delivered == 2
    assert (status.failures, status.last_error, status.dead_letters) == (0, None, 0)
    assert (await index.webhooks("clinic-b"))[0].last_delivered == 0
    assert [s.webhook.id for s in await index.webhooks(TENANT)] == [first.id, inactive.id]
    assert await index.webhooks(TENANT, other_tenant.id) == []  # another tenant's
    assert [h.id for h in await index.active_webhooks()] == [first.id, other_tenant.id]

    await index.webhook_failed(TENANT, first.id, "HTTP 503")
    await index.webhook_failed(TENANT, first.id, "HTTP 400")
    await index.add_dead_letter(TENANT, first.id, _letter(7))
    await index.add_dead_letter(TENANT, first.id, _letter(5))
    (status,) = await index.webhooks(TENANT, first.id)
    assert (status.failures, status.last_error, status.dead_letters) == (2, "HTTP 400", 2)
    assert [d.sequence for d in await index.dead_letters(TENANT, first.id, 10)] == [5, 7]
    assert await index.dead_letters(TENANT, first.id, 10, retry_only=True) == []

    assert await index.retry_dead_letters(TENANT, first.id, 7) == 1
    assert await index.retry_dead_letters(TENANT, first.id, 8) == 0
    (letter,) = await index.dead_letters(TENANT, first.id, 10, retry_only=True)
    assert (letter.sequence, letter.retry) == (7, True)
    # A failed retry puts it back, with its new reason, not to be retried again.
    await index.add_dead_letter(TENANT, first.id, _letter(7, "HTTP 500"))
    assert await index.dead_letters(TENANT, first.id, 10, retry_only=True) == []
    assert (await index.dead_letters(TENANT, first.id, 10))[1].reason == "HTTP 500"
    assert await index.retry_dead_letters(TENANT, first.id) == 2
    await index.remove_dead_letter(TENANT, first.id, 5)
    assert [d.sequence for d in await index.dead_letters(TENANT, first.id, 10)] == [7]
    assert await index.dead_letters("clinic-b", first.id, 10) == []  # per tenant

    # Deleted with its dead letters and its cursor; a second deletion finds nothing.
    assert not await index.delete_webhook("clinic-b", first.id)
    assert await index.delete_webhook(TENANT, first.id)
    assert not await index.delete_webhook(TENANT, first.id)
    assert await index.webhooks(TENANT, first.id) == []
    assert await index.dead_letters(TENANT, first.id, 10) == []
    assert await index.claim_cursor(first.consumer, TENANT, "node", 10) == 0
