"""Webhook delivery: each active subscription (app/services/webhooks.py) is a consumer of
the outbox (app/services/outbox.py) with a cursor of its own (`webhook:<id>`), so a slow or
failing receiver holds back only its own subscription.

One POST per entry, in sequence order: the body is the entry as the Kafka publisher sends it
(the change feed's fields plus `Tenant`, no metadata; app/broker/kafka.py), with headers
`X-Pacs-Event` (the action), `X-Pacs-Subscription`, `X-Pacs-Delivery` (the entry's sequence:
receivers drop duplicates by it), `X-Pacs-Timestamp` and `X-Pacs-Signature`
(app/broker/webhook_signing.py). Entries of other actions, or that do not match the attribute
filter, are skipped: an instance entry is matched on its metadata, a series.stable or
study.stable entry on the instances stored in it (app/services/entry_attributes.py); a
deleted instance, series or study, or an instance version replaced or deleted before it was
delivered, has nothing left to match, so only a subscription without a filter gets it.

What an answer means (`classify`): 2xx delivered; 408, 429, 5xx, no answer within
PACS_WEBHOOK_TIMEOUT or no connection: tried again after the outbox's backoff, up to
PACS_WEBHOOK_MAX_ATTEMPTS, then dead-lettered; any other status (4xx, and 3xx: redirects
are not followed, a receiver could send the events elsewhere) is the receiver's refusal:
dead-lettered at once. Either way the subscription then goes on with the next entry. Dead
letters are listed and retried through the admin API; a retry asked for there is made by
`WebhookRegistry` once (a failure keeps the letter with its new reason).

At least once: the cursor moves only past entries delivered or dead-lettered, so a kill -9
repeats entries, never loses them. Attempts are counted in this process (a restart starts
an entry's count again) and in the subscription's status (`failures`). Nothing logged
names the secret, the URL (it may carry a token) or patient data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

import httpx

from app.broker.kafka import message_value
from app.broker.webhook_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from app.dicom.attribute_filter import matches_any
from app.services.ports import Change, ChangeConsumer, DeadLetter, Index, Webhook

log = logging.getLogger(__name__)

# What an entry's filter is matched on, given its tenant: the services' answer
# (app/services/entry_attributes.py), handed in so that this backend reaches the index
# through the ports only.
Datasets = Callable[[str, Change], Awaitable[list[dict[str, Any]]]]

# Dead letters retried per subscription per refresh.
RETRY_BATCH = 100
# Bytes of a receiver's answer read (and dropped); past it the connection is closed.
MAX_ANSWER = 64 * 1024


class Verdict(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # the receiver may take it later
    REFUSED = "refused"  # it never will: dead-lettered at once


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    reason: str  # a status code or an error's kind, never the answer's body


def classify(status: int) -> Attempt:
    """What a receiver's answer means for the entry."""
    if 200 <= status < 300:
        return Attempt(Verdict.DELIVERED, f"HTTP {status}")
    if status in (408, 429) or status >= 500 or status < 200:
        return Attempt(Verdict.RETRY, f"HTTP {status}")
    if 300 <= status < 400:
        return Attempt(Verdict.REFUSED, f"HTTP {status} (redirects are not followed)")
    return Attempt(Verdict.REFUSED, f"HTTP {status}")


class WebhookFailed(Exception):
    """An entry the receiver did not take yet: the outbox tries again after a pause."""


class WebhookConsumer:
    def __init__(
        self,
        hook: Webhook,
        index: Index,
        client: httpx.AsyncClient,
        *,
        datasets: Datasets,
        timeout: float,
        max_attempts: int,
        budget: float,
    ) -> None:
        self.hook = hook
        self.index = index
        self.datasets = datasets
        self.client = client
        self.timeout = timeout
        self.max_attempts = max_attempts
        # Seconds after which a delivery stops starting new POSTs and reports how far it
        # got: it must end before the outbox cuts it off (half the lease).
        self.budget = budget
        self.name = hook.consumer
        self.tenant = hook.tenant
        self.metadata = bool(hook.filter)
        self._attempts: dict[int, int] = {}  # sequence -> failed attempts in this process
        # An entry that just failed after others were delivered: the outbox asks again at
        # once; this waits for its backoff instead of a second POST.
        self._failed_at: int | None = None

    async def wanted(self, change: Change) -> bool:
        if str(change.action) not in self.hook.events:
            return False
        if not self.hook.filter:
            return True
        return matches_any(await self.datasets(self.tenant, change), self.hook.filter)

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> int | None:
        # Deleted (through any node) since the registry last looked: the outbox's claim
        # made its cursor again at 0, which would replay the whole log to the receiver.
        if not await self.index.webhooks(self.tenant, self.hook.id):
            raise WebhookFailed("the subscription was deleted")
        started = time.monotonic()
        done: int | None = None
        for change in changes:
            if done is not None and time.monotonic() - started > self.budget:
                return done
            if await self.wanted(change):
                if self._failed_at == change.sequence:
                    self._failed_at = None
                    raise WebhookFailed(f"entry {change.sequence} not delivered yet")
                attempt = await self.post(change)
                if attempt.verdict is Verdict.RETRY:
                    await self.index.webhook_failed(self.tenant, self.hook.id, attempt.reason)
                    count = self._attempts.get(change.sequence, 0) + 1
                    self._attempts[change.sequence] = count
                    if count < self.max_attempts:
                        if done is not None:
                            self._failed_at = change.sequence
                            return done
                        raise WebhookFailed(
                            f"entry {change.sequence}: {attempt.reason} (attempt {count})"
                        )
                    await self._dead_letter(change, attempt, count)
                elif attempt.verdict is Verdict.REFUSED:
                    await self.index.webhook_failed(self.tenant, self.hook.id, attempt.reason)
                    await self._dead_letter(change, attempt, 1)
                self._attempts.pop(change.sequence, None)
            done = change.sequence
        return None

    async def post(self, change: Change) -> Attempt:
        """One POST of `change`, signed now; never raises for the receiver's failures."""
        body = message_value(self.tenant, change)
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pacs-webhook",
            "X-Pacs-Event": str(change.action),
            "X-Pacs-Subscription": self.hook.id,
            "X-Pacs-Delivery": str(change.sequence),
            TIMESTAMP_HEADER: str(now),
            SIGNATURE_HEADER: signature(self.hook.secret, now, body),
        }
        try:
            # The whole exchange is bounded, not each read: a receiver trickling its answer
            # would otherwise hold the subscription for ever.
            async with asyncio.timeout(self.timeout):
                request = self.client.build_request(
                    "POST", self.hook.url, content=body, headers=headers
                )
                response = await self.client.send(request, stream=True)
                try:
                    # A short answer is read, so the connection serves the next POST; a
                    # long one is not kept (the connection is closed instead).
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return Attempt(Verdict.RETRY, f"no answer within {self.timeout:g} s")
        except httpx.InvalidURL:  # that no retry can fix
            return Attempt(Verdict.REFUSED, "the URL is not one HTTP can use")
        except httpx.HTTPError as exc:
            return Attempt(Verdict.RETRY, type(exc).__name__)
        return classify(response.status_code)

    async def redeliver(self) -> int:
        """Make the retries of dead letters that the admin API asked for: one attempt each;
        the number delivered."""
        delivered = 0
        for letter in await self.index.dead_letters(
            self.tenant, self.hook.id, RETRY_BATCH, retry_only=True
        ):
            found = await self.index.changes(self.tenant, letter.sequence - 1, 1)
            if found and found[0].sequence == letter.sequence:
                attempt = await self.post(found[0])
            else:  # not in the log any more: nothing to send
                attempt = Attempt(Verdict.DELIVERED, "gone")
            if attempt.verdict is Verdict.DELIVERED:
                await self.index.remove_dead_letter(self.tenant, self.hook.id, letter.sequence)
                delivered += 1
            else:
                again = replace(
                    letter,
                    reason=attempt.reason,
                    attempts=letter.attempts + 1,
                    failed_at=datetime.now(UTC),
                )
                await self.index.add_dead_letter(self.tenant, self.hook.id, again)
        return delivered

    async def close(self) -> None:
        """Nothing of its own: the HTTP client is the registry's."""

    async def _dead_letter(self, change: Change, attempt: Attempt, attempts: int) -> None:
        letter = DeadLetter(
            sequence=change.sequence,
            action=str(change.action),
            reason=attempt.reason,
            attempts=attempts,
            failed_at=datetime.now(UTC),
            retry=False,
        )
        await self.index.add_dead_letter(self.tenant, self.hook.id, letter)
        log.warning(
            "events: webhook %s of tenant %s: entry %d dead-lettered after %d attempts: %s",
            self.hook.id,
            self.tenant,
            change.sequence,
            attempts,
            attempt.reason,
        )


class Consumers(Protocol):
    """Where the registry puts the consumers it made: the outbox."""

    def set_consumers(self, consumers: Sequence[ChangeConsumer]) -> None: ...


class WebhookRegistry:
    """Keeps the outbox's webhook consumers in step with the active subscriptions in the
    index (created or deleted through any node), and makes the dead-letter retries asked
    for. One per node, beside the outbox."""

    def __init__(
        self,
        index: Index,
        outbox: Consumers,
        others: Sequence[ChangeConsumer],
        *,
        datasets: Datasets,
        timeout: float,
        max_attempts: int,
        budget: float,
        refresh: float,
    ) -> None:
        self.index = index
        self.outbox = outbox
        self.others = list(others)
        self.datasets = datasets
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.budget = budget
        self.refresh_interval = refresh
        # Redirects are not followed: a receiver could send the events to another host.
        self.client = httpx.AsyncClient(follow_redirects=False, timeout=timeout)
        self.consumers: dict[str, WebhookConsumer] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                for consumer in list(self.consumers.values()):
                    await consumer.redeliver()
            except Exception as exc:  # the index unreachable: tried again next time
                log.warning("events: webhook subscriptions not refreshed: %s", type(exc).__name__)
            await asyncio.sleep(self.refresh_interval)

    async def refresh(self) -> None:
        hooks = await self.index.active_webhooks()
        current: dict[str, WebhookConsumer] = {}
        for hook in hooks:
            known = self.consumers.get(hook.id)
            current[hook.id] = (
                known
                if known is not None and known.hook == hook
                else WebhookConsumer(
                    hook,
                    self.index,
                    self.client,
                    datasets=self.datasets,
                    timeout=self.timeout,
                    max_attempts=self.max_attempts,
                    budget=self.budget,
                )
            )
        if current.keys() != self.consumers.keys() or any(
            current[k] is not self.consumers[k] for k in current
        ):
            self.consumers = current
            self.outbox.set_consumers([*self.others, *current.values()])

    async def close(self) -> None:
        await self.client.aclose()
