"""The `pacs` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import uvicorn

from app.dimse.server import check_port
from app.main import STARTUP_ERRORS, build_app, open_archive
from app.settings import Settings


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
        metavar="NAME=HOST:PORT",
        help="a C-MOVE destination by AE title (repeatable)",
    )
    serve.add_argument(
        "--dimse-allow",
        dest="dimse_allowed_aes",
        action="append",
        metavar="AE",
        help="a calling AE title allowed to associate (repeatable; default: any)",
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
    migrate = sub.add_parser("migrate", help="apply pending index migrations and exit")
    migrate.add_argument("--data", type=Path)
    migrate.add_argument("--database", dest="database_url")
    return parser


# Repeatable flags and how their values join into one setting.
_REPEATABLE = {"move_destinations": ",", "dimse_allowed_aes": ",", "dimse_ae_policy": ";"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "command"}
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
    if settings.dimse_port:
        try:
            check_port(settings.host, settings.dimse_port)
        except OSError as exc:
            print(f"pacs: {exc}", file=sys.stderr)
            return 1
    return _serve(settings)


async def _check_backends(settings: Settings) -> None:
    async with open_archive(settings):
        pass


def _serve(settings: Settings) -> int:
    logging.getLogger("pacs").info(
        "DICOMweb at http://%s:%d/dicomweb, data in %s",
        settings.host,
        settings.port,
        settings.data.resolve(),
    )
    uvicorn.run(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level.lower() == "debug",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
