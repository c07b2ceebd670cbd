"""A small, strict multipart/related reader and writer for the end-to-end tests.

Deliberately independent of `app.dicom.multipart`: the e2e tests check the server's output
with their own parser, so a bug shared by the server's writer and reader cannot hide.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def media_type_params(value: str) -> tuple[str, dict[str, str]]:
    """`'multipart/related; type="a/b"; boundary=x'` -> `('multipart/related', {...})`."""
    media_type, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, _, raw = item.strip().partition("=")
        if name:
            params[name.strip().lower()] = raw.strip().strip('"')
    return media_type.strip().lower(), params


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a multipart/related body (RFC 2046) into its parts; raise on malformed input."""
    media_type, params = media_type_params(content_type)
    if media_type != "multipart/related":
        raise ValueError(f"not multipart/related: {content_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError(f"no boundary in {content_type!r}")
    delimiter = b"--" + boundary.encode()
    # The first delimiter may start the body; every later one is preceded by CRLF.
    if body.startswith(delimiter):
        rest = body[len(delimiter) :]
    else:
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise ValueError("no opening boundary")
        rest = body[start + 2 + len(delimiter) :]
    parts: list[Part] = []
    while True:
        if rest.startswith(b"--"):
            return parts  # closing delimiter (epilogue ignored)
        line_end = rest.find(b"\r\n")
        if line_end < 0 or rest[:line_end].strip(b" \t"):
            raise ValueError("garbage after a boundary")
        rest = rest[line_end + 2 :]
        head_end = rest.find(b"\r\n\r\n")
        if rest.startswith(b"\r\n"):
            head_end = -2  # no headers at all
        elif head_end < 0:
            raise ValueError("part headers do not end")
        headers: dict[str, str] = {}
        for line in rest[: max(head_end, 0)].split(b"\r\n"):
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ValueError(f"malformed part header {line!r}")
            headers[name.strip().lower()] = value.strip()
        rest = rest[head_end + 4 :]
        end = rest.find(b"\r\n" + delimiter)
        if end < 0:
            raise ValueError("part does not end with a boundary")
        parts.append(Part(headers, rest[:end]))
        rest = rest[end + 2 + len(delimiter) :]


def encode_multipart(files: list[bytes], part_type: str = "application/dicom") -> tuple[str, bytes]:
    """(Content-Type header, body) of a multipart/related request with one part per file."""
    boundary = f"e2e-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for data in files:
        assert boundary.encode() not in data
        chunks += [f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return content_type, b"".join(chunks)
