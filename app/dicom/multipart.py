"""Streaming ``multipart/related`` reading and writing (RFC 2046 section 5.1, RFC 2387).

DICOMweb uses ``multipart/related`` for STOW-RS request bodies and WADO-RS responses
(PS3.18 section 8.6.1.2). The reader takes the body as an async stream of chunks of any
size and yields each body part as soon as its headers have arrived; the part's body is then
streamed chunk by chunk, so memory stays bounded by a few chunk sizes whatever the size of
a part. It is liberal in what it accepts: quoted or unquoted parameters, a preamble and an
epilogue, transport padding after a boundary, bare LF line endings in boundary lines and
part headers. Part bodies are binary and come out byte for byte as sent.

The writer helpers produce this layout (no preamble, no epilogue)::

    part_head(B, ...) + body + part_tail()    # once per part: b"--B\\r\\n<headers>\\r\\n\\r\\n"
    ...                                       #                body, then b"\\r\\n"
    closing(B)                                # b"--B--\\r\\n"

so the CRLF that RFC 2046 assigns to the delimiter in front of a boundary is written by
``part_tail`` after each body.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import Enum, auto

__all__ = [
    "MultipartError",
    "Part",
    "closing",
    "content_type_header",
    "iter_parts",
    "new_boundary",
    "parse_media_type",
    "part_head",
    "part_tail",
]

MAX_BOUNDARY_LENGTH = 70  # RFC 2046 section 5.1.1: what we write
# What we read: Orthanc's DICOMweb client sends two UUIDs (73 characters), so RFC 2046's 70
# would refuse a real peer; a bound still keeps a hostile header from choosing the needle.
MAX_READ_BOUNDARY_LENGTH = 256
_MAX_PADDING = 1024  # transport padding tolerated after a boundary, in bytes
_MIN_YIELD = 64 * 1024  # small input chunks are gathered into body chunks of at least this
_BCHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
_TSPECIALS = frozenset('()<>@,;:\\"/[]?= \t')


class MultipartError(ValueError):
    """Body is not well-formed multipart; message says what is wrong."""


# --- media types ------------------------------------------------------------------------------


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into the media type and its parameters.

    ``'multipart/related; type="application/dicom"; boundary=abc'`` gives
    ``('multipart/related', {'type': 'application/dicom', 'boundary': 'abc'})``. The media type
    and parameter names are lower-cased, parameter values are unquoted (quoted-string with
    backslash escapes, or token) but keep their case. Extra whitespace, empty parameters,
    a trailing ``;`` and parameters without a value are tolerated (the latter are ignored);
    when a parameter is repeated the first one wins. Never raises: ``''`` gives ``('', {})``.
    """
    semi = value.find(";")
    media_type = (value if semi < 0 else value[:semi]).strip().lower()
    params: dict[str, str] = {}
    n = len(value)
    i = n if semi < 0 else semi + 1
    while i < n:
        while i < n and value[i] in " \t;":
            i += 1
        j = i
        while j < n and value[j] not in "=;":
            j += 1
        name = value[i:j].strip().lower()
        if j >= n or value[j] == ";":  # no '=': a value-less parameter, ignored
            i = j
            continue
        j += 1
        while j < n and value[j] in " \t":
            j += 1
        if j < n and value[j] == '"':
            chars: list[str] = []
            j += 1
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(value[j])
                j += 1
            param = "".join(chars)
            end = value.find(";", j)
        else:
            end = value.find(";", j)
            param = value[j : n if end < 0 else end].strip()
        i = n if end < 0 else end
        if name and name not in params:
            params[name] = param
    return media_type, params


def _quote(value: str) -> str:
    """A parameter value as a token when possible, else as a quoted-string."""
    if value and all(" " < c < "\x7f" and c not in _TSPECIALS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def content_type_header(boundary: str, type_: str, extra: Mapping[str, str] | None = None) -> str:
    """The Content-Type of a multipart/related message, e.g. for a WADO-RS response.

    ``content_type_header(B, "application/dicom", {"transfer-syntax": "1.2.840.10008.1.2.1"})``
    gives ``'multipart/related; type="application/dicom"; boundary=B;
    transfer-syntax=1.2.840.10008.1.2.1'``. Values are quoted only where RFC 2045 requires it.
    """
    _check_boundary(boundary, strict=True)
    items = [f"type={_quote(type_)}", f"boundary={_quote(boundary)}"]
    items += [f"{name}={_quote(value)}" for name, value in (extra or {}).items()]
    return "; ".join(["multipart/related", *items])


# --- writing ----------------------------------------------------------------------------------


def new_boundary() -> str:
    """A random boundary: 32 hex digits from a UUID4, so it practically never occurs in a body."""
    return uuid.uuid4().hex


def part_head(
    boundary: str, content_type: str, extra_headers: Mapping[str, str] | None = None
) -> bytes:
    """What precedes a body: ``b"--B\\r\\nContent-Type: <content_type>\\r\\n<extra>\\r\\n"``.

    Follow each body with ``part_tail()`` and the last one with ``closing(boundary)``.
    """
    _check_boundary(boundary, strict=True)
    lines = [
        f"--{boundary}",
        *_header_lines({"Content-Type": content_type, **(extra_headers or {})}),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def part_tail() -> bytes:
    """``b"\\r\\n"``: what follows each body (the line break in front of the next boundary)."""
    return b"\r\n"


def closing(boundary: str) -> bytes:
    """``b"--B--\\r\\n"``: the close delimiter, written after the last ``part_tail()``."""
    _check_boundary(boundary, strict=True)
    return f"--{boundary}--\r\n".encode("ascii")


def _header_lines(headers: Mapping[str, str]) -> list[str]:
    lines = []
    for name, value in headers.items():
        if not name or any(c in _TSPECIALS or not " " < c < "\x7f" for c in name):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"line break in the value of header {name!r}")
        lines.append(f"{name}: {value}")
    return lines


def _check_boundary(boundary: str, *, strict: bool = False) -> bytes:
    """The boundary as bytes; MultipartError if it cannot be one (strict: RFC 2046 bchars)."""
    if not boundary:
        raise MultipartError("empty multipart boundary")
    limit = MAX_BOUNDARY_LENGTH if strict else MAX_READ_BOUNDARY_LENGTH
    if len(boundary) > limit:
        # Its length, not the text: it can be as long as the header allows.
        raise MultipartError(
            f"multipart boundary of {len(boundary)} characters is longer than the limit of {limit}"
        )
    if strict and (not _BCHARS.issuperset(boundary) or boundary.endswith(" ")):
        raise MultipartError(f"invalid multipart boundary {boundary!r}")
    try:
        return boundary.encode("latin-1")
    except UnicodeEncodeError:
        raise MultipartError(f"invalid multipart boundary {boundary!r}") from None


# --- reading ----------------------------------------------------------------------------------


@dataclass
class Part:
    """One body part: its headers, and its body as an async iterator of bytes.

    The body can be iterated once, and only until the next part is requested from
    ``iter_parts``, which discards whatever of it was not read.
    """

    headers: dict[str, str]  # names lower-cased, values stripped
    _chunks: AsyncIterator[bytes] | None = field(default=None, repr=False, compare=False)
    _iterated: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def content_type(self) -> str:
        """The media type of the Content-Type header, lower-cased, without parameters."""
        return parse_media_type(self.headers.get("content-type", ""))[0]

    @property
    def media_params(self) -> dict[str, str]:
        """The parameters of the Content-Type header (e.g. ``transfer-syntax``)."""
        return parse_media_type(self.headers.get("content-type", ""))[1]

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterated:
            raise RuntimeError("the body of a multipart part can be iterated only once")
        self._iterated = True
        return self._chunks if self._chunks is not None else _empty()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover


async def iter_parts(
    body: AsyncIterable[bytes], boundary: str, *, max_header_size: int = 16384
) -> AsyncIterator[Part]:
    """Yield each body part of a multipart body as it arrives.

    A part's body must be consumed before asking for the next part; whatever the consumer did
    not read of it is discarded then. Memory stays bounded (a few chunk sizes) whatever the
    part sizes. Raises MultipartError for a bad boundary (before reading anything), a body
    without the boundary, a malformed or oversized header block, or a truncated body; in the
    last case the error comes from the part body's iteration, or from the next step of this
    iterator if that part's body was not read to its end.
    """
    reader = _Reader(body, _check_boundary(boundary), boundary, max_header_size)
    if not await reader.skip_preamble():
        return
    while True:
        headers = await reader.read_headers()
        chunks = _PartBody(reader)
        yield Part(headers, chunks)
        await chunks.drain()
        if reader.closed:
            return


class _Found(Enum):
    NONE = auto()  # no delimiter, nor the start of one, in the buffer
    MORE = auto()  # maybe a delimiter: more bytes are needed to tell
    DELIMITER = auto()  # a boundary line: another part follows
    CLOSE = auto()  # the close delimiter


class _Reader:
    """Buffer and state shared by ``iter_parts`` and the body iterators of its parts.

    Delimiters are found by searching for ``b"\\n--" + boundary`` and looking at the byte in
    front (an optional CR, which then belongs to the delimiter) and the bytes after (``--``
    for the close delimiter, or optional padding and a line break). The buffer starts with a
    synthetic LF so that a boundary at the very start of the body is found the same way.
    """

    def __init__(
        self, body: AsyncIterable[bytes], needle: bytes, boundary: str, max_header_size: int
    ) -> None:
        self._input = aiter(body)
        self._boundary = boundary
        self._needle = b"\n--" + needle
        self._max_header_size = max_header_size
        self._buf = bytearray(b"\n")
        self._scan = 0  # no delimiter starts in self._buf before this index
        self._eof = False
        self._error: MultipartError | None = None
        self.closed = False  # the close delimiter was read
        self.parts = 0  # parts whose headers were read

    async def _fill(self) -> bool:
        """Append the next input chunk to the buffer; False at the end of the input."""
        if self._eof:
            return False
        try:
            chunk = await anext(self._input)
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _fail(self, message: str) -> MultipartError:
        self._error = MultipartError(message)
        return self._error

    def _delimiter_at(self, p: int) -> tuple[_Found, int]:
        """What follows a boundary that ends at index ``p``; and where that line ends."""
        buf = self._buf
        size = len(buf)
        if p == size:
            return _Found.MORE, 0
        c = buf[p]
        if c == 45:  # "-"
            if p + 1 == size:
                return _Found.MORE, 0
            return (_Found.CLOSE, p + 2) if buf[p + 1] == 45 else (_Found.NONE, 0)
        q = p
        while q < size and buf[q] in b" \t":
            q += 1
        if q - p > _MAX_PADDING:
            raise self._fail(f"more than {_MAX_PADDING} bytes of padding after a boundary")
        if q == size:
            return _Found.MORE, 0
        c = buf[q]
        if c == 10:  # "\n"
            return _Found.DELIMITER, q + 1
        if c == 13:  # "\r"
            if q + 1 == size:
                return _Found.MORE, 0
            if buf[q + 1] == 10:
                return _Found.DELIMITER, q + 2
        return _Found.NONE, 0

    def _find(self) -> tuple[_Found, int, int]:
        """Look for the next delimiter from ``self._scan``.

        Returns (kind, start, end): for DELIMITER and CLOSE, the delimiter spans
        ``buf[start:end]`` (from its CRLF or LF to the end of its line, or to the end of
        ``--`` for the close delimiter); for MORE, a possible delimiter starts at ``start``; for
        NONE, ``buf[:start]`` holds no part of a delimiter.
        """
        buf = self._buf
        needle = self._needle
        i = buf.find(needle, self._scan)
        while i >= 0:
            start = i - 1 if i > 0 and buf[i - 1] == 13 else i
            kind, end = self._delimiter_at(i + len(needle))
            if kind is not _Found.NONE:
                self._scan = i
                return kind, start, end
            i = buf.find(needle, i + 1)
        start = max(len(buf) - len(needle), 0)  # keep what may be "\r" + the start of a needle
        self._scan = start + 1 if start else 0
        return _Found.NONE, start, 0

    def _take(self, size: int) -> bytes:
        """Remove and return the first ``size`` bytes of the buffer."""
        with memoryview(self._buf) as view:
            chunk = view[:size].tobytes()
        self._consume(size)
        return chunk

    def _consume(self, size: int) -> None:
        del self._buf[:size]
        self._scan = max(self._scan - size, 0)

    async def skip_preamble(self) -> bool:
        """Read up to the end of the first boundary line; False if it is the close delimiter."""
        while True:
            kind, start, end = self._find()
            if kind is _Found.DELIMITER or kind is _Found.CLOSE:
                self._consume(end)
                self.closed = kind is _Found.CLOSE
                return not self.closed
            if kind is _Found.NONE:
                self._consume(start)
            if not await self._fill():
                if kind is _Found.MORE:
                    raise self._fail("truncated multipart body: it ends inside the first boundary")
                raise self._fail(f"no multipart boundary {self._boundary!r} found in the body")

    async def read_headers(self) -> dict[str, str]:
        """Read a part's header block, up to and including the empty line that ends it."""
        if self._error is not None:
            raise self._error
        self.parts += 1
        buf = self._buf
        line_start = scan = 0
        while True:
            j = buf.find(b"\n", scan)
            if j < 0:
                if len(buf) > self._max_header_size:
                    break
                scan = len(buf)
                if not await self._fill():
                    raise self._fail(
                        f"truncated multipart body: it ends inside the headers of part {self.parts}"
                    )
                continue
            if j + 1 > self._max_header_size:
                break
            if j == line_start or (j == line_start + 1 and buf[line_start] == 13):
                block = bytes(buf[:line_start])
                self._consume(j + 1)
                self._scan = 0
                return self._parse_headers(block)
            line_start = scan = j + 1
        raise self._fail(f"the headers of part {self.parts} exceed {self._max_header_size} bytes")

    def _parse_headers(self, block: bytes) -> dict[str, str]:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = block.decode("latin-1")
        headers: dict[str, str] = {}
        name = ""
        for raw in text.split("\n")[:-1]:  # the block ends with a line break
            line = raw.removesuffix("\r")
            if line[:1] in (" ", "\t"):  # folded continuation of the previous header
                if not name:
                    raise self._fail(
                        f"malformed header line in part {self.parts}: {line!r} continues nothing"
                    )
                headers[name] = f"{headers[name]} {line.strip()}".strip()
                continue
            name, colon, value = line.partition(":")
            name = name.strip().lower()
            if not colon or not name or any(c in name for c in " \t"):
                raise self._fail(f"malformed header line in part {self.parts}: {line!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    async def _at_body_start(self) -> tuple[_Found, int]:
        """Whether the body is empty because the boundary follows the header block at once.

        ``b"Name: value\\r\\n\\r\\n--B"``: the empty line's CRLF is also the delimiter's.
        """
        head = self._needle[1:]
        while len(self._buf) < len(head) and head.startswith(self._buf):
            if not await self._fill():
                return _Found.NONE, 0
        if not self._buf.startswith(head):
            return _Found.NONE, 0
        while True:
            kind, end = self._delimiter_at(len(head))
            if kind is not _Found.MORE or not await self._fill():
                return kind, end

    async def next_body_chunk(self, first: bool) -> bytes | None:
        """The next chunk of the current part's body; None at its end."""
        if self._error is not None:
            raise self._error
        if first:
            kind, end = await self._at_body_start()
            if kind is _Found.DELIMITER or kind is _Found.CLOSE:
                self._consume(end)
                self.closed = kind is _Found.CLOSE
                return None
        while True:
            kind, start, end = self._find()
            if kind is _Found.DELIMITER or kind is _Found.CLOSE:
                if start:
                    return self._take(start)
                self._consume(end)
                self.closed = kind is _Found.CLOSE
                return None
            if start >= _MIN_YIELD:
                return self._take(start)
            if not await self._fill():
                if start:  # hand out what arrived before raising
                    return self._take(start)
                raise self._fail(
                    f"truncated multipart body: part {self.parts} ends before the next boundary"
                )


class _PartBody:
    """Async iterator over the body of the current part."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader
        self._started = False
        self._done = False
        self._skipped = False

    def __aiter__(self) -> _PartBody:
        return self

    async def __anext__(self) -> bytes:
        if self._skipped:
            raise RuntimeError("this part's body was discarded: the next part was requested")
        if self._done:
            raise StopAsyncIteration
        chunk = await self._reader.next_body_chunk(not self._started)
        self._started = True
        if chunk is None:
            self._done = True
            raise StopAsyncIteration
        return chunk

    async def drain(self) -> None:
        """Discard the rest of the body (called by ``iter_parts`` before the next part)."""
        if self._done:
            return
        while await self._reader.next_body_chunk(not self._started) is not None:
            self._started = True
        self._done = self._skipped = True
