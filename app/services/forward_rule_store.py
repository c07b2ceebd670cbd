"""Forwarding rules of the admin API (app/web/forwarding_rules.py) beside those of the
settings file (PACS_FORWARDING_RULES): created per tenant, checked by the file's parser
(app/services/forward_rules.py; one implementation, errors naming the rule and field), kept
in the index. The file's rules are read only here: listed with source "file", never
deleted. An OAuth client's secret is named by its environment variable, as in the file, so
no secret is kept in the index nor shown.

`RuleBook` is what the router and the worker of every node read: the file's rules and the
index's, read again at most every `refresh` seconds, so a rule created or deleted on any
node applies everywhere within that time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from app.auth.principal import Access, Permission
from app.services.errors import BadRequest, Conflict, NotFound
from app.services.forward_rules import Rule, RuleError, parse_rule, rule_json
from app.services.ports import Index, StoredRule

log = logging.getLogger(__name__)


class RuleBook:
    """The rules in force: the file's and those kept in the index, refreshed."""

    def __init__(
        self,
        index: Index | None,
        file_rules: Sequence[Rule],
        *,
        refresh: float,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.index = index
        self.file_rules = list(file_rules)
        self.refresh = refresh
        self.env = os.environ if env is None else env
        self._stored: list[Rule] = []
        self._read_at: float | None = None
        self._unusable: set[tuple[str, str]] = set()  # warned about once

    async def rules(self) -> list[Rule]:
        """The file's rules and the index's (those last read when the index is away)."""
        now = time.monotonic()
        if self.index is not None and (
            self._read_at is None or now - self._read_at >= self.refresh
        ):
            try:
                rows = await self.index.forward_rules()
            except Exception as exc:  # the index away: the rules last read meanwhile
                log.warning("forwarding: stored rules not refreshed: %s", type(exc).__name__)
            else:
                self._stored = [r for r in map(self._parsed, rows) if r is not None]
            self._read_at = now
        return self.file_rules + self._stored

    def _parsed(self, row: StoredRule) -> Rule | None:
        try:
            return parse_rule(row.rule, self.env, row.tenant)
        except RuleError as exc:  # e.g. its secret's variable not set on this node
            if (row.tenant, row.name) not in self._unusable:
                self._unusable.add((row.tenant, row.name))
                log.warning("forwarding: tenant %s: %s; rule skipped", row.tenant, exc)
            return None


def _stored_json(row: StoredRule) -> dict[str, Any]:
    created = row.created.astimezone(UTC).isoformat(timespec="milliseconds")
    return {**row.rule, "source": "api", "created": created.replace("+00:00", "Z")}


class ForwardRuleService:
    """Create, list and delete a tenant's rules (permission admin)."""

    def __init__(
        self, index: Index, file_rules: Sequence[Rule], env: Mapping[str, str] | None = None
    ) -> None:
        self.index = index
        self.file_rules = {r.name: r for r in file_rules}
        self.env = os.environ if env is None else env

    async def create(self, access: Access, body: Any) -> dict[str, Any]:
        access.require(Permission.ADMIN)
        try:
            rule = parse_rule(body, self.env, access.tenant)
        except RuleError as exc:
            raise BadRequest(str(exc)) from None
        if rule.name in self.file_rules:
            raise Conflict(f"forwarding rule {rule.name!r}: name: used by a rule of the file")
        row = StoredRule(access.tenant, rule.name, rule_json(rule), datetime.now(UTC))
        if not await self.index.create_forward_rule(row):
            raise Conflict(f"forwarding rule {rule.name!r}: name: used by another rule")
        return _stored_json(row)

    async def all(self, access: Access) -> list[dict[str, Any]]:
        access.require(Permission.ADMIN)
        stored = await self.index.forward_rules(access.tenant)
        files = [{**rule_json(r), "source": "file"} for r in self.file_rules.values()]
        return files + [_stored_json(row) for row in stored]

    async def get(self, access: Access, name: str) -> dict[str, Any]:
        access.require(Permission.ADMIN)
        if (rule := self.file_rules.get(name)) is not None:
            return {**rule_json(rule), "source": "file"}
        found = await self.index.forward_rules(access.tenant, name)
        if not found:
            raise NotFound(f"no forwarding rule {name!r}")
        return _stored_json(found[0])

    async def delete(self, access: Access, name: str) -> None:
        access.require(Permission.ADMIN)
        if name in self.file_rules:
            raise Conflict(
                f"forwarding rule {name!r} comes from the settings file (PACS_FORWARDING_RULES) "
                "and is read only: change the file"
            )
        if not await self.index.delete_forward_rule(access.tenant, name):
            raise NotFound(f"no forwarding rule {name!r}")
