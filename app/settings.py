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
    # DICOM (DIMSE) listener on `host`: its port (0 turns it off) and our AE title.
    dimse_port: int = 11112
    ae_title: str = "PACS"
    # C-MOVE destinations by AE title: "NAME=host:port,OTHER=host:port".
    move_destinations: str = ""
    # Calling AE titles allowed to associate, comma-separated (empty: any).
    dimse_allowed_aes: str = ""
    # Associations served at once; more are rejected (transient, local limit exceeded).
    dimse_max_associations: int = 20
    # Audit messages (PS3.15 A.5) to a syslog collector: udp://host:514 or tls://host:6514
    # (empty: the index keeps the audit trail alone), and the CA file that signed a TLS
    # collector's certificate (empty: the system's CAs).
    audit_syslog: str = ""
    audit_syslog_ca: str = ""

    def __post_init__(self) -> None:
        # Fail at start with one clear line rather than at the first association.
        _check_ae_title(self.ae_title, "PACS_AE_TITLE / --ae-title")
        if not 0 <= self.dimse_port <= 65535:
            raise ValueError(f"PACS_DIMSE_PORT / --dimse-port: {self.dimse_port} is not a port")
        if self.dimse_max_associations < 1:
            raise ValueError("PACS_DIMSE_MAX_ASSOCIATIONS: must be at least 1")
        for ae in self.dimse_allowed_ae_titles:
            _check_ae_title(ae, "PACS_DIMSE_ALLOWED_AES / --dimse-allow")
        _ = self.move_destination_map

    @property
    def move_destination_map(self) -> dict[str, tuple[str, int]]:
        """C-MOVE destinations: AE title -> (host, port)."""
        where = "PACS_MOVE_DESTINATIONS / --move-destination"
        out: dict[str, tuple[str, int]] = {}
        for item in (part.strip() for part in self.move_destinations.split(",")):
            if not item:
                continue
            name, equals, address = item.partition("=")
            host, colon, port = address.strip().rpartition(":")
            name, host = name.strip(), host.strip().removeprefix("[").removesuffix("]")
            if not (equals and colon and host and port.strip().isdigit()):
                raise ValueError(f"{where}: expected NAME=host:port, got {item!r}")
            _check_ae_title(name, where)
            if not 0 < int(port) <= 65535:
                raise ValueError(f"{where}: {port.strip()} is not a port in {item!r}")
            out[name] = (host, int(port))
        return out

    @property
    def dimse_allowed_ae_titles(self) -> tuple[str, ...]:
        return tuple(ae.strip() for ae in self.dimse_allowed_aes.split(",") if ae.strip())

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


def _check_ae_title(value: str, where: str) -> None:
    """An AE title: 1 to 16 characters of the default repertoire, no backslash (PS3.5 6.2)."""
    text = value.strip()
    if not text or len(text) > 16 or "\\" in text or not all(" " <= c <= "~" for c in text):
        raise ValueError(
            f"{where}: {value!r} is not an AE title (1 to 16 printable ASCII characters, "
            "no backslash)"
        )


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
