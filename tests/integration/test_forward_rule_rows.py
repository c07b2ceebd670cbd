"""Forwarding rules of the admin API in the index, on both backends: kept per tenant (a
name taken once per tenant), read back as given, deleted; the rule book the router and
the worker read sees a rule created after its last read once its refresh has passed, and
the admin service refuses to delete a rule of the settings file (409)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.auth.principal import Access, Permission, Principal
from app.services.errors import Conflict, NotFound
from app.services.forward_rule_store import ForwardRuleService, RuleBook
from app.services.forward_rules import parse_rule
from app.services.forwarding import Backoff, ForwardWorker
from app.services.ports import Index, JobState, NewJob, StoredRule
from tests.integration.conftest import TENANT

RULE = {
    "name": "ct",
    "event": "study.stable",
    "filter": {"Modality": "CT"},
    "priority": 0,
    "destination": {"dicom": {"aeTitle": "VIEWER", "host": "10.0.0.5", "port": 104}},
}
ADMIN = Access(Principal("admin", frozenset({Permission.ADMIN}), None), TENANT)


async def test_rule_rows_per_tenant(index: Index) -> None:
    now = datetime.now(UTC)
    assert await index.create_forward_rule(StoredRule(TENANT, "ct", RULE, now))
    assert not await index.create_forward_rule(StoredRule(TENANT, "ct", RULE, now))
    assert await index.create_forward_rule(StoredRule("other", "ct", RULE, now))
    (found,) = await index.forward_rules(TENANT)
    assert (found.tenant, found.name, found.rule) == (TENANT, "ct", RULE)
    assert abs((found.created - now).total_seconds()) < 0.01
    assert [r.tenant for r in await index.forward_rules()] == sorted([TENANT, "other"])
    assert await index.forward_rules(TENANT, "nothing") == []
    assert await index.delete_forward_rule(TENANT, "ct")
    assert not await index.delete_forward_rule(TENANT, "ct")
    assert [r.tenant for r in await index.forward_rules()] == ["other"]


async def test_the_rule_book_sees_a_new_rule_after_its_refresh(index: Index) -> None:
    file_rule = parse_rule({**RULE, "name": "from-file"}, {})
    book = RuleBook(index, [file_rule], refresh=0.0)
    assert await book.rules() == [file_rule]
    service = ForwardRuleService(index, [file_rule], {})
    await service.create(ADMIN, RULE)
    rules = await book.rules()
    assert [(r.name, r.tenant) for r in rules] == [("from-file", None), ("ct", TENANT)]
    slow = RuleBook(index, [], refresh=3600)
    await slow.rules()
    await service.delete(ADMIN, "ct")
    assert [r.name for r in await slow.rules()] == ["ct"]  # read again only after refresh
    assert await book.rules() == [file_rule]


async def test_a_rule_of_the_file_cannot_be_deleted_nor_shadowed(index: Index) -> None:
    service = ForwardRuleService(index, [parse_rule(RULE, {})], {})
    with pytest.raises(Conflict, match="settings file"):
        await service.delete(ADMIN, "ct")
    with pytest.raises(Conflict, match="used by a rule of the file"):
        await service.create(ADMIN, RULE)
    assert (await service.get(ADMIN, "ct"))["source"] == "file"
    with pytest.raises(NotFound):
        await service.get(ADMIN, "other")


async def test_a_worker_without_any_rule_claims_nothing(index: Index) -> None:
    """No rule in the file nor the index: the worker does not claim (on SQLite a write
    transaction every poll of every loop); a job queued anyway waits."""
    await index.enqueue_jobs([NewJob(TENANT, "ct", "X", 1, "1.2.3", None, None, 0)])
    book = RuleBook(index, [], refresh=0.0)
    worker = ForwardWorker(
        index, lambda rule: pytest.fail("no sender"), owner="n", lease=5, poll_interval=1,
        backoff=Backoff(1, 1, 1), book=book,
    )  # fmt: skip
    assert not await worker.run_once()
    assert [j.state for j in await index.jobs(TENANT, None, 10)] == [JobState.QUEUED]
