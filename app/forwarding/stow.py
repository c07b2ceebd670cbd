"""A DICOMweb server as a forwarding destination: the instances of a job stored with STOW-RS
(PS3.18 10.5), in requests of at most BATCH instances, each instance the stored file as it
is (streamed from the blob store, not held in memory).

With an OAuth client (RFC 6749 4.4, client credentials) each request carries a bearer token
fetched from the token URL, reused until shortly before it expires and fetched again after
a 401. A server that cannot be reached, times out, answers 5xx, 408 or 429 makes the
attempt fail (tried again later); any other 4xx refuses the request's instances, and a 202
or 409 refuses those its Failed SOP Sequence lists.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import orjson

from app.auth.principal import Access, Permission
from app.services.forward_rules import OAuthClient, StowServer
from app.services.forwarding import DestinationUnavailable, Sent
from app.services.ports import StoredInstance
from app.services.retrieve import RetrieveService

# Instances per STOW-RS request.
BATCH = 50
# A token is fetched again this many seconds before it expires.
TOKEN_LEEWAY = 30.0
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_TRANSIENT = (408, 429)


class StowSender:
    def __init__(self, server: StowServer, retrieve: RetrieveService, *, timeout: float) -> None:
        self.server = server
        self.retrieve = retrieve
        self._client = httpx.AsyncClient(timeout=timeout)
        self._token: str | None = None
        self._token_until = 0.0

    async def send(self, access: Access, instances: Sequence[StoredInstance]) -> Sent:
        access.require(Permission.READ)
        sent = Sent(len(instances))
        for start in range(0, len(instances), BATCH):
            await self._send_batch(instances[start : start + BATCH], sent)
        return sent

    async def close(self) -> None:
        await self._client.aclose()

    async def _send_batch(self, batch: Sequence[StoredInstance], sent: Sent) -> None:
        response = await self._post(batch)
        if response.status_code == 401 and self.server.oauth is not None:
            self._token = None  # revoked or expired early: one more try with a new one
            response = await self._post(batch)
        status = response.status_code
        if status >= 500 or status in _TRANSIENT:
            raise DestinationUnavailable(f"{self.server} answered HTTP {status}")
        if status == 200:
            sent.sent += len(batch)
            return
        if status not in (202, 409):
            for instance in batch:
                sent.refuse(f"{instance.sop_instance_uid}: HTTP {status}")
            return
        failed = _failed_sops(response)
        for instance in batch:
            why = failed.get(instance.sop_instance_uid)
            if why is None and status == 202:
                sent.sent += 1
            else:
                sent.refuse(f"{instance.sop_instance_uid}: HTTP {status}, {why or 'failed'}")

    async def _post(self, batch: Sequence[StoredInstance]) -> httpx.Response:
        boundary = uuid.uuid4().hex
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        if self.server.oauth is not None:
            headers["Authorization"] = f"Bearer {await self._bearer(self.server.oauth)}"
        try:
            return await self._client.post(
                self.server.url, content=self._body(batch, boundary), headers=headers
            )
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"{self.server}: {type(exc).__name__}: {exc}") from None

    async def _body(self, batch: Sequence[StoredInstance], boundary: str) -> AsyncIterator[bytes]:
        for instance in batch:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            async for chunk in self.retrieve.content(instance):
                yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    async def _bearer(self, oauth: OAuthClient) -> str:
        if self._token is not None and time.monotonic() < self._token_until:
            return self._token
        form = {"grant_type": "client_credentials"}
        if oauth.scope:
            form["scope"] = oauth.scope
        try:
            response = await self._client.post(
                oauth.token_url, data=form, auth=(oauth.client_id, oauth.secret)
            )
        except httpx.HTTPError as exc:
            raise DestinationUnavailable(f"token URL {oauth.token_url}: {exc}") from None
        if response.status_code != 200:
            raise DestinationUnavailable(
                f"token URL {oauth.token_url} answered HTTP {response.status_code}"
            )
        try:
            token: Any = response.json()
            self._token = str(token["access_token"])
            expires = float(token.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise DestinationUnavailable(f"token URL {oauth.token_url}: no access_token") from None
        self._token_until = time.monotonic() + max(0.0, expires - TOKEN_LEEWAY)
        return self._token


def _failed_sops(response: httpx.Response) -> dict[str, str]:
    """SOP Instance UID -> failure reason, from a STOW-RS response's Failed SOP Sequence."""
    try:
        body = orjson.loads(response.content)
        items = body[_FAILED_SOP_SEQUENCE]["Value"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}
    found = {}
    for item in items if isinstance(items, list) else ():
        try:
            uid = item[_REFERENCED_SOP_INSTANCE_UID]["Value"][0]
            reason = item.get(_FAILURE_REASON, {}).get("Value", ["?"])[0]
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
        found[str(uid)] = f"failure reason {reason}"
    return found
