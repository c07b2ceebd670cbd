"""atheris target: the streaming multipart/related reader of STOW-RS bodies
(`app.dicom.multipart`).

Three kinds of input, chosen by the first byte:
- any boundary and body, cut into chunks of any size, read with bodies consumed or skipped:
  any exception but `MultipartError` is a crash;
- a well-formed body written with the module's own writer: reading it back must give the
  same parts, whatever the chunking;
- any Content-Type value: `parse_media_type` never raises.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import atheris

with atheris.instrument_imports(include=["app.dicom"]):
    from app.dicom.multipart import (
        MultipartError,
        closing,
        iter_parts,
        parse_media_type,
        part_head,
        part_tail,
    )


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits for anything outside itself (no event loop)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the reader waited on something other than its input")


async def _chunks(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        yield body[at : at + size]
        at += size
    if at < len(body):
        yield body[at:]


async def _read(body: bytes, boundary: str, sizes: list[int], skip: int) -> list[bytes]:
    parts = []
    number = 0
    async for part in iter_parts(_chunks(body, sizes), boundary):
        number += 1
        part.content_type  # noqa: B018 (parses the header)
        if skip and number % skip == 0:
            parts.append(b"")
            continue  # the reader drains it
        parts.append(b"".join([chunk async for chunk in part]))
    return parts


def _sizes(fdp: atheris.FuzzedDataProvider) -> list[int]:
    return [fdp.ConsumeIntInRange(0, 300) for _ in range(fdp.ConsumeIntInRange(0, 8))]


def _any_body(fdp: atheris.FuzzedDataProvider) -> None:
    boundary = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    sizes = _sizes(fdp)
    skip = fdp.ConsumeIntInRange(0, 3)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    with contextlib.suppress(MultipartError):
        _run(_read(body, boundary, sizes, skip))


def _round_trip(fdp: atheris.FuzzedDataProvider) -> None:
    boundary = "".join(
        chr(fdp.ConsumeIntInRange(0x30, 0x7A)) for _ in range(fdp.ConsumeIntInRange(1, 70))
    )
    if not boundary.isalnum():
        return
    sizes = _sizes(fdp)
    bodies = [
        fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)) for _ in range(fdp.ConsumeIntInRange(0, 5))
    ]
    if any(b"--" + boundary.encode() in body for body in bodies):
        return  # a body may not contain its delimiter (RFC 2046 5.1.1)
    message = b"".join(
        part_head(boundary, "application/dicom") + body + part_tail() for body in bodies
    )
    message += closing(boundary)
    read = _run(_read(message, boundary, sizes, 0))
    if read != bodies:
        raise AssertionError(f"wrote {bodies!r}, read {read!r}")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 0:
        _any_body(fdp)
    elif kind == 1:
        _round_trip(fdp)
    else:
        parse_media_type(fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes()))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
