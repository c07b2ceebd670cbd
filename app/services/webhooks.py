"""Webhook subscriptions, as the admin API manages them (app/web/webhooks.py): checked,
kept in the index, listed with their delivery status, their dead letters retried. The
delivery itself runs in the background (app/broker/webhooks.py). Every operation needs the
admin permission and sees only the caller's tenant.

A subscription: `url` (http or https), `events` (change-log actions; default all),
`filter` (keyword -> exact value, every one must match, e.g. {"Modality": "CT",
"BodyPartExamined": "CHEST"}), `secret` (the HMAC key of the signatures; generated when not
given, shown once, in the creation's answer), `active` (default true). It gets the changes
made after its creation.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from app.auth.principal import Access, Permission
from app.dicom.attribute_filter import check_filter_keyword
from app.services.errors import BadRequest, NotFound
from app.services.ports import ChangeAction, DeadLetter, Index, Webhook, WebhookStatus

FIELDS = ("url", "events", "filter", "secret", "active")
MAX_URL = 2048
MAX_FILTER = 32  # conditions
MAX_VALUE = 1024  # characters of a filter value
SECRET_LENGTH = (16, 256)
_ID_CHARACTERS = frozenset("0123456789abcdef")


def _printable(text: str) -> bool:
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def check_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("url: a non-empty string is required")
    if len(value) > MAX_URL:
        raise BadRequest(f"url: longer than {MAX_URL} characters")
    if not _printable(value) or " " in value:
        raise BadRequest("url: contains a space or a control character")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError as exc:
        raise BadRequest(f"url: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadRequest(f"url: the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise BadRequest("url: no host")
    return value


def check_events(value: Any) -> tuple[str, ...]:
    known = [a.value for a in ChangeAction]
    if value is None:
        return tuple(known)
    if not isinstance(value, list) or not value:
        raise BadRequest("events: a non-empty list of event types is required")
    found: list[str] = []
    for event in value:
        if event not in known:
            raise BadRequest(f"events: unknown event type {event!r}; known: {', '.join(known)}")
        if event not in found:
            found.append(event)
    return tuple(found)


def check_filter(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise BadRequest('filter: an object of keyword: value is required, e.g. {"Modality": "CT"}')
    if len(value) > MAX_FILTER:
        raise BadRequest(f"filter: more than {MAX_FILTER} conditions")
    conditions: list[tuple[str, str]] = []
    for keyword, wanted in value.items():
        try:
            check_filter_keyword(keyword)
        except ValueError as exc:
            raise BadRequest(f"filter: {exc}") from None
        if not isinstance(wanted, str) or not wanted:
            raise BadRequest(f"filter: the value of {keyword} must be a non-empty string")
        if len(wanted) > MAX_VALUE or not _printable(wanted):
            raise BadRequest(
                f"filter: the value of {keyword} is longer than {MAX_VALUE} characters "
                "or contains a control character"
            )
        conditions.append((keyword, wanted))
    return tuple(conditions)


def check_secret(value: Any) -> str:
    if value is None:
        return secrets.token_urlsafe(32)
    low, high = SECRET_LENGTH
    if not isinstance(value, str) or not low <= len(value) <= high or not _printable(value):
        raise BadRequest(f"secret: a string of {low} to {high} printable characters is required")
    return value


def subscription(tenant: str, body: Any) -> Webhook:
    """The subscription a creation's JSON body asks for; BadRequest naming the bad field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with url, events, filter ...")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; expected: {', '.join(FIELDS)}")
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise BadRequest("active: true or false is required")
    return Webhook(
        tenant=tenant,
        id=uuid.uuid4().hex,
        url=check_url(body.get("url")),
        events=check_events(body.get("events")),
        filter=check_filter(body.get("filter")),
        secret=check_secret(body.get("secret")),
        active=active,
        created=datetime.now(UTC),
    )


class WebhookService:
    def __init__(self, index: Index) -> None:
        self._index = index

    async def create(self, access: Access, body: Any) -> Webhook:
        access.require(Permission.ADMIN)
        hook = subscription(access.tenant, body)
        await self._index.create_webhook(hook)
        return hook

    async def all(self, access: Access) -> list[WebhookStatus]:
        access.require(Permission.ADMIN)
        return await self._index.webhooks(access.tenant)

    async def get(self, access: Access, webhook_id: str) -> WebhookStatus:
        access.require(Permission.ADMIN)
        found = await self._index.webhooks(access.tenant, _checked_id(webhook_id))
        if not found:
            raise NotFound(f"no webhook subscription {webhook_id!r}")
        return found[0]

    async def delete(self, access: Access, webhook_id: str) -> None:
        access.require(Permission.ADMIN)
        if not await self._index.delete_webhook(access.tenant, _checked_id(webhook_id)):
            raise NotFound(f"no webhook subscription {webhook_id!r}")

    async def dead_letters(self, access: Access, webhook_id: str, limit: int) -> list[DeadLetter]:
        hook = await self.get(access, webhook_id)
        return await self._index.dead_letters(access.tenant, hook.webhook.id, limit)

    async def retry(self, access: Access, webhook_id: str, sequence: int | None) -> int:
        """Ask for the dead letters (or the one `sequence`) to be delivered again; the
        node's webhook loop makes the attempts. How many were asked for."""
        hook = await self.get(access, webhook_id)
        count = await self._index.retry_dead_letters(access.tenant, hook.webhook.id, sequence)
        if sequence is not None and count == 0:
            raise NotFound(f"no dead letter of sequence {sequence} in subscription {webhook_id!r}")
        return count


def _checked_id(webhook_id: str) -> str:
    if len(webhook_id) != 32 or not set(webhook_id) <= _ID_CHARACTERS:
        raise NotFound(f"no webhook subscription {webhook_id!r}")
    return webhook_id
