"""Forwarding rules (autorouting, issue 12): which change-log entries send what to where.

The rules come from a JSON file (PACS_FORWARDING_RULES), checked at start, and from the
admin API (app/services/forward_rule_store.py: one rule of the same form, checked by the
same `parse_rule`); each error names the rule and the field. The file's form:

    {"rules": [
      {"name": "ct-to-viewer",
       "event": "study.stable",
       "filter": {"Modality": "CT", "BodyPartExamined": "CHEST"},
       "priority": 5,
       "destination": {"dicom": {"aeTitle": "VIEWER", "host": "10.0.0.5", "port": 104}}},
      {"name": "ct-to-cloud",
       "event": "study.stable",
       "filter": {"Modality": "CT"},
       "destination": {"stow": {"url": "https://cloud.example/dicomweb/studies",
         "oauth": {"tokenUrl": "https://id.example/token", "clientId": "pacs",
                   "secretEnv": "CLOUD_CLIENT_SECRET", "scope": "dicom.write"}}}}
    ]}

`event` is a change-log action (app.services.ports.ChangeAction): the entry's scope (a
study for study.stable, a series for series.stable, an instance for instance.stored) is
what is sent. `filter` maps DICOM keywords to values (app/dicom/attribute_filter.py: exact,
one value of a multi-valued attribute, person names, numbers); an entry matches when one of
the datasets app/services/entry_attributes.py gives for it (its instance, or the instances
of its series or study) has every value. `priority` (default 0): jobs of a higher one run
first. The secret of an OAuth client is read from the named environment variable, never
from the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from app.dicom.attribute_filter import Conditions, matches, parse_filter
from app.services.ports import ChangeAction, Json

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The actions whose scope can be sent (a deleted one cannot).
_EVENTS = tuple(
    a.value
    for a in (
        ChangeAction.STUDY_STABLE,
        ChangeAction.SERIES_STABLE,
        ChangeAction.INSTANCE_STORED,
        ChangeAction.INSTANCE_REPLACED,
    )
)
_RULE_FIELDS = ("name", "event", "filter", "priority", "destination")


class RuleError(ValueError):
    """A rules file that cannot be used; the message names the rule and field."""


@dataclass(frozen=True)
class DicomNode:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class OAuthClient:
    """OAuth 2.0 client credentials (RFC 6749 4.4) for a STOW-RS destination."""

    token_url: str
    client_id: str
    secret: str = field(repr=False)
    scope: str = ""
    secret_env: str = ""  # the environment variable the secret was read from


@dataclass(frozen=True)
class StowServer:
    url: str  # the STOW-RS endpoint: .../studies
    oauth: OAuthClient | None = None

    def __str__(self) -> str:
        return self.url


Destination = DicomNode | StowServer


@dataclass(frozen=True)
class Rule:
    name: str
    event: ChangeAction
    # (DICOM keyword, wanted value as text), every one of which must match.
    filter: Conditions
    destination: Destination
    priority: int = 0
    # The tenant of a rule created through the admin API; None: the file's, for every tenant.
    tenant: str | None = None

    def matches(self, dataset: Json) -> bool:
        """Whether the DICOM JSON `dataset` has every value of the filter."""
        return matches(dataset, self.filter)


def load_rules(path: str, env: Mapping[str, str] | None = None) -> list[Rule]:
    """The rules of the JSON file at `path`; RuleError naming what is wrong."""
    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise RuleError(f"PACS_FORWARDING_RULES: cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise RuleError(f"PACS_FORWARDING_RULES: {path} is not JSON: {exc}") from None
    return parse_rules(document, os.environ if env is None else env)


def parse_rules(document: Any, env: Mapping[str, str]) -> list[Rule]:
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RuleError('forwarding rules: expected an object {"rules": [...]}')
    rules: list[Rule] = []
    for number, item in enumerate(document["rules"], 1):
        rule = _rule(item, number, env)
        if any(r.name == rule.name for r in rules):
            raise RuleError(f"forwarding rule {rule.name!r}: name: used by another rule")
        rules.append(rule)
    return rules


def parse_rule(item: Any, env: Mapping[str, str], tenant: str | None = None) -> Rule:
    """One rule of the file's form (the admin API's body), checked as the file's are."""
    rule = _rule(item, 1, env)
    return rule if tenant is None else replace(rule, tenant=tenant)


def rule_json(rule: Rule) -> dict[str, Any]:
    """`rule` in the file's form: an OAuth secret only by the name of its variable."""
    destination: dict[str, Any]
    if isinstance(rule.destination, DicomNode):
        node = rule.destination
        destination = {"dicom": {"aeTitle": node.ae_title, "host": node.host, "port": node.port}}
    else:
        stow: dict[str, Any] = {"url": rule.destination.url}
        if (oauth := rule.destination.oauth) is not None:
            stow["oauth"] = {
                "tokenUrl": oauth.token_url,
                "clientId": oauth.client_id,
                "secretEnv": oauth.secret_env,
                "scope": oauth.scope,
            }
        destination = {"stow": stow}
    return {
        "name": rule.name,
        "event": rule.event.value,
        "filter": dict(rule.filter),
        "priority": rule.priority,
        "destination": destination,
    }


def _rule(item: Any, number: int, env: Mapping[str, str]) -> Rule:
    where = f"forwarding rule #{number}"
    if not isinstance(item, dict):
        raise RuleError(f"{where}: expected an object")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RuleError(f"{where}: name: 1 to 64 letters, digits, '.', '_' or '-'")
    where = f"forwarding rule {name!r}"
    if unknown := sorted(set(item) - set(_RULE_FIELDS)):
        raise RuleError(
            f"{where}: unknown field {unknown[0]!r}; expected {', '.join(_RULE_FIELDS)}"
        )
    event = str(item.get("event"))
    if event not in _EVENTS:
        known = ", ".join(_EVENTS)
        raise RuleError(f"{where}: event: {item.get('event')!r} is not one of {known}")
    priority = item.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > 1000:
        raise RuleError(f"{where}: priority: an integer from -1000 to 1000")
    return Rule(
        name,
        ChangeAction(event),
        _filter(item.get("filter", {}), where),
        _destination(item.get("destination"), where, env),
        priority,
    )


def _filter(given: Any, where: str) -> Conditions:
    try:
        return parse_filter(given)
    except ValueError as exc:
        raise RuleError(f"{where}: filter: {exc}") from None


def _destination(given: Any, where: str, env: Mapping[str, str]) -> Destination:
    if not isinstance(given, dict) or len(given) != 1 or next(iter(given)) not in ("dicom", "stow"):
        raise RuleError(
            f'{where}: destination: expected {{"dicom": {{...}}}} or {{"stow": {{...}}}}'
        )
    kind, spec = next(iter(given.items()))
    where = f"{where}: destination.{kind}"
    if not isinstance(spec, dict):
        raise RuleError(f"{where}: expected an object")
    _known(spec, ("aeTitle", "host", "port") if kind == "dicom" else ("url", "oauth"), where)
    if kind == "dicom":
        ae = _text(spec, "aeTitle", where)
        if len(ae) > 16 or "\\" in ae:
            raise RuleError(f"{where}: aeTitle: at most 16 characters, no backslash")
        port = spec.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise RuleError(f"{where}: port: an integer from 1 to 65535")
        return DicomNode(ae, _text(spec, "host", where), port)
    url = _url(_text(spec, "url", where), f"{where}: url")
    oauth = spec.get("oauth")
    if oauth is None:
        return StowServer(url)
    if not isinstance(oauth, dict):
        raise RuleError(f"{where}: oauth: expected an object")
    where = f"{where}.oauth"
    # A secret itself (not its variable's name) is refused, never kept.
    _known(oauth, ("tokenUrl", "clientId", "secretEnv", "scope"), where)
    secret_env = _text(oauth, "secretEnv", where)
    secret = env.get(secret_env)
    if not secret:
        raise RuleError(f"{where}: secretEnv: the environment variable {secret_env} is not set")
    scope = oauth.get("scope", "")
    if not isinstance(scope, str):
        raise RuleError(f"{where}: scope: expected text")
    client = OAuthClient(
        _url(_text(oauth, "tokenUrl", where), f"{where}: tokenUrl"),
        _text(oauth, "clientId", where),
        secret,
        scope,
        secret_env,
    )
    return StowServer(url, client)


def _known(spec: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    if unknown := sorted(set(spec) - set(fields)):
        raise RuleError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(fields)}")


def _text(spec: Mapping[str, Any], name: str, where: str) -> str:
    value = spec.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"{where}: {name}: required text")
    return value.strip()


def _url(value: str, where: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise RuleError(f"{where}: {value!r} is not an http:// or https:// URL")
    return value
