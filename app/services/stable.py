"""Stable studies and series (issue 12): a study or series is stable once no instance has
arrived in it for a quiet time (PACS_STABLE_AFTER). Then the change log gets exactly one
`series.stable` per series and one `study.stable` per study, with the counts at that
moment, and again after the next quiet period should more instances arrive.

The index keeps when each study and series last received an instance (written by the ingest
transaction) and claims, announces and forgets the quiet ones in one transaction
(`Index.announce_stable`); this module only asks it periodically. Every node asks (its
first worker process): whichever claims a study announces it, the others skip it, so a
node that stops leaves nothing unannounced. A delete is not an arrival: it does not
announce a study again; one deleted whole is not announced at all, and one partly deleted
during its quiet period is announced with what remains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from app.services.ports import Index

log = logging.getLogger(__name__)

# Series and studies announced per transaction: one round stays short however many went
# quiet together (a migration from another archive); the next ones follow at once.
BATCH = 100


async def announce_stable(
    index: Index,
    quiet: float,
    *,
    changed: Callable[[str], None] | None = None,
    batch: int = BATCH,
) -> int:
    """Announce every series and study quiet for `quiet` seconds; the entries written.
    `changed` wakes this process's change-feed readers of a tenant whose log grew."""
    written = 0
    while True:
        found = await index.announce_stable(quiet, batch)
        if changed is not None:
            for tenant in found:
                changed(tenant)
        done = sum(found.values())
        written += done
        if done < batch:
            return written


async def announce_periodically(
    index: Index,
    *,
    quiet: float,
    interval: float,
    changed: Callable[[str], None] | None = None,
) -> None:
    """Announce what went quiet every `interval` seconds, until cancelled. A failed round
    is logged and tried again: it never stops the server, and nothing is lost (what was
    not announced stays waiting in the index)."""
    while True:
        try:
            written = await announce_stable(index, quiet, changed=changed)
        except Exception as exc:  # the index's: the next round tries again
            log.warning("announcing stable studies failed: %s", type(exc).__name__)
        else:
            if written:
                log.debug("announced %d stable series and studies", written)
        await asyncio.sleep(interval)
