"""Typed settings from `PACS_*` environment variables, overridable by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data: Path = Path("./data")
    # Index: SQLite in the data folder (default), sqlite:///path or postgresql://...
    database_url: str = ""
    # Connections in the PostgreSQL pool of each server process.
    database_pool_size: int = 10
    # Blob store: a folder (default: <data>/blobs), file:///path or s3://bucket/prefix.
    storage_url: str = ""
    # S3: endpoint of an S3-compatible store (MinIO, Ceph, moto); empty for AWS. Region and
    # credentials fall back to the standard AWS variables and credential chain.
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # Objects larger than this are uploaded in parts of this size.
    s3_part_size: int = 16 * 1024 * 1024
    # Replace a stored instance when a different object arrives with its SOP Instance UID.
    overwrite: bool = False
    qido_default_limit: int = 100
    qido_max_limit: int = 1000
    # Largest STOW request body accepted, in bytes (0: no limit). Bodies stream to disk.
    max_request_bytes: int = 0
    # Comma-separated origins allowed by CORS; "*" allows any.
    cors_origins: str = "*"
    log_level: str = "info"

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://"))

    @property
    def uses_s3(self) -> bool:
        return self.storage_url.startswith("s3://")

    @property
    def sqlite_path(self) -> Path:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data / "index.sqlite"

    @property
    def blob_root(self) -> Path:
        if self.storage_url:
            return Path(self.storage_url.removeprefix("file://"))
        return self.data / "blobs"

    @property
    def spool_dir(self) -> Path:
        # Same file system as the folder blob store, so a stored file is renamed into place.
        return self.data / "tmp"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then PACS_<NAME> variables, then non-None keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"PACS_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _convert(f.name, raw, f.default)
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def _convert(name: str, raw: str, default: object) -> Any:
    if isinstance(default, bool):
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"PACS_{name.upper()}: expected true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"PACS_{name.upper()}: expected an integer, got {raw!r}") from None
    if isinstance(default, Path):
        return Path(raw)
    return raw
