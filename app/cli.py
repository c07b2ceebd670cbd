"""The `pacs` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import ssl
import sys
from pathlib import Path
from typing import Any, NamedTuple

import uvicorn

from app.dimse.server import check_port
from app.main import (
    STARTUP_ERRORS,
    build_app,
    change_consumers,
    check_issuer,
    dimse_config,
    open_archive,
)
from app.open_files import raise_open_file_limit
from app.settings import Settings
from app.tls import https_context
from app.web.http_protocol import HttpLimits, guarded_protocol
from app.workers import LOAD_FLAG, PARENT_FLAG, SOCKET_FD_FLAG, serve_first, serve_worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs", description="DICOMweb archive")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the archive (DICOMweb over HTTP, and DIMSE)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--data", type=Path, help="data folder (default ./data)")
    serve.add_argument(
        "--database",
        dest="database_url",
        help="index: postgresql://user@host/db or sqlite:///path (default: SQLite in --data)",
    )
    serve.add_argument(
        "--storage",
        dest="storage_url",
        help="blob store: s3://bucket/prefix, or a folder (default: <data>/blobs)",
    )
    serve.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace a stored instance when different content arrives with its SOP UID",
    )
    serve.add_argument(
        "--dimse-port", type=int, help="DICOM (DIMSE) port (default 11112; 0 turns it off)"
    )
    serve.add_argument("--ae-title", help="our DICOM AE title (default PACS)")
    serve.add_argument(
        "--move-destination",
        dest="move_destinations",
        action="append",
        metavar="NAME=HOST:PORT[:tls]",
        help="a C-MOVE destination by AE title, :tls for DICOM TLS (repeatable)",
    )
    serve.add_argument(
        "--dimse-allow",
        dest="dimse_allowed_aes",
        action="append",
        metavar="AE",
        help="a calling AE title allowed to associate (repeatable; default: any)",
    )
    serve.add_argument("--tls-cert", help="HTTPS: PEM certificate (chain) file")
    serve.add_argument("--tls-key", help="HTTPS: PEM private key file (unencrypted)")
    serve.add_argument("--tls-ca", help="HTTPS: clients must present a certificate this CA signed")
    serve.add_argument(
        "--dimse-tls-port", type=int, help="DICOM TLS port (default 0: off; needs a certificate)"
    )
    serve.add_argument(
        "--dimse-tls-ca", help="DICOM TLS: calling AEs must present a certificate this CA signed"
    )
    serve.add_argument(
        "--trusted-proxy",
        dest="trusted_proxies",
        action="append",
        metavar="IP_OR_NETWORK",
        help="a reverse proxy whose Forwarded / X-Forwarded-* headers are believed (repeatable)",
    )
    serve.add_argument(
        "--trusted-proxy-headers",
        choices=["x-forwarded", "forwarded"],
        help="the headers the trusted proxies set; only these are read (default x-forwarded)",
    )
    serve.add_argument(
        "--public-url", help="what generated links start with, e.g. https://pacs.example.org"
    )
    serve.add_argument(
        "--oidc-issuer", help="require bearer tokens from this OpenID Connect issuer"
    )
    serve.add_argument("--oidc-audience", help="the audience those access tokens must name")
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="serve everyone without sign-in on an address other than loopback",
    )
    serve.add_argument(
        "--dimse-ae-policy",
        dest="dimse_ae_policy",
        action="append",
        metavar="AE=SERVICES[@TENANT]",
        help="what a calling AE title may do (echo,store,find,move,get or all) and its "
        "tenant, e.g. MODALITY1=echo,store@clinic-a (repeatable; default: all, default tenant)",
    )
    serve.add_argument("--log-level", help="debug, info, warning (default info)")
    # Set by the first process for the HTTP workers it starts (app/workers.py).
    serve.add_argument(SOCKET_FD_FLAG, dest="http_socket_fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument(PARENT_FLAG, dest="http_parent_pid", type=int, help=argparse.SUPPRESS)
    serve.add_argument(LOAD_FLAG, dest="http_load_table", help=argparse.SUPPRESS)
    migrate = sub.add_parser("migrate", help="apply pending index migrations and exit")
    migrate.add_argument("--data", type=Path)
    migrate.add_argument("--database", dest="database_url")
    return parser


# Repeatable flags and how their values join into one setting.
_REPEATABLE = {
    "move_destinations": ",",
    "dimse_allowed_aes": ",",
    "dimse_ae_policy": ";",
    "trusted_proxies": ",",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    worker = _Worker(args.http_socket_fd, args.http_parent_pid, args.http_load_table)
    del args.http_socket_fd, args.http_parent_pid, args.http_load_table
    overrides = {k: v for k, v in vars(args).items() if k != "command"}
    if worker.fd is not None:  # DIMSE belongs to the first process
        overrides.update(dimse_port=0, dimse_tls_port=0)
    for name, separator in _REPEATABLE.items():
        if overrides.get(name) is not None:
            overrides[name] = separator.join(overrides[name])
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level.lower() != "debug":
        # The JPEG 2000 codec logs a line per tile at INFO.
        logging.getLogger("openjpeg").setLevel(logging.WARNING)
        # pydicom logs what it finds wrong in a value quoting the value (a birth date, a
        # name) and a damaged frame at ERROR; ingest reports the former as STOW warnings
        # and retrieval the latter as a 501 with the instance's UID.
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    if worker.fd is not None:  # the first process checked the backends
        return _serve_worker(settings, worker)
    try:
        # Opening the backends applies pending migrations and checks that the database
        # and the blob store answer, so a wrong setting is one clear line, not a traceback.
        asyncio.run(_check_backends(settings))
    except STARTUP_ERRORS as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 1
    if args.command == "migrate":
        logging.getLogger("pacs").info("index schema is up to date")
        return 0
    try:
        # TLS files and DIMSE ports are checked before anything starts listening.
        https = _check_transport(settings)
    except STARTUP_ERRORS as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 1
    return _serve(settings, https, argv)


class _Worker(NamedTuple):
    fd: int | None  # the inherited HTTP socket of a worker process
    parent: int | None
    load_table: str | None


def _check_transport(settings: Settings) -> ssl.SSLContext | None:
    """The HTTPS context (None: plain HTTP), once DIMSE's settings are checked too."""
    https = None
    if settings.uses_https:
        https = https_context(settings.tls_cert, settings.tls_key, settings.tls_ca)
    dimse_config(settings)  # builds the DICOM TLS contexts from their files
    change_consumers(settings)  # and the Kafka publisher's from its CA file
    if settings.dimse_port:
        check_port(settings.host, settings.dimse_port)
    if settings.dimse_tls_port:
        check_port(settings.host, settings.dimse_tls_port, "--dimse-tls-port")
    return https


async def _check_backends(settings: Settings) -> None:
    async with open_archive(settings):
        pass
    await check_issuer(settings)


def _serve(settings: Settings, https: ssl.SSLContext | None, argv: list[str]) -> int:
    logging.getLogger("pacs").info(
        "DICOMweb at %s://%s:%d/dicomweb%s, data in %s",
        "https" if settings.uses_https else "http",
        settings.host,
        settings.port,
        " (client certificates required)" if settings.tls_ca else "",
        settings.data.resolve(),
    )
    if settings.oidc_issuer:
        logging.getLogger("pacs").info("sign-in: bearer tokens of %s", settings.oidc_issuer)
    elif settings.allow_anonymous:
        logging.getLogger("pacs").warning("no sign-in: anyone who can reach the archive may use it")
    _open_file_limit(settings)
    app = build_app(settings)
    # What lives as long as the process (modules, pydicom's dictionaries: ~100,000 objects)
    # is left out of the collector's full passes, each of which stops the event loop; with
    # thousands of connections open, they would be a third of every pause.
    gc.freeze()
    if settings.http_worker_count > 1:
        return serve_first(app, uvicorn_options(settings, https), settings.http_worker_count, argv)
    uvicorn.run(app, **uvicorn_options(settings, https))
    return 0


def _serve_worker(settings: Settings, worker: _Worker) -> int:
    """An HTTP worker started by the first process: HTTP only, on the socket it inherited."""
    assert worker.fd is not None and worker.parent is not None and worker.load_table
    https = (
        https_context(settings.tls_cert, settings.tls_key, settings.tls_ca)
        if (settings.uses_https)
        else None
    )
    _open_file_limit(settings)
    app = build_app(settings, first=False)
    gc.freeze()
    options = uvicorn_options(settings, https)
    return serve_worker(app, options, worker.fd, worker.parent, worker.load_table)


def _open_file_limit(settings: Settings) -> None:
    """Raise the open-file limit, and say so when it is below the connection budgets."""
    limit = raise_open_file_limit()
    budget = settings.http_max_connections + settings.dimse_max_connections
    if limit < budget + 1000:  # the index, blobs being written, spool files
        logging.getLogger("pacs").warning(
            "open-file limit %d is below the connection budgets (PACS_HTTP_MAX_CONNECTIONS "
            "+ PACS_DIMSE_MAX_CONNECTIONS = %d): raise the hard limit (ulimit -Hn, "
            "LimitNOFILE=) or lower the budgets",
            limit,
            budget,
        )


def uvicorn_options(settings: Settings, https: ssl.SSLContext | None) -> dict[str, Any]:
    """uvicorn's settings; HTTPS with `https` itself (from `_check_transport`), as uvicorn
    would otherwise build a second context from the files, with its own defaults."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        # Ours (app/web/access_log.py) logs route templates; uvicorn's, paths with queries.
        "access_log": False,
        # Forwarded headers are the app's business, from PACS_TRUSTED_PROXIES only: uvicorn
        # would otherwise believe X-Forwarded-For/-Proto from 127.0.0.1 by default.
        "proxy_headers": False,
        # Timeouts and connection budgets uvicorn lacks (app/web/http_protocol.py).
        "http": guarded_protocol(
            HttpLimits(
                header_timeout=settings.http_header_timeout,
                body_timeout=settings.http_body_timeout,
                # Each worker process counts its own connections: its share of the budgets.
                per_address=math.ceil(
                    settings.http_max_connections_per_address / settings.http_worker_count
                ),
                total=math.ceil(settings.http_max_connections / settings.http_worker_count),
                exempt=settings.trusted_proxy_networks,
            ),
            sendfile=settings.http_sendfile,
        ),
        "timeout_keep_alive": settings.http_keepalive_timeout,
        "backlog": settings.listen_backlog,
    }
    if https is not None:
        options["ssl_context_factory"] = lambda config, default: https
    return options


if __name__ == "__main__":
    sys.exit(main())
