"""Numbered SQL migration files, shared by the index backends.

`migrations/<dialect>/NNNN_name.sql` files are applied in order; the version reached is
kept in the `schema_version` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS_ROOT = Path(__file__).resolve().parents[2] / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


class SchemaError(RuntimeError):
    """The database schema is not one this code can use."""


class IndexUnavailable(RuntimeError):
    """The index database cannot be reached; the message says where and why."""


def migrations(dialect: str) -> list[Migration]:
    folder = MIGRATIONS_ROOT / dialect
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise SchemaError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise SchemaError(f"migrations in {folder} are not numbered 1..n: {versions}")
    return found


def latest_version(dialect: str) -> int:
    return len(migrations(dialect))
