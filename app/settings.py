"""Typed settings from `PACS_*` environment variables, overridable by CLI flags."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from app.auth.ae_policy import AePolicies, PolicyError, parse_ae_policy
from app.auth.principal import DEFAULT_TENANT, UnknownTenant, check_tenant
from app.auth.tokens import OidcConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The values of PACS_TRUSTED_PROXY_HEADERS, as app.web.proxies.ProxyHeaders names them: the
# settings, which app.dimse imports too, stay clear of the web layer.
PROXY_HEADER_FAMILIES = ("x-forwarded", "forwarded")
# The X-Forwarded-* headers a proxy may set ("x-forwarded" names them all).
X_FORWARDED_FIELDS = ("for", "proto", "host", "prefix")


class MoveDestination(NamedTuple):
    host: str
    port: int
    # Associations to it use DICOM TLS (`NAME=host:port:tls`).
    tls: bool = False


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
    # Orphan sweep (app/services/orphans.py), at start and then every interval seconds (0:
    # at start only): blobs no index row refers to go to the store's quarantine, if written
    # more than `orphan_grace` seconds ago. The grace must exceed the longest time between
    # a blob's write and its index commit on any node sharing the index (an S3 multipart
    # upload is dated from its start): younger blobs may be another node's upload in flight.
    orphan_grace: int = 3600
    orphan_sweep_interval: int = 6 * 3600
    # Seconds between retries of blob deletions that failed after a DELETE committed (the
    # store down or refusing; app/services/delete.py): each blob is retried until it is gone.
    blob_delete_retry_interval: int = 60
    # Stable studies (app/services/stable.py): a series or study in which no instance has
    # arrived for this many seconds is announced once (series.stable, study.stable in the
    # change feed); every node looks for such ones every `stable_scan_ms` milliseconds.
    stable_after: int = 60
    stable_scan_ms: int = 5000
    # Replace a stored instance when a different object arrives with its SOP Instance UID.
    overwrite: bool = False
    # An instance whose PatientID / IssuerOfPatientID differs from the study it joins:
    # "refuse" it (STOW failure reason C40A, C-STORE status C40A), or "warn": store it
    # into the study, which keeps its patient, with a warning (B000) and an audit note.
    patient_mismatch: str = "refuse"
    qido_default_limit: int = 100
    qido_max_limit: int = 1000
    # Change feed (GET /dicomweb/changefeed): entries per page without `limit`, the largest
    # `limit` (with metadata an entry is an instance's whole DICOM JSON), the longest long
    # poll (`wait`, seconds; each waiting request holds a connection), and how often a
    # waiting request looks at the index for changes made by other processes (ms).
    changefeed_default_limit: int = 10
    changefeed_max_limit: int = 100
    changefeed_max_wait: int = 30
    changefeed_poll_ms: int = 500
    # Outbox (app/services/outbox.py): the change log delivered in the background to its
    # consumers (the Kafka publisher), at least once. Entries per delivery; how often it
    # looks for new entries (ms); how long a node's claim on a consumer's cursor lasts
    # (seconds; a node killed while delivering delays that consumer by up to this, and a
    # delivery is cut off at half of it); the longest pause between attempts after failures
    # (seconds; they start at 1 and double).
    outbox_batch: int = 500
    outbox_poll_ms: int = 500
    outbox_lease: int = 30
    outbox_retry_max: int = 60
    # Forwarding (app/services/forwarding.py): the JSON file of forwarding rules (empty:
    # none; app/services/forward_rules.py says its form), checked at start. Jobs: attempts
    # before a job fails for good (connection errors; a refusal fails it at once), the first
    # pause between attempts (seconds; it doubles) and the longest, how long a node's claim
    # on a running job lasts (seconds; renewed while it runs, a killed node's job is taken
    # again after it), how often idle workers look for due jobs (ms) and how long a peer has
    # to answer one instance (seconds).
    forwarding_rules: str = ""
    forward_max_attempts: int = 8
    forward_retry_min: int = 5
    forward_retry_max: int = 600
    forward_lease: int = 60
    forward_poll_ms: int = 1000
    forward_timeout: int = 60
    # Jobs each node runs at once: a destination that does not answer holds one of them.
    forward_concurrency: int = 4
    # How often a node reads again the rules of the admin API (ms): one created or deleted
    # through another node applies here after at most this.
    forward_rules_refresh_ms: int = 2000
    # Webhooks (app/broker/webhooks.py): the longest a POST to a receiver may take (seconds,
    # connecting included; at most a third of outbox_lease, whose half cuts a delivery
    # off); attempts at an entry that keeps failing (5xx, 408, 429, no answer) before it is
    # dead-lettered (the pauses between them as the outbox's); how often a node reloads the
    # subscriptions (ms: one created on another node is served after at most this).
    webhook_timeout: int = 10
    webhook_max_attempts: int = 8
    webhook_refresh_ms: int = 2000
    # Kafka (app/broker/kafka.py): the brokers to publish the change log to, host:port[,...]
    # (empty: no publishing), and the topic (a new topic is published from the beginning).
    kafka_bootstrap: str = ""
    kafka_topic: str = "pacs.changes"
    # How to reach them: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; with SASL the mechanism
    # (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), user name and password; with TLS the CA file that
    # signed the brokers' certificates (empty: the system's CAs).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_username: str = ""
    kafka_password: str = ""
    kafka_ca: str = ""
    # Search (app/search/): the Elasticsearch node or cluster to index every attribute in,
    # http(s)://[user:password@]host:port (empty: no search index), and the prefix of its
    # indices and index template (<prefix>-studies, -series, -instances).
    search_url: str = ""
    search_index: str = "pacs"
    # Largest image /rendered, /thumbnail and WADO-URI may produce, in pixels (vw x vh,
    # rows x columns; an animated GIF's frames together): rendering holds it whole in memory.
    max_rendered_pixels: int = 4096 * 4096
    # Most frame numbers in one frames/ or rendered frames/ request (duplicates are refused,
    # so a request names each frame once); a whole cine is the instance's own resource.
    max_frames_per_request: int = 1000
    # Pixel work (rendering, thumbnails, transcoding) runs one piece per core; this many may
    # wait for a core before a new request is refused with 503 and Retry-After.
    max_queued_imaging: int = 32
    # Encoded thumbnails kept in memory for viewers that ask again (0: none kept), least
    # recently used dropped first; a 128-pixel JPEG is about 4 KiB.
    thumbnail_cache_bytes: int = 16 * 1024 * 1024
    # Largest STOW request body accepted, in bytes (0: no limit). Bodies stream to disk.
    max_request_bytes: int = 0
    # Most body parts in one multipart STOW request (0: no limit): each part is a store
    # attempt and a response item, so a body of empty parts would otherwise cost unbounded
    # work and response size. The rest of a longer body is not read.
    max_stow_parts: int = 10000
    # Most instances indexed in one transaction when concurrent ingests share a commit
    # (app/services/group_commit.py): bounds how long one batch holds the index's write
    # lock and how many answers one failed commit fails.
    index_batch: int = 64
    # Milliseconds a batch may wait for instances already on their way to the index (their
    # blob being stored) before it is committed: fewer, larger commits when ingests run at
    # once (at 8 STOW requests in flight, 60-66 commits per 480 instances instead of
    # 95-120). A lone instance never waits. 0: commit at once.
    index_batch_wait_ms: int = 5
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
    # Per calling AE title: its services and tenant, "AE=store,echo@tenant;AE2=all"
    # (app/auth/ae_policy.py). AEs not listed: every service, default tenant.
    dimse_ae_policy: str = ""
    # Associations served at once; more are rejected (transient, local limit exceeded).
    # Only associations whose A-ASSOCIATE-RQ is complete count (app/dimse/server.py).
    dimse_max_associations: int = 20
    # ARTIM (PS3.8 9.1.5), seconds: a connection must start its A-ASSOCIATE-RQ within it, and
    # complete it within it again; otherwise it is closed.
    dimse_request_timeout: int = 10
    # Seconds an established association may stay silent before it is aborted.
    dimse_idle_timeout: int = 60
    # Open DICOM connections (associations and connections not yet associated) from one
    # address, and from everyone; more are closed at once. A modality opens a few at a time.
    dimse_max_connections_per_address: int = 10
    dimse_max_connections: int = 500
    # HTTP, seconds: to send a request's headers (from the connection or the request's first
    # byte), between body bytes while the app reads the body (then 408), and idle between
    # requests on a keep-alive connection.
    http_header_timeout: int = 10
    http_body_timeout: int = 30
    http_keepalive_timeout: int = 15
    # Open HTTP connections from one address (trusted proxies exempt: many users sit behind
    # them), and from everyone; more are closed at once. A browser opens about 6 per host.
    http_max_connections_per_address: int = 256
    http_max_connections: int = 10000
    # Listen backlog of the HTTP and DIMSE ports (the kernel caps it at net.core.somaxconn).
    listen_backlog: int = 2048
    # HTTP worker processes sharing the HTTP port (app/workers.py): one Python process uses
    # one core at a time. 0: one per core this process may run on. DIMSE and background
    # jobs run in the first only; the connection budgets above are divided among them.
    http_workers: int = 0
    # Stored files sent with sendfile (zero-copy) instead of read and written: about half
    # the server CPU per byte, but over loopback to curl 20-35% fewer MB/s for one
    # client at a time (the receiver copies out of page-cache fragments), the same for 8.
    http_sendfile: bool = False
    # HTTPS on `port`: PEM certificate (chain) and unencrypted key; with a CA, HTTP clients
    # must present a certificate it signed.
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # DICOM TLS (PS3.15 Annex B) on a port of its own beside the plain DIMSE port (0: off),
    # with its certificate and key (default: the HTTPS ones); with a CA, calling AEs must
    # present a certificate it signed, and C-MOVE destinations marked tls are checked
    # against it.
    dimse_tls_port: int = 0
    dimse_tls_cert: str = ""
    dimse_tls_key: str = ""
    dimse_tls_ca: str = ""
    # Reverse proxies whose Forwarded / X-Forwarded-* headers are believed: IP addresses or
    # networks, comma-separated (empty: none).
    trusted_proxies: str = ""
    # Which headers they set, comma-separated: forwarded (RFC 7239), or X-Forwarded-For,
    # -Proto, -Host, -Prefix (x-forwarded: all four). Only those are read: a proxy passes the
    # others through as the client wrote them (HAProxy's `option forwardfor` and nginx's usual
    # configuration set For and Proto, not Host or Prefix).
    trusted_proxy_headers: str = "x-forwarded-for,x-forwarded-proto"
    # What every generated link starts with, e.g. https://pacs.example.org/imaging; empty:
    # from the request (Host header, or the headers of a trusted proxy).
    public_url: str = ""
    # Sign-in: the OpenID Connect issuer whose bearer tokens are required (empty: no
    # sign-in), and the audience its access tokens must name.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    # Signature algorithms accepted, comma-separated; HS* only with a shared secret.
    oidc_algorithms: str = "RS256,ES256,PS256"
    oidc_hmac_secret: str = ""
    # Where permissions and tenants are in a token: dotted claim paths (e.g. scope, roles,
    # realm_access.roles); a permission P is granted by the value <prefix>P.
    oidc_permissions_claim: str = "scope"
    oidc_permission_prefix: str = "pacs:"
    oidc_tenants_claim: str = "tenants"
    # Tenants of a token without that claim, comma-separated (empty: none).
    oidc_tenants_when_absent: str = DEFAULT_TENANT
    # Clock difference tolerated when checking exp, nbf and iat.
    oidc_leeway_seconds: int = 30
    # Serve everyone without sign-in on an address other than loopback.
    allow_anonymous: bool = False
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
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"PACS_{name.upper()}: must be at least 1")
        if self.http_workers < 0:
            raise ValueError("PACS_HTTP_WORKERS: must be 0 (one per core) or more")
        if self.orphan_grace < 0 or self.orphan_sweep_interval < 0:
            raise ValueError("PACS_ORPHAN_GRACE and PACS_ORPHAN_SWEEP_INTERVAL: 0 or more seconds")
        if not 0 <= self.index_batch_wait_ms <= 1000:
            raise ValueError("PACS_INDEX_BATCH_WAIT_MS: must be 0 (no waiting) to 1000")
        if self.max_stow_parts < 0:
            raise ValueError("PACS_MAX_STOW_PARTS: must be 0 (no limit) or more")
        if self.patient_mismatch not in ("refuse", "warn"):
            raise ValueError(
                f"PACS_PATIENT_MISMATCH: {self.patient_mismatch!r} is neither refuse nor warn"
            )
        if not 1 <= self.changefeed_default_limit <= self.changefeed_max_limit:
            raise ValueError(
                "PACS_CHANGEFEED_DEFAULT_LIMIT: must be at least 1 and at most "
                f"PACS_CHANGEFEED_MAX_LIMIT ({self.changefeed_max_limit})"
            )
        if self.changefeed_max_wait < 0:
            raise ValueError("PACS_CHANGEFEED_MAX_WAIT: must be 0 (no long polling) or more")
        _check_kafka(self.kafka_bootstrap, self.kafka_topic)
        self._check_kafka_security()
        _check_search(self.search_url, self.search_index)
        if self.max_rendered_pixels < 1:
            raise ValueError("PACS_MAX_RENDERED_PIXELS: must be at least 1")
        if self.max_frames_per_request < 1:
            raise ValueError("PACS_MAX_FRAMES_PER_REQUEST: must be at least 1")
        if self.max_queued_imaging < 0:
            raise ValueError("PACS_MAX_QUEUED_IMAGING: must be 0 (no waiting) or more")
        if self.thumbnail_cache_bytes < 0:
            raise ValueError("PACS_THUMBNAIL_CACHE_BYTES: must be 0 (no cache) or more")
        for ae in self.dimse_allowed_ae_titles:
            _check_ae_title(ae, "PACS_DIMSE_ALLOWED_AES / --dimse-allow")
        _ = self.move_destination_map
        self._check_tls()
        _ = self.dimse_ae_policies
        _ = self.trusted_proxy_networks
        _ = self.trusted_proxy_header_family
        _ = self.public_base_url
        if self.oidc_issuer:
            _ = self.oidc_config
        elif not (self.allow_anonymous or _is_loopback(self.host)):
            raise ValueError(
                f"refusing to serve {self.host} without sign-in: set PACS_OIDC_ISSUER and "
                "PACS_OIDC_AUDIENCE to require bearer tokens, or PACS_ALLOW_ANONYMOUS=true "
                "(--allow-anonymous) to let anyone who can reach it read and store everything"
            )

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(
                f"PACS_KAFKA_SECURITY_PROTOCOL: {protocol!r} is not one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}"
            )
        if not protocol.startswith("SASL_"):
            return
        if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise ValueError(
                f"PACS_KAFKA_SASL_MECHANISM: {self.kafka_sasl_mechanism!r} is not one of "
                f"{', '.join(KAFKA_SASL_MECHANISMS)}"
            )
        if not (self.kafka_username and self.kafka_password):
            raise ValueError(
                f"PACS_KAFKA_USERNAME and PACS_KAFKA_PASSWORD: both are needed with {protocol}"
            )

    @property
    def http_worker_count(self) -> int:
        """HTTP worker processes to run (`http_workers`, 0 resolved to the usable cores)."""
        return self.http_workers or len(os.sched_getaffinity(0))

    @property
    def oidc_config(self) -> OidcConfig | None:
        """Sign-in settings, or None when the archive runs without sign-in."""
        if not self.oidc_issuer:
            return None
        algorithms = frozenset(a.strip() for a in self.oidc_algorithms.split(",") if a.strip())
        return OidcConfig(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience,
            algorithms=algorithms,
            permissions_claim=self.oidc_permissions_claim,
            permission_prefix=self.oidc_permission_prefix,
            tenants_claim=self.oidc_tenants_claim,
            hmac_secret=self.oidc_hmac_secret,
            leeway_seconds=self.oidc_leeway_seconds,
            tenants_when_absent=frozenset(
                _tenant_setting(t.strip(), "PACS_OIDC_TENANTS_WHEN_ABSENT")
                for t in self.oidc_tenants_when_absent.split(",")
                if t.strip()
            ),
        )

    def _check_tls(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("PACS_TLS_CERT and PACS_TLS_KEY (--tls-cert, --tls-key) go together")
        if self.tls_ca and not self.tls_cert:
            raise ValueError("PACS_TLS_CA / --tls-ca needs PACS_TLS_CERT and PACS_TLS_KEY")
        if bool(self.dimse_tls_cert) != bool(self.dimse_tls_key):
            raise ValueError("PACS_DIMSE_TLS_CERT and PACS_DIMSE_TLS_KEY go together")
        if not 0 <= self.dimse_tls_port <= 65535:
            raise ValueError(
                f"PACS_DIMSE_TLS_PORT / --dimse-tls-port: {self.dimse_tls_port} is not a port"
            )
        if self.dimse_tls_port and self.dimse_tls_port == self.dimse_port:
            raise ValueError(
                "PACS_DIMSE_TLS_PORT must differ from PACS_DIMSE_PORT (set PACS_DIMSE_PORT=0 "
                "for DICOM TLS only)"
            )
        if self.dimse_tls_port and not self.dimse_tls_identity[0]:
            raise ValueError(
                "PACS_DIMSE_TLS_PORT / --dimse-tls-port needs a certificate and key: "
                "PACS_DIMSE_TLS_CERT and PACS_DIMSE_TLS_KEY, or PACS_TLS_CERT and PACS_TLS_KEY"
            )

    @property
    def uses_https(self) -> bool:
        return bool(self.tls_cert)

    @property
    def dimse_tls_identity(self) -> tuple[str, str]:
        """Certificate and key of DICOM TLS: its own, else those of HTTPS (or empty)."""
        if self.dimse_tls_cert:
            return self.dimse_tls_cert, self.dimse_tls_key
        return self.tls_cert, self.tls_key

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        out: list[IPNetwork] = []
        for item in (part.strip() for part in self.trusted_proxies.split(",")):
            if not item:
                continue
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(
                    f"PACS_TRUSTED_PROXIES / --trusted-proxy: {item!r} is not an IP address "
                    "or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
                ) from None
        return tuple(out)

    @property
    def trusted_proxy_header_family(self) -> str:
        """x-forwarded or forwarded (app.web.proxies.ProxyHeaders)."""
        return PROXY_HEADER_FAMILIES[1] if self._proxy_headers == ("forwarded",) else "x-forwarded"

    @property
    def trusted_x_forwarded_fields(self) -> frozenset[str]:
        """Which X-Forwarded-* headers (for, proto, host, prefix) the proxies set."""
        fields: set[str] = set()
        for name in self._proxy_headers:
            if name == "x-forwarded":
                fields.update(X_FORWARDED_FIELDS)
            elif name != "forwarded":
                fields.add(name.removeprefix("x-forwarded-"))
        return frozenset(fields)

    @property
    def _proxy_headers(self) -> tuple[str, ...]:
        names = tuple(n.strip().lower() for n in self.trusted_proxy_headers.split(",") if n.strip())
        known = {"forwarded", "x-forwarded", *(f"x-forwarded-{f}" for f in X_FORWARDED_FIELDS)}
        if not names or not set(names) <= known or ("forwarded" in names and len(names) > 1):
            raise ValueError(
                "PACS_TRUSTED_PROXY_HEADERS / --trusted-proxy-headers: "
                f"{self.trusted_proxy_headers!r}: expected forwarded, or some of "
                "x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-forwarded-prefix "
                "(x-forwarded: all four)"
            )
        return names

    @property
    def public_base_url(self) -> str:
        """PACS_PUBLIC_URL without its trailing slash (empty when not set)."""
        url = self.public_url.strip().rstrip("/")
        if not url:
            return ""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"PACS_PUBLIC_URL / --public-url: {self.public_url!r} is not an http(s) URL "
                "(e.g. https://pacs.example.org or https://example.org/pacs)"
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                f"PACS_PUBLIC_URL / --public-url: {self.public_url!r} may not have a query, "
                "a fragment or credentials"
            )
        return url

    @property
    def move_destination_map(self) -> dict[str, MoveDestination]:
        """C-MOVE destinations: AE title -> host, port and whether to use DICOM TLS."""
        where = "PACS_MOVE_DESTINATIONS / --move-destination"
        out: dict[str, MoveDestination] = {}
        for item in (part.strip() for part in self.move_destinations.split(",")):
            if not item:
                continue
            name, equals, address = item.partition("=")
            address = address.strip()
            tls = address.lower().endswith(":tls")
            if tls:
                address = address[: -len(":tls")]
            host, colon, port = address.rpartition(":")
            name, host = name.strip(), host.strip().removeprefix("[").removesuffix("]")
            if not (equals and colon and host and port.strip().isdigit()):
                raise ValueError(f"{where}: expected NAME=host:port[:tls], got {item!r}")
            _check_ae_title(name, where)
            if not 0 < int(port) <= 65535:
                raise ValueError(f"{where}: {port.strip()} is not a port in {item!r}")
            out[name] = MoveDestination(host, int(port), tls)
        return out

    @property
    def dimse_allowed_ae_titles(self) -> tuple[str, ...]:
        return tuple(ae.strip() for ae in self.dimse_allowed_aes.split(",") if ae.strip())

    @property
    def dimse_ae_policies(self) -> AePolicies:
        try:
            return parse_ae_policy(self.dimse_ae_policy)
        except PolicyError as exc:
            raise ValueError(f"PACS_DIMSE_AE_POLICY / --dimse-ae-policy: {exc}") from None

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
        # One construction, so that checks across settings see variables and flags together.
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# Timeouts and connection budgets: 0 would close every connection at once.
_AT_LEAST_ONE = (
    "dimse_request_timeout",
    "dimse_idle_timeout",
    "dimse_max_connections_per_address",
    "dimse_max_connections",
    "http_header_timeout",
    "http_body_timeout",
    "http_keepalive_timeout",
    "http_max_connections_per_address",
    "http_max_connections",
    "listen_backlog",
    "index_batch",
    "changefeed_poll_ms",
    "blob_delete_retry_interval",
    "outbox_batch",
    "outbox_poll_ms",
    "outbox_lease",
    "outbox_retry_max",
    "stable_after",
    "stable_scan_ms",
    "forward_max_attempts",
    "forward_retry_min",
    "forward_retry_max",
    "forward_lease",
    "forward_poll_ms",
    "forward_timeout",
    "forward_concurrency",
    "forward_rules_refresh_ms",
    "webhook_timeout",
    "webhook_max_attempts",
    "webhook_refresh_ms",
)


def _tenant_setting(name: str, where: str) -> str:
    try:
        return check_tenant(name)
    except UnknownTenant as exc:
        raise ValueError(f"{where}: {exc}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_KAFKA_BROKER = re.compile(r"[^\s:,]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}")


def _check_kafka(bootstrap: str, topic: str) -> None:
    if not _KAFKA_TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"PACS_KAFKA_TOPIC: {topic!r} is not a Kafka topic name (1 to 249 letters, digits, "
            "'.', '_' or '-')"
        )
    for broker in kafka_brokers(bootstrap):
        if not _KAFKA_BROKER.fullmatch(broker):
            raise ValueError(f"PACS_KAFKA_BOOTSTRAP: {broker!r} is not host:port")


# An Elasticsearch index name prefix: lower case, no leading '-', '_' or '+', room for the
# level suffix within the 255 bytes of an index name.
_SEARCH_INDEX = re.compile(r"[a-z0-9][a-z0-9._-]{0,199}")


def _check_search(url: str, prefix: str) -> None:
    if url:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (raises on a malformed port)
        except ValueError:
            parts = parts._replace(scheme="")
        # Not echoed: the URL may carry a password.
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("PACS_SEARCH_URL: not an http(s)://host[:port] URL")
    if not _SEARCH_INDEX.fullmatch(prefix):
        raise ValueError(
            f"PACS_SEARCH_INDEX: {prefix!r} is not an index name prefix (1 to 200 lower-case "
            "letters, digits, '.', '_' or '-', not starting with '.', '_' or '-')"
        )


def kafka_brokers(bootstrap: str) -> list[str]:
    """PACS_KAFKA_BOOTSTRAP's host:port entries; none (Kafka is off) when it is empty."""
    return [b.strip() for b in bootstrap.split(",")] if bootstrap.strip() else []


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
