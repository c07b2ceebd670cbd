#!/usr/bin/env python3
"""What the change log costs the index's write path: batches of new instances through
`Index.add_instances` (the group commit's transaction) on SQLite and PostgreSQL, with the
change-log entries written as the archive writes them, and with that step replaced by
nothing, alternating round by round so that both sides see the same machine. Prints the
median milliseconds per instance of each side, their difference and the median ratio of
neighbouring rounds.

A busy machine makes whole-server STOW figures (compare_dimse.py --jobs stow1,stow8) vary
by more than the few per cent looked for; this isolates the step that changed. Relate the
difference to a STOW's cost per instance (1000 / inst/s of compare_dimse) for its share.

    PACS_TEST_POSTGRES_URL=postgresql://pacs_test:pacs_test@127.0.0.1:5432/postgres \\
        .venv/bin/python load-tests/change_log_cost.py --rounds 8 --batches 10 --batch 8

Run from the repository root (it imports `tests.support`); databases are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import generate_uid

from app.index import postgres_changes, sqlite_changes
from app.index.postgres import PostgresIndex
from app.index.sqlite import SqliteIndex
from app.services.ports import Adding, Index, InstanceRecord
from tests.support.postgres import temporary_database
from tests.support.records import Records


async def _nothing(*_: Any) -> None:
    return None


@asynccontextmanager
async def _sqlite(folder: Path) -> Any:
    index = await SqliteIndex.open(folder / "index.sqlite")
    try:
        yield index
    finally:
        await index.close()


@asynccontextmanager
async def _postgres(folder: Path) -> Any:
    async with temporary_database() as url:
        index = await PostgresIndex.open(url)
        try:
            yield index
        finally:
            await index.close()


async def _round(index: Index, batches: list[list[InstanceRecord]]) -> float:
    """Milliseconds per instance for `batches`, one after the other (as group commit does)."""
    started = time.perf_counter()
    for batch in batches:
        results = await index.add_instances([Adding("bench", r, overwrite=False) for r in batch])
        assert not any(isinstance(r, Exception) for r in results), results
    return (time.perf_counter() - started) * 1000 / sum(len(b) for b in batches)


async def measure(
    name: str,
    opened: Callable[[Path], AbstractAsyncContextManager[Index]],
    module: Any,
    args: argparse.Namespace,
    folder: Path,
) -> None:
    maker = Records(folder / "records")
    study = generate_uid()
    # Each round its own new instances; 4 series per study, as a CT study's images come.
    rounds = [
        [
            [maker.make(study=study, seed=b * args.batch + i) for i in range(args.batch)]
            for b in range(args.batches)
        ]
        for _ in range(2 * args.rounds + 1)
    ]
    real = module.record_changes
    with_log, without_log = [], []
    async with opened(folder) as index:
        await _round(index, rounds.pop())  # warm-up: connections, caches
        for r in range(2 * args.rounds):
            logging = r % 2 == 0
            module.record_changes = real if logging else _without(real)
            (with_log if logging else without_log).append(await _round(index, rounds.pop()))
        module.record_changes = real
    on, off = statistics.median(with_log), statistics.median(without_log)
    # Pair by pair (neighbouring rounds), so that a drift of the machine's speed cancels.
    paired = statistics.median(a / b for a, b in zip(with_log, without_log, strict=True))
    print(
        f"{name}: {on:.3f} ms/instance with the change log, {off:.3f} without "
        f"(+{on - off:.3f} ms; median ratio of neighbouring rounds {paired:.3f}); "
        f"rounds with {', '.join(f'{x:.2f}' for x in with_log)}; "
        f"without {', '.join(f'{x:.2f}' for x in without_log)}"
    )


def _without(real: Callable[..., Any]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(real):
        return _nothing
    return lambda *_: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each side")
    parser.add_argument("--batches", type=int, default=10, help="batches per round")
    parser.add_argument("--batch", type=int, default=8, help="instances per batch")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    backends = {
        "sqlite": (_sqlite, sqlite_changes),
        "postgres": (_postgres, postgres_changes),
    }
    with tempfile.TemporaryDirectory(prefix="change-log-cost-") as folder:
        for name in args.backends.split(","):
            opened, module = backends[name.strip()]
            asyncio.run(measure(name, opened, module, args, Path(folder) / name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
