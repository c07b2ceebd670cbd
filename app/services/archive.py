"""The archive's services bundled for the protocol layers."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from app.audit.message import AuditSource
from app.audit.syslog import SyslogSender
from app.services.audit import AuditService
from app.services.changefeed import ChangeFeed, ChangeSignal
from app.services.delete import DeleteService
from app.services.delivery import Delivery
from app.services.forward_rule_store import ForwardRuleService
from app.services.forward_rules import load_rules
from app.services.imaging import ImagingService
from app.services.plan import Planner
from app.services.ports import BlobStore, Index
from app.services.retrieve import RetrieveService
from app.services.search import SearchService
from app.services.store import StoreService
from app.services.webhooks import WebhookService
from app.settings import Settings


@dataclass
class Archive:
    settings: Settings
    index: Index
    blobs: BlobStore
    store: StoreService
    search: SearchService
    retrieve: RetrieveService
    imaging: ImagingService
    audit: AuditService
    delivery: Delivery
    plan: Planner
    changefeed: ChangeFeed
    delete: DeleteService
    webhooks: WebhookService
    forward_rules: ForwardRuleService

    @classmethod
    def build(cls, settings: Settings, index: Index, blobs: BlobStore) -> Archive:
        retrieve = RetrieveService(index, blobs)
        host = socket.gethostname()
        source = AuditSource(f"pacs@{host}", host, ae_title=settings.ae_title.strip())
        sender = SyslogSender.from_settings(settings.audit_syslog, settings.audit_syslog_ca, source)
        audit = AuditService(index, sender)
        signal = ChangeSignal()
        imaging = ImagingService(
            retrieve,
            max_queued=settings.max_queued_imaging,
            thumbnail_cache_bytes=settings.thumbnail_cache_bytes,
        )
        plan = Planner(retrieve, imaging)
        return cls(
            settings=settings,
            index=index,
            blobs=blobs,
            store=StoreService(
                index,
                blobs,
                settings.spool_dir,
                audit,
                overwrite=settings.overwrite,
                allow_patient_mismatch=settings.patient_mismatch == "warn",
                index_batch=settings.index_batch,
                index_linger=settings.index_batch_wait_ms / 1000,
                changed=signal.changed,
            ),
            search=SearchService(index),
            retrieve=retrieve,
            imaging=imaging,
            audit=audit,
            delivery=Delivery(plan, settings.spool_dir),
            plan=plan,
            changefeed=ChangeFeed(index, signal, poll_interval=settings.changefeed_poll_ms / 1000),
            delete=DeleteService(index, blobs, audit, changed=signal.changed),
            webhooks=WebhookService(index),
            forward_rules=ForwardRuleService(
                index, load_rules(settings.forwarding_rules) if settings.forwarding_rules else []
            ),
        )

    async def close(self) -> None:
        await self.store.close()  # first: a running store still writes blobs and index rows
        await self.audit.close()  # before the index: queued events are written first
        await self.index.close()
        await self.blobs.close()
