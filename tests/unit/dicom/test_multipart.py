from __future__ import annotations

import random
import tracemalloc
from collections.abc import AsyncIterator, Iterable

import pytest

from app.dicom.multipart import (
    MultipartError,
    Part,
    closing,
    content_type_header,
    iter_parts,
    new_boundary,
    parse_media_type,
    part_head,
    part_tail,
)

B = "b0und4ry"


async def stream(data: bytes, chunk_size: int | None = None) -> AsyncIterator[bytes]:
    """The body in chunks of ``chunk_size`` bytes (one chunk if None)."""
    size = chunk_size or max(len(data), 1)
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(
    data: bytes | AsyncIterator[bytes], boundary: str = B, chunk_size: int | None = None
) -> list[tuple[dict[str, str], bytes]]:
    body = stream(data, chunk_size) if isinstance(data, bytes) else data
    parts = []
    async for part in iter_parts(body, boundary):
        parts.append((part.headers, b"".join([chunk async for chunk in part])))
    return parts


def message(bodies: Iterable[bytes], boundary: str = B, content_type: str = "a/b") -> bytes:
    out = b"".join(part_head(boundary, content_type) + body + part_tail() for body in bodies)
    return out + closing(boundary)


CHUNK_SIZES = [1, 2, 3, 7, 64, None]


# --- parse_media_type ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("", {})),
        ("   ", ("", {})),
        (";", ("", {})),
        ("application/dicom", ("application/dicom", {})),
        ("  Application/DICOM  ", ("application/dicom", {})),
        (
            'multipart/related; type="application/dicom"; boundary=abc',
            ("multipart/related", {"type": "application/dicom", "boundary": "abc"}),
        ),
        (
            "multipart/related;type=application/dicom;boundary=abc",
            ("multipart/related", {"type": "application/dicom", "boundary": "abc"}),
        ),
        (
            'Multipart/Related ;  TYPE = "application/dicom" ;  Boundary = "a b:c" ; ',
            ("multipart/related", {"type": "application/dicom", "boundary": "a b:c"}),
        ),
        (
            'multipart/related; boundary="a\\"b\\\\c;d"; start="<1@x>"',
            ("multipart/related", {"boundary": 'a"b\\c;d', "start": "<1@x>"}),
        ),
        (
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
            (
                "multipart/related",
                {"type": "application/dicom", "transfer-syntax": "1.2.840.10008.1.2.1"},
            ),
        ),
        ("a/b; flag; x=1", ("a/b", {"x": "1"})),
        ("a/b; x=1; x=2", ("a/b", {"x": "1"})),
        ("a/b; =1; ;; y=", ("a/b", {"y": ""})),
        ('a/b; x="unterminated', ("a/b", {"x": "unterminated"})),
        ('a/b; x="q" junk; y=2', ("a/b", {"x": "q", "y": "2"})),
        ("a/b; BoUnDaRy=CaSe", ("a/b", {"boundary": "CaSe"})),
    ],
)
def test_parse_media_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_media_type(value) == expected


@pytest.mark.parametrize("value", ['"', "\\", ";=;=", '=";', "a/b;\x00=\x01", "é/ü; ü=é"])
def test_parse_media_type_never_raises_on_garbage(value: str) -> None:
    media_type, params = parse_media_type(value)
    assert isinstance(media_type, str)
    assert isinstance(params, dict)


# --- writer -------------------------------------------------------------------------------


def test_writer_layout() -> None:
    head = part_head("B1", "application/dicom", {"Content-Location": "/x"})
    assert head == b"--B1\r\nContent-Type: application/dicom\r\nContent-Location: /x\r\n\r\n"
    assert part_tail() == b"\r\n"
    assert closing("B1") == b"--B1--\r\n"


def test_content_type_header() -> None:
    assert content_type_header("B1", "application/dicom") == (
        'multipart/related; type="application/dicom"; boundary=B1'
    )
    value = content_type_header(
        "B1", "application/octet-stream", {"transfer-syntax": "1.2.840.10008.1.2.1"}
    )
    assert parse_media_type(value) == (
        "multipart/related",
        {
            "type": "application/octet-stream",
            "boundary": "B1",
            "transfer-syntax": "1.2.840.10008.1.2.1",
        },
    )
    assert content_type_header("a:b", "x/y").endswith('boundary="a:b"')


def test_new_boundary_is_random_and_valid() -> None:
    boundaries = {new_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    for boundary in boundaries:
        assert 1 <= len(boundary) <= 70
        part_head(boundary, "a/b")  # does not raise


@pytest.mark.parametrize("boundary", ["", "x" * 71, "a\r\nb", "trailing "])
def test_writer_rejects_bad_boundary(boundary: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        part_head(boundary, "a/b")


def test_writer_rejects_header_injection() -> None:
    with pytest.raises(ValueError, match="line break"):
        part_head("B1", "a/b\r\nX-Evil: 1")


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
async def test_round_trip(chunk_size: int | None) -> None:
    rng = random.Random(2387)
    boundary = new_boundary()
    bodies = [
        rng.randbytes(5000),
        b"\r\n" * 10 + rng.randbytes(100) + b"\r\n--" + boundary[:-1].encode() + b"\r\n",
        b"",
    ]
    heads = [part_head(boundary, "application/dicom", {"Content-ID": f"<{i}>"}) for i in range(3)]
    data = b"".join(h + b + part_tail() for h, b in zip(heads, bodies, strict=True))
    parts = await read_all(data + closing(boundary), boundary, chunk_size)
    assert [body for _, body in parts] == bodies
    assert [headers for headers, _ in parts] == [
        {"content-type": "application/dicom", "content-id": f"<{i}>"} for i in range(3)
    ]


# --- reader: framing ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            b"--b0und4ry\r\nContent-Type: a/b\r\n\r\nhello\r\n--b0und4ry--\r\n",
            [({"content-type": "a/b"}, b"hello")],
            id="minimal",
        ),
        pytest.param(
            b"preamble text\r\n--b0und4ry\r\n\r\nhello\r\n--b0und4ry--\r\n"
            b"epilogue\r\n--b0und4ry\r\n",
            [({}, b"hello")],
            id="preamble-epilogue",
        ),
        pytest.param(
            b"\r\n--b0und4ry\r\n\r\nhello\r\n--b0und4ry--",
            [({}, b"hello")],
            id="leading-crlf-no-final-crlf",
        ),
        pytest.param(
            b"--b0und4ry \t \r\nX: 1\r\n\r\nhello\r\n"
            b"--b0und4ry\t\r\nX: 2\r\n\r\nbye\r\n--b0und4ry--  ",
            [({"x": "1"}, b"hello"), ({"x": "2"}, b"bye")],
            id="transport-padding",
        ),
        pytest.param(
            b"--b0und4ry\nContent-Type: a/b\nX-A: 1\n\nhello\n--b0und4ry\n\nbye\n--b0und4ry--\n",
            [({"content-type": "a/b", "x-a": "1"}, b"hello"), ({}, b"bye")],
            id="lf-only",
        ),
        pytest.param(
            b"--b0und4ry\r\nContent-Type: a/b\r\n\r\n\r\n--b0und4ry\r\n\r\n\r\n--b0und4ry--",
            [({"content-type": "a/b"}, b""), ({}, b"")],
            id="empty-bodies",
        ),
        pytest.param(
            b"--b0und4ry\r\nContent-Type: a/b\r\n\r\n--b0und4ry\r\n\r\n--b0und4ry--",
            [({"content-type": "a/b"}, b""), ({}, b"")],
            id="no-body-after-headers",
        ),
        pytest.param(
            b"--b0und4ry\r\n\r\n\r\n\r\n\r\n--b0und4ry--",
            [({}, b"\r\n\r\n")],
            id="body-of-line-breaks",
        ),
        pytest.param(
            b"--b0und4ry\r\n\r\n"
            b"--b0und4r\r\n"  # too short
            b"x--b0und4ry\r\n"  # not at the start of a line
            b"\r\n--b0und4ryX\r\n"  # longer word
            b"\r\n--b0und4ry-x\r\n"  # not the close delimiter
            b"\r\n--b0und4ry \tx\r\n"  # padding then text
            b"\r\n--b0und4ry\rx"  # bare CR
            b"\r\n--b0und4ry--",
            [
                (
                    {},
                    b"--b0und4r\r\nx--b0und4ry\r\n\r\n--b0und4ryX\r\n\r\n--b0und4ry-x\r\n"
                    b"\r\n--b0und4ry \tx\r\n\r\n--b0und4ry\rx",
                )
            ],
            id="boundary-like-text",
        ),
        pytest.param(
            b"--b0und4ry--\r\n",
            [],
            id="no-parts",
        ),
        pytest.param(
            b"--b0und4ry\r\nA: 1\r\n  continued\r\n\tand more\r\n"
            b"B:2\r\nB: 3\r\n\r\nx\r\n--b0und4ry--",
            [({"a": "1 continued and more", "b": "2, 3"}, b"x")],
            id="folded-and-repeated-headers",
        ),
        pytest.param(
            b"--b0und4ry\r\nCONTENT-TYPE:   Application/DICOM ; transfer-syntax=1.2  \r\n\r\n"
            b"x\r\n--b0und4ry--",
            [({"content-type": "Application/DICOM ; transfer-syntax=1.2"}, b"x")],
            id="header-case",
        ),
    ],
)
async def test_reader(
    data: bytes, expected: list[tuple[dict[str, str], bytes]], chunk_size: int | None
) -> None:
    assert await read_all(data, chunk_size=chunk_size) == expected


async def test_part_media_type() -> None:
    data = (
        b'--b0und4ry\r\nContent-Type: Application/DICOM; Transfer-Syntax="1.2.840.10008.1.2.4.50"'
        b"\r\n\r\nx\r\n--b0und4ry\r\n\r\ny\r\n--b0und4ry--"
    )
    parts = [part async for part in iter_parts(stream(data), B)]
    assert parts[0].content_type == "application/dicom"
    assert parts[0].media_params == {"transfer-syntax": "1.2.840.10008.1.2.4.50"}
    assert parts[1].content_type == ""
    assert parts[1].media_params == {}


async def test_orthancs_73_character_boundary_is_read() -> None:
    # Two UUIDs, as Orthanc's DICOMweb client sends: longer than RFC 2046's 70.
    boundary = "0" * 36 + "-" + "1" * 36
    body = b"".join([f"--{boundary}\r\n\r\n".encode(), b"data", f"\r\n--{boundary}--\r\n".encode()])
    assert await read_all(body, boundary) == [({}, b"data")]


def test_written_boundaries_keep_rfc_2046s_70_characters() -> None:
    with pytest.raises(MultipartError, match="70"):
        part_head("x" * 71, "a/b")


@pytest.mark.parametrize("boundary", ["a", "x" * 70, "with space", "q'()+_,-./:=?"])
@pytest.mark.parametrize("chunk_size", [1, None])
async def test_boundary_characters(boundary: str, chunk_size: int | None) -> None:
    data = f"--{boundary}\r\n\r\nhi\r\n--{boundary}--\r\n".encode()
    assert await read_all(data, boundary, chunk_size) == [({}, b"hi")]


@pytest.mark.parametrize("chunk_size", [1, 5, 1000, None])
async def test_binary_bodies_come_out_unchanged(chunk_size: int | None) -> None:
    rng = random.Random(1234)
    bodies = []
    for _ in range(8):
        pieces = [rng.randbytes(rng.randrange(0, 300)) for _ in range(10)]
        seps = [b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"--", b"\r\n--", b"--" + B.encode()[:-1]]
        bodies.append(b"".join(p + rng.choice(seps) for p in pieces))
    bodies += [b"\r", b"\n", b"\r\n", b"-", b"\r\n-"]
    parts = await read_all(message(bodies), chunk_size=chunk_size)
    assert [body for _, body in parts] == bodies


@pytest.mark.parametrize("chunk_size", [1, 4096, None])
async def test_many_parts(chunk_size: int | None) -> None:
    bodies = [str(i).encode() * i for i in range(500)]
    parts = await read_all(message(bodies), chunk_size=chunk_size)
    assert [body for _, body in parts] == bodies


async def test_large_input_chunks_give_large_output_chunks() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB
    data = message([body])
    sizes = []
    async for part in iter_parts(stream(data, 1 << 20), B):
        sizes += [len(chunk) async for chunk in part]
    assert sum(sizes) == len(body)
    assert len(sizes) <= 4


async def test_small_input_chunks_are_gathered() -> None:
    body = b"x" * 300_000
    sizes = []
    async for part in iter_parts(stream(message([body]), 100), B):
        sizes += [len(chunk) async for chunk in part]
    assert sum(sizes) == len(body)
    assert len(sizes) <= 6


async def test_empty_input_chunks_are_ignored() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for byte in message([b"abc", b""]):
            yield b""
            yield bytes([byte])

    assert [body for _, body in await read_all(chunks())] == [b"abc", b""]


# --- reader: consumer behaviour -----------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 3, None])
@pytest.mark.parametrize("read", [0, 1, 100_000])
async def test_skipped_bodies_are_discarded(chunk_size: int | None, read: int) -> None:
    bodies = [b"a" * 200_000, b"b\r\n--b0und4r" * 100, b"c" * 10]
    headers = []
    async for part in iter_parts(stream(message(bodies), chunk_size), B):
        headers.append(part.headers)
        got = 0
        if read:
            async for chunk in part:
                got += len(chunk)
                if got >= read:
                    break
    assert headers == [{"content-type": "a/b"}] * 3


async def test_only_some_parts_read() -> None:
    bodies = [b"one", b"two", b"three", b"four"]
    seen = []
    async for i, part in _enumerate(iter_parts(stream(message(bodies), 2), B)):
        if i % 2:
            seen.append(b"".join([chunk async for chunk in part]))
    assert seen == [b"two", b"four"]


async def _enumerate(parts: AsyncIterator[Part]) -> AsyncIterator[tuple[int, Part]]:
    i = 0
    async for part in parts:
        yield i, part
        i += 1


async def test_body_can_be_iterated_once() -> None:
    async for part in iter_parts(stream(message([b"x"])), B):
        assert [chunk async for chunk in part] == [b"x"]
        with pytest.raises(RuntimeError, match="once"):
            [chunk async for chunk in part]


async def test_skipped_body_cannot_be_read_later() -> None:
    parts = [part async for part in iter_parts(stream(message([b"x", b"y"])), B)]
    with pytest.raises(RuntimeError, match="discarded"):
        [chunk async for chunk in parts[0]]


def test_part_without_reader_has_empty_body() -> None:
    part = Part({"content-type": "a/b"})
    assert part.content_type == "a/b"


async def test_part_without_reader_iterates_empty() -> None:
    assert [chunk async for chunk in Part({})] == []


# --- reader: errors -----------------------------------------------------------------------


@pytest.mark.parametrize("boundary", ["", "x" * 257])
async def test_bad_boundary_is_rejected_before_reading(boundary: str) -> None:
    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b""

    with pytest.raises(MultipartError, match="boundary"):
        await anext(iter_parts(body(), boundary))
    assert not read


@pytest.mark.parametrize("chunk_size", [1, None])
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no boundary here",
        b"--b0und4r\r\n\r\nx",
        b"x--b0und4ry\r\n\r\nx",
        b"--b0und4ryX\r\n\r\nx",
    ],
)
async def test_no_boundary(data: bytes, chunk_size: int | None) -> None:
    with pytest.raises(MultipartError, match="no multipart boundary 'b0und4ry' found in the body"):
        await read_all(data, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [1, None])
@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"--b0und4ry", "first boundary"),
        (b"--b0und4ry  ", "first boundary"),
        (b"--b0und4ry-", "first boundary"),
        (b"--b0und4ry\r\n", "headers of part 1"),
        (b"--b0und4ry\r\nContent-Type: a/b\r\n", "headers of part 1"),
        (b"--b0und4ry\r\n\r\nbody", "part 1 ends before"),
        (b"--b0und4ry\r\n\r\nbody\r\n", "part 1 ends before"),
        (b"--b0und4ry\r\n\r\nbody\r\n--b0und4ry", "part 1 ends before"),
        (b"--b0und4ry\r\n\r\nbody\r\n--b0und4ry-", "part 1 ends before"),
        (b"--b0und4ry\r\n\r\nbody\r\n--b0und4ry\r\n", "headers of part 2"),
        (b"--b0und4ry\r\n\r\nx\r\n--b0und4ry\r\n\r\n" + b"y" * 100_000, "part 2 ends before"),
    ],
)
async def test_truncated(data: bytes, where: str, chunk_size: int | None) -> None:
    with pytest.raises(MultipartError, match=f"truncated multipart body: .*{where}"):
        await read_all(data, chunk_size=chunk_size)


async def test_truncation_is_raised_by_the_incomplete_part() -> None:
    data = b"--b0und4ry\r\n\r\ncomplete\r\n--b0und4ry\r\n\r\n" + b"y" * 100_000
    parts = iter_parts(stream(data, 1000), B)
    first = await anext(parts)
    assert b"".join([chunk async for chunk in first]) == b"complete"
    second = await anext(parts)
    received = 0
    with pytest.raises(MultipartError, match="truncated"):
        async for chunk in second:
            received += len(chunk)
    assert received <= 100_000
    # asking for the next part repeats the error rather than pretending all is well
    with pytest.raises(MultipartError, match="truncated"):
        await anext(parts)


async def test_truncation_of_unread_part_is_raised_by_next_part() -> None:
    data = b"--b0und4ry\r\n\r\nnever read" * 3
    parts = iter_parts(stream(data), B)
    await anext(parts)
    with pytest.raises(MultipartError, match="truncated multipart body: part 1"):
        await anext(parts)


@pytest.mark.parametrize("chunk_size", [1, None])
@pytest.mark.parametrize(
    "header",
    [b"no colon", b": no name", b"bad name: x", b" continuation of nothing"],
)
async def test_malformed_header(header: bytes, chunk_size: int | None) -> None:
    data = b"--b0und4ry\r\n" + header + b"\r\n\r\nx\r\n--b0und4ry--"
    with pytest.raises(MultipartError, match="malformed header line in part 1"):
        await read_all(data, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [1, 1000, None])
@pytest.mark.parametrize("line", [b"X-Long: " + b"v" * 20_000, b"X-Many: v\r\n" * 2000])
async def test_oversized_headers(line: bytes, chunk_size: int | None) -> None:
    data = b"--b0und4ry\r\n" + line + b"\r\n\r\nx\r\n--b0und4ry--"
    with pytest.raises(MultipartError, match="headers of part 1 exceed 16384 bytes"):
        await read_all(data, chunk_size=chunk_size)


async def test_max_header_size_is_configurable() -> None:
    data = b"--b0und4ry\r\nX: " + b"v" * 100 + b"\r\n\r\nx\r\n--b0und4ry--"
    with pytest.raises(MultipartError, match="exceed 50 bytes"):
        [part async for part in iter_parts(stream(data), B, max_header_size=50)]
    assert len([part async for part in iter_parts(stream(data), B, max_header_size=200)]) == 1


async def test_endless_transport_padding() -> None:
    data = b"--b0und4ry" + b" " * 5000 + b"\r\n\r\nx\r\n--b0und4ry--"
    with pytest.raises(MultipartError, match="padding"):
        await read_all(data, chunk_size=100)


# --- reader: bounded memory ---------------------------------------------------------------


async def test_memory_stays_bounded_for_a_large_part() -> None:
    mib = 1 << 20
    total = 200 * mib
    block = random.Random(7).randbytes(mib)

    async def body() -> AsyncIterator[bytes]:
        yield part_head(B, "application/dicom")
        for _ in range(total // mib):
            yield block
        yield part_tail() + closing(B)

    received = 0
    tracemalloc.start()
    try:
        async for part in iter_parts(body(), B):
            async for chunk in part:
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == total
    assert peak < 20 * mib
