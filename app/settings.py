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
    # Index: sqlite (default, in the data folder) or postgresql://... (later issue).
    database: str = ""
    # Blob store: a folder (default: <data>/blobs) or s3://bucket/prefix (later issue).
    storage: str = ""
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
    def sqlite_path(self) -> Path:
        if self.database.startswith("sqlite:///"):
            return Path(self.database.removeprefix("sqlite:///"))
        return self.data / "index.sqlite"

    @property
    def blob_root(self) -> Path:
        if self.storage:
            return Path(self.storage.removeprefix("file://"))
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
