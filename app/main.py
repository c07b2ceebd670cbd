"""Composition root: settings -> backends -> services -> protocol servers."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit, urlunsplit

from starlette.types import ASGIApp

from app.auth.tokens import IssuerUnavailable, TokenVerifier
from app.broker.kafka import KafkaPublisher, KafkaSecurity
from app.broker.webhooks import WebhookRegistry
from app.dimse.bridge import ConnectionLimits, DimseConfig
from app.dimse.server import serve_dimse
from app.forwarding.dicom import DicomSender
from app.forwarding.stow import StowSender
from app.index.migrations import IndexUnavailable, SchemaError
from app.index.postgres import PostgresIndex
from app.index.sqlite import SqliteIndex
from app.search.indexer import SearchIndexer
from app.services.archive import Archive
from app.services.delete import retry_periodically
from app.services.entry_attributes import entry_datasets
from app.services.forward_rule_store import RuleBook
from app.services.forward_rules import DicomNode, Rule, load_rules
from app.services.forwarding import Backoff, ForwardingRouter, ForwardWorker, Sender
from app.services.orphans import sweep_periodically
from app.services.outbox import Outbox, node_owner
from app.services.ports import BlobStore, ChangeConsumer, Index
from app.services.stable import announce_periodically
from app.settings import Settings, kafka_brokers
from app.storage.filesystem import FolderBlobStore
from app.storage.s3 import S3BlobStore, StorageUnavailable
from app.tls import dicom_client_context, dicom_server_context
from app.web.app import create_app
from app.web.proxies import LinkSettings, ProxyHeaders

log = logging.getLogger("pacs")


class ConfigurationError(RuntimeError):
    pass


# Errors at start whose message is all the operator needs.
STARTUP_ERRORS: tuple[type[Exception], ...] = (
    ConfigurationError,
    IndexUnavailable,
    SchemaError,
    StorageUnavailable,
    IssuerUnavailable,
    OSError,
    ValueError,
)


async def open_index(settings: Settings) -> Index:
    if settings.uses_postgres:
        return await PostgresIndex.open(
            settings.database_url, pool_size=settings.database_pool_size
        )
    if settings.database_url and not settings.database_url.startswith("sqlite:///"):
        raise ConfigurationError(
            f"unsupported database URL {settings.database_url!r}: "
            "use sqlite:///path or postgresql://..."
        )
    return await SqliteIndex.open(settings.sqlite_path)


async def open_blobs(settings: Settings) -> BlobStore:
    if settings.uses_s3:
        return await S3BlobStore.open(
            settings.storage_url,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
            part_size=settings.s3_part_size,
        )
    if "://" in settings.storage_url and not settings.storage_url.startswith("file://"):
        raise ConfigurationError(
            f"unsupported storage URL {settings.storage_url!r}: use a folder, file:///path "
            "or s3://bucket/prefix"
        )
    return FolderBlobStore(settings.blob_root)


@asynccontextmanager
async def open_archive(settings: Settings, *, discard_spool: bool = True) -> AsyncIterator[Archive]:
    """The archive on its backends; with `discard_spool`, unfinished uploads of a previous
    process are removed first (only where no other process of this node is receiving)."""
    index = await open_index(settings)
    try:
        blobs = await open_blobs(settings)
    except BaseException:
        await index.close()
        raise
    archive = Archive.build(settings, index, blobs)
    if discard_spool and (stale := archive.store.discard_stale_spool()):
        log.warning("removed %d unfinished uploads left in %s", stale, settings.spool_dir)
    try:
        yield archive
    finally:
        await archive.close()


@asynccontextmanager
async def _sweeping(archive: Archive) -> AsyncIterator[None]:
    """The orphan sweep, the retry of failed blob deletions and the announcement of stable
    studies in the background while the archive serves: readiness never waits for a
    listing of the whole store."""
    settings = archive.settings
    task = asyncio.create_task(
        sweep_periodically(
            archive.index,
            archive.blobs,
            grace=settings.orphan_grace,
            interval=settings.orphan_sweep_interval,
        ),
        name="orphan-sweep",
    )
    # Blob deletions that failed after a DELETE committed (app/services/delete.py).
    retry = asyncio.create_task(
        retry_periodically(
            archive.index, archive.blobs, interval=settings.blob_delete_retry_interval
        ),
        name="blob-delete-retry",
    )
    # Series and studies that went quiet: announced by one node each (app/services/stable.py).
    stable = asyncio.create_task(
        announce_periodically(
            archive.index,
            quiet=settings.stable_after,
            interval=settings.stable_scan_ms / 1000,
            changed=archive.changefeed.signal.changed,
        ),
        name="stable-announce",
    )
    try:
        yield
    finally:
        for running in (task, retry, stable):
            running.cancel()
            with suppress(asyncio.CancelledError):
                await running


def forwarding_rules(settings: Settings) -> list[Rule]:
    """The forwarding rules of PACS_FORWARDING_RULES (checked: ValueError naming the rule
    and field)."""
    return load_rules(settings.forwarding_rules) if settings.forwarding_rules else []


def rule_book(settings: Settings, index: Index, rules: list[Rule]) -> RuleBook:
    """The file's rules and those of the admin API, kept in the index."""
    return RuleBook(index, rules, refresh=settings.forward_rules_refresh_ms / 1000)


def change_consumers(settings: Settings, index: Index | None = None) -> list[ChangeConsumer]:
    """The consumers of the change log that settings turn on (without `index`, only checked:
    the forwarding router needs it)."""
    consumers: list[ChangeConsumer] = []
    rules = forwarding_rules(settings)
    if index is not None:  # also without a file: rules may be created through the admin API
        consumers.append(ForwardingRouter(index, rule_book(settings, index, rules)))
    if brokers := kafka_brokers(settings.kafka_bootstrap):
        security = KafkaSecurity(
            settings.kafka_security_protocol,
            settings.kafka_sasl_mechanism,
            settings.kafka_username,
            settings.kafka_password,
            settings.kafka_ca,
        )
        consumers.append(KafkaPublisher(brokers, settings.kafka_topic, security=security))
    if settings.search_url:
        consumers.append(SearchIndexer(settings.search_url, settings.search_index))
    return consumers


@asynccontextmanager
async def _delivering(archive: Archive) -> AsyncIterator[None]:
    """The outbox in the background: one per node (the first process), several nodes share
    the work by their cursors' leases. Its consumers: those settings turn on, and a webhook
    consumer per active subscription, kept in step with the index by the registry."""
    settings = archive.settings
    consumers = change_consumers(settings, archive.index)
    for consumer in consumers:
        if isinstance(consumer, ForwardingRouter):
            await consumer.start()  # before the outbox creates its cursors at 0
    if settings.log_level.lower() != "debug":
        # aiokafka logs each failed reconnection at ERROR, ten a second while a broker is
        # down; the outbox logs each failed attempt once, with its backoff.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        # httpx logs each request's URL at INFO: a webhook's may carry a token.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        # The Elasticsearch client logs every request at INFO and each failed one with its
        # traceback at WARNING; the outbox logs each failed delivery once.
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    outbox = Outbox(
        archive.index,
        consumers,
        batch=settings.outbox_batch,
        lease=settings.outbox_lease,
        poll_interval=settings.outbox_poll_ms / 1000,
        retry_max=settings.outbox_retry_max,
    )
    # A delivery must end before the outbox cuts it off (half the lease): a POST takes at
    # most a third of the lease, and none starts later than halfway through what is left
    # (margin for the index writes that follow).
    timeout = min(settings.webhook_timeout, settings.outbox_lease / 3)
    registry = WebhookRegistry(
        archive.index,
        outbox,
        consumers,
        datasets=functools.partial(entry_datasets, archive.index),
        timeout=timeout,
        max_attempts=settings.webhook_max_attempts,
        budget=(settings.outbox_lease / 2 - timeout) / 2,
        refresh=settings.webhook_refresh_ms / 1000,
    )
    if consumers:
        log.info("events: delivering the change log to %s", ", ".join(c.name for c in consumers))
    tasks = [
        asyncio.create_task(outbox.run(), name="outbox"),
        asyncio.create_task(registry.run(), name="webhooks"),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        await outbox.close()
        await registry.close()


def _sender(archive: Archive, rule: Rule) -> Sender:
    settings = archive.settings
    if isinstance(rule.destination, DicomNode):
        return DicomSender(
            rule.destination,
            archive.delivery,
            calling_ae=settings.ae_title.strip(),
            timeout=settings.forward_timeout,
        )
    return StowSender(rule.destination, archive.retrieve, timeout=settings.forward_timeout)


@asynccontextmanager
async def _forwarding(archive: Archive) -> AsyncIterator[None]:
    """The forwarding worker in the background: one per node (the first process); nodes
    share the jobs through the index's queue. Its rules: the file's and the admin API's."""
    settings = archive.settings
    rules = forwarding_rules(settings)
    worker = ForwardWorker(
        archive.index,
        lambda rule: _sender(archive, rule),
        book=rule_book(settings, archive.index, rules),
        owner=node_owner(),
        lease=settings.forward_lease,
        poll_interval=settings.forward_poll_ms / 1000,
        backoff=Backoff(
            settings.forward_max_attempts, settings.forward_retry_min, settings.forward_retry_max
        ),
    )
    if rules:
        log.info("forwarding: %d rules (%s)", len(rules), ", ".join(r.name for r in rules))
    # Several loops on one worker: each claims its own jobs from the index.
    tasks = [
        asyncio.create_task(worker.run(), name=f"forwarding-{n}")
        for n in range(settings.forward_concurrency)
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()


def _announce_backends(settings: Settings) -> None:
    """Say where data lives; once, by the serving process (not by the start-up check)."""
    if settings.uses_postgres:
        log.info("index: PostgreSQL at %s", _without_password(settings.database_url))
    else:
        log.info("index: SQLite at %s", settings.sqlite_path.resolve())
    if settings.uses_s3:
        endpoint = settings.s3_endpoint_url or "the default AWS endpoint"
        log.info("blobs: %s on %s", settings.storage_url, endpoint)
    else:
        log.info("blobs: folder %s", settings.blob_root.resolve())


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def run_archive(settings: Settings, *, first: bool = True) -> AsyncIterator[Archive]:
    """The open archive with its DICOM (DIMSE) listener, for the lifetime of `pacs serve`.
    Only the `first` of several HTTP worker processes (app/workers.py) runs DIMSE, the
    orphan sweep and the outbox; with several, unfinished uploads were removed by the
    start-up check, before any worker started."""
    if not first:
        async with open_archive(settings, discard_spool=False) as archive:
            yield archive
        return
    discard = settings.http_worker_count == 1
    async with (
        open_archive(settings, discard_spool=discard) as archive,
        _sweeping(archive),
        _delivering(archive),
        _forwarding(archive),
    ):
        _announce_backends(settings)
        if not (settings.dimse_port or settings.dimse_tls_port):
            log.info("DICOM (DIMSE) is off (--dimse-port 0)")
            yield archive
            return
        config = dimse_config(settings)
        if config.known_callers_only and not config.required_calling_aes:
            # An empty list of required AEs reads as "anyone": stay closed.
            log.warning(
                "DICOM (DIMSE) is off: sign-in is on and no calling AE title is known; "
                "list them in PACS_DIMSE_AE_POLICY or PACS_DIMSE_ALLOWED_AES"
            )
            yield archive
            return
        if settings.log_level.lower() != "debug":
            # pynetdicom's PDU classes, which negotiation uses, log what they decode at INFO;
            # our own lines summarise associations.
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        async with serve_dimse(archive, config):
            yield archive


def dimse_config(settings: Settings) -> DimseConfig:
    cert, key = settings.dimse_tls_identity
    destinations = settings.move_destination_map
    return DimseConfig(
        host=settings.host,
        port=settings.dimse_port,
        ae_title=settings.ae_title.strip(),
        move_destinations=destinations,
        allowed_aes=settings.dimse_allowed_ae_titles,
        ae_policies=settings.dimse_ae_policies,
        known_callers_only=bool(settings.oidc_issuer),
        max_associations=settings.dimse_max_associations,
        limits=ConnectionLimits(
            request_timeout=settings.dimse_request_timeout,
            per_address=settings.dimse_max_connections_per_address,
            total=settings.dimse_max_connections,
            backlog=settings.listen_backlog,
        ),
        idle_timeout=settings.dimse_idle_timeout,
        tls_port=settings.dimse_tls_port,
        tls_context=(
            dicom_server_context(cert, key, settings.dimse_tls_ca)
            if settings.dimse_tls_port
            else None
        ),
        tls_client_certificates=bool(settings.dimse_tls_ca),
        tls_move_context=(
            dicom_client_context(cert, key, settings.dimse_tls_ca)
            if any(d.tls for d in destinations.values())
            else None
        ),
    )


async def check_issuer(settings: Settings) -> None:
    """Fetch the issuer's discovery document and keys once, so that a wrong issuer is one
    line at start rather than a 503 on every request."""
    if (config := settings.oidc_config) is not None:
        verifier = TokenVerifier(config)
        try:
            await verifier.load()
        finally:
            await verifier.close()


def build_app(settings: Settings, *, first: bool = True) -> ASGIApp:
    links = LinkSettings(
        settings.trusted_proxy_networks,
        settings.public_base_url,
        ProxyHeaders(settings.trusted_proxy_header_family),
        settings.trusted_x_forwarded_fields,
    )
    config = settings.oidc_config
    return create_app(
        lambda: run_archive(settings, first=first),
        cors_origins=settings.cors_origins,
        verifier=TokenVerifier(config) if config else None,
        links=links,
    )
