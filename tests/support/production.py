"""The production backends for end-to-end tests: a throwaway PostgreSQL database and a
bucket on a moto S3 server, handed to `pacs serve` through its PACS_* variables."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.session import get_session

from tests.support import moto
from tests.support.postgres import create_database, drop_database, require_postgres


def require_moto() -> None:
    if moto.moto_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail("moto[server] is not installed: the S3 tests cannot run")
    pytest.skip("moto[server] is not installed")


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    return get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=moto.REGION,
        aws_access_key_id=moto.ACCESS_KEY_ID,
        aws_secret_access_key=moto.SECRET_ACCESS_KEY,
    )


@contextmanager
def production_backends(log_dir: Path) -> Iterator[dict[str, str]]:
    """Environment for `pacs serve` on a new PostgreSQL database and a new S3 bucket."""
    require_postgres()
    require_moto()
    with moto.running_moto(log_dir) as endpoint:
        bucket = f"pacs-{uuid.uuid4().hex[:12]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        database = asyncio.run(create_database())
        try:
            yield {
                "PACS_DATABASE_URL": database,
                "PACS_STORAGE_URL": f"s3://{bucket}/blobs",
                "PACS_S3_ENDPOINT_URL": endpoint,
                "PACS_S3_REGION": moto.REGION,
                "PACS_S3_ACCESS_KEY_ID": moto.ACCESS_KEY_ID,
                "PACS_S3_SECRET_ACCESS_KEY": moto.SECRET_ACCESS_KEY,
            }
        finally:
            asyncio.run(drop_database(database))


def bucket_object_count(env: dict[str, str]) -> int:
    return len(bucket_object_names(env))


def bucket_object_names(env: dict[str, str]) -> list[str]:
    bucket = env["PACS_STORAGE_URL"].removeprefix("s3://").split("/", 1)[0]
    client = s3_client(env["PACS_S3_ENDPOINT_URL"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def bucket_object_heads(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each object's HEAD answer (ContentLength, ETag ...) by key."""
    bucket = env["PACS_STORAGE_URL"].removeprefix("s3://").split("/", 1)[0]
    client = s3_client(env["PACS_S3_ENDPOINT_URL"])
    return {key: client.head_object(Bucket=bucket, Key=key) for key in bucket_object_names(env)}
