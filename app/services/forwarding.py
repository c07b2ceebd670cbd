"""Forwarding (autorouting, issue 12): change-log entries that match a rule
(app/services/forward_rules.py) become jobs in the index's durable queue, and workers send
each job's instances to its destination.

`ForwardingRouter` is a consumer of the outbox (app/services/outbox.py): for each entry and
each rule of its event it decides whether the entry matches (on the datasets
app/services/entry_attributes.py gives for it, as webhooks do) and queues a job. Queuing
is idempotent (one job per tenant, rule and sequence), so an entry delivered twice makes
one job.

`ForwardWorker` (one per node, the first process) claims due jobs one at a time under a
lease it renews while it sends; a node killed meanwhile leaves its job to be claimed again
when the lease has run out. A destination that cannot be reached (connection refused, an
association rejected, a timeout, a 5xx) fails the attempt: the job is queued again after a
pause that doubles from PACS_FORWARD_RETRY_MIN up to PACS_FORWARD_RETRY_MAX, and fails for
good after PACS_FORWARD_MAX_ATTEMPTS. A destination that refuses instances fails the job at
once with its reason: sending them again would be refused again. Jobs end done or failed;
`POST /jobs/{id}/retry` queues a failed one again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from app.auth.principal import Access, Permission, Principal
from app.dicom.attribute_filter import matches_any
from app.services.entry_attributes import entry_datasets
from app.services.forward_rule_store import RuleBook
from app.services.forward_rules import Rule
from app.services.ports import Change, ChangeAction, Index, Job, NewJob, StoredInstance

log = logging.getLogger(__name__)

# How long a stop may take to give a running job back.
STOP_TIMEOUT = 5.0
# The principal jobs read the archive as: the archive itself, reading only.
FORWARDER = Principal("forwarding", frozenset({Permission.READ}), None)


class DestinationUnavailable(Exception):
    """The destination could not be reached or did not answer: try again later."""


@dataclass
class Sent:
    """What a destination made of a job's instances."""

    total: int
    sent: int = 0
    # Why instances were refused (at most a few kept, for the job's reason).
    refusals: list[str] = field(default_factory=list)
    refused: int = 0

    def refuse(self, why: str) -> None:
        self.refused += 1
        if len(self.refusals) < 3:
            self.refusals.append(why)

    def failure(self) -> str:
        """Why the job failed ("" when every instance was sent)."""
        if not self.refused:
            return ""
        return f"{self.refused} of {self.total} instances refused: {'; '.join(self.refusals)}"


class Sender(Protocol):
    """A destination of forwarding rules: a DICOM node (app/forwarding/dicom.py) or a
    DICOMweb server (app/forwarding/stow.py)."""

    async def send(self, access: Access, instances: Sequence[StoredInstance]) -> Sent:
        """Send `instances`; what was sent and refused. DestinationUnavailable (or any
        other exception) when the attempt should be repeated later."""
        ...

    async def close(self) -> None: ...


_INSTANCE_ACTIONS = (ChangeAction.INSTANCE_STORED, ChangeAction.INSTANCE_REPLACED)


class ForwardingRouter:
    """The outbox consumer that turns matching entries into jobs."""

    name = "forwarding"

    def __init__(self, index: Index, rules: Sequence[Rule] | RuleBook) -> None:
        self.index = index
        self.book = rules if isinstance(rules, RuleBook) else RuleBook(None, rules, refresh=0)
        # Entries with their instance's metadata only when a rule matches instance entries:
        # the outbox otherwise reads every entry's JSON for nothing.
        self.metadata = any(r.event in _INSTANCE_ACTIONS for r in self.book.file_rules)

    async def start(self) -> None:
        """Before the outbox first runs: rules apply to the changes made from the first
        start with forwarding on, not to the archive's whole history. Later starts go on
        from where the cursors are (changes made while forwarding was off included)."""
        if await self.index.start_cursors(self.name):
            log.info("forwarding: first start, rules apply to the changes made from now on")

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> None:
        jobs: list[NewJob] = []
        known = [r for r in await self.book.rules() if r.tenant in (None, tenant)]
        # A stored rule on instance entries: their metadata from the next batch on.
        self.metadata = any(r.event in _INSTANCE_ACTIONS for r in known) or self.metadata
        for change in changes:
            rules = [r for r in known if r.event == change.action]
            if rules:
                datasets = await entry_datasets(self.index, tenant, change)
                jobs += [
                    _job(tenant, rule, change)
                    for rule in rules
                    if matches_any(datasets, rule.filter)
                ]
        if jobs:
            queued = await self.index.enqueue_jobs(jobs)
            if queued:
                log.info("forwarding: %d jobs queued for tenant %s", queued, tenant)

    async def close(self) -> None:
        pass


def _job(tenant: str, rule: Rule, change: Change) -> NewJob:
    return NewJob(
        tenant=tenant,
        rule=rule.name,
        destination=str(rule.destination),
        change_seq=change.sequence,
        study_instance_uid=change.study_instance_uid,
        series_instance_uid=change.series_instance_uid,
        sop_instance_uid=change.sop_instance_uid,
        priority=rule.priority,
    )


@dataclass(frozen=True)
class Backoff:
    max_attempts: int
    first: float
    longest: float

    def pause(self, attempts: int) -> float | None:
        """Seconds before the next attempt after `attempts` failed ones; None: no more."""
        if attempts >= self.max_attempts:
            return None
        return float(min(self.longest, self.first * 2 ** (attempts - 1)))


class ForwardWorker:
    def __init__(
        self,
        index: Index,
        senders: Mapping[str, Sender] | Callable[[Rule], Sender],
        *,
        owner: str,
        lease: float,
        poll_interval: float,
        backoff: Backoff,
        book: RuleBook | None = None,
    ) -> None:
        self.index = index
        # By rule name (the file's) or made for each rule of `book` (file and stored).
        self.senders: dict[tuple[str | None, str], Sender] = {}
        self.make_sender: Callable[[Rule], Sender] | None = None
        if callable(senders):
            self.make_sender = senders
        else:
            self.senders = {(None, name): sender for name, sender in senders.items()}
        self.book = book
        self._made: dict[tuple[str | None, str], Rule] = {}
        self.owner = owner
        self.lease = lease
        self.poll_interval = poll_interval
        self.backoff = backoff

    async def run(self) -> None:
        """Run due jobs until cancelled; poll when there are none (other nodes queue too)."""
        while True:
            try:
                ran = await self.run_once()
            except Exception as exc:  # the index unreachable: try again after a pause
                log.warning("forwarding: cannot claim a job: %s", _describe(exc))
                ran = False
            if not ran:
                await asyncio.sleep(self.poll_interval)

    async def run_once(self) -> bool:
        """Claim and run one due job; False when none was due."""
        if self.book is not None and not await self.book.rules():
            return False  # no rule anywhere: no claim (on SQLite a write) every poll
        job = await self.index.claim_job(self.owner, self.lease)
        if job is None:
            return False
        renewing = asyncio.create_task(self._renew(job.id))
        try:
            failure, retry = await self._attempt(job)
        except asyncio.CancelledError:
            await self._give_back(job)
            raise
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing
        if not failure:
            await self.index.job_done(job.id, self.owner)
            log.info("forwarding: job %d (rule %s) done", job.id, job.rule)
            return True
        pause = self.backoff.pause(job.attempts) if retry else None
        await self.index.job_failed(job.id, self.owner, failure, pause)
        if pause is None:
            log.warning("forwarding: job %d (rule %s) failed: %s", job.id, job.rule, failure)
        else:
            log.info(
                "forwarding: job %d (rule %s) attempt %d failed, next in %g s: %s",
                *(job.id, job.rule, job.attempts, pause, failure),
            )
        return True

    async def close(self) -> None:
        for sender in self.senders.values():
            with suppress(Exception):
                await sender.close()

    async def _attempt(self, job: Job) -> tuple[str, bool]:
        """Why the job failed ("" if it did not) and whether to try it again later."""
        sender = await self._sender(job)
        if sender is None:
            return f"rule {job.rule!r} is no longer configured", False
        try:
            instances = await self.index.instances(
                job.tenant, job.study_instance_uid, job.series_instance_uid, job.sop_instance_uid
            )
            if not instances:  # deleted since: nothing left to send
                return "", False
            sent = await sender.send(Access(FORWARDER, job.tenant), instances)
        except Exception as exc:  # unreachable, timed out, cut off, index away: try again
            return _describe(exc), True
        return sent.failure(), False

    async def _sender(self, job: Job) -> Sender | None:
        """The sender of the job's rule: the tenant's own, else the file's."""
        if self.book is not None and self.make_sender is not None:
            for rule in await self.book.rules():
                key = (rule.tenant, rule.name)
                if rule.name == job.rule and rule.tenant in (None, job.tenant):
                    if self._made.get(key) != rule:  # new, or changed since: a new sender
                        if (old := self.senders.pop(key, None)) is not None:
                            with suppress(Exception):
                                await old.close()
                        self.senders[key] = self.make_sender(rule)
                        self._made[key] = rule
                    return self.senders[key]
            return None
        return self.senders.get((None, job.rule))

    async def _give_back(self, job: Job) -> None:
        """A stop during an attempt: the job is due again at once, for this node when it
        restarts or for another, rather than after its lease has run out."""
        with suppress(Exception):
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.index.job_failed(job.id, self.owner, "the node stopped", 0.0)

    async def _renew(self, job_id: int) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            with suppress(Exception):  # the index briefly away: the next renewal may do
                if not await self.index.renew_job(job_id, self.owner, self.lease):
                    log.warning("forwarding: job %d was taken over by another node", job_id)
                    return


def _describe(exc: BaseException) -> str:
    text = str(exc)
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind
