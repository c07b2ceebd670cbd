"""Hypothesis strategies for STOW-RS requests: malformed multipart bodies (boundaries,
part headers, part counts, truncation, line endings) carrying damaged DICOM files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.fuzz.strategies import SPECIAL_VALUES, TRANSFER_SYNTAXES
from tests.support.dicom_factory import make_file

_TS_TAG = b"\x02\x00\x10\x00UI"  # (0002,0010) TransferSyntaxUID, explicit VR little endian


@dataclass
class StowRequest:
    content_type: str
    body: bytes
    chunks: tuple[int, ...] | None  # chunk sizes of a chunked upload; None: Content-Length

    def content(self) -> bytes | Iterator[bytes]:
        if self.chunks is None:
            return self.body
        return _chunked(self.body, self.chunks)

    def __repr__(self) -> str:  # hypothesis prints the falsifying example with it
        head = self.body[:300]
        return (
            f"StowRequest(content_type={self.content_type!r}, {len(self.body)} bytes, "
            f"chunks={self.chunks!r}, body starts {head!r})"
        )


def _chunked(body: bytes, sizes: tuple[int, ...]) -> Iterator[bytes]:
    at = 0
    for size in sizes:
        if at >= len(body):
            return
        yield body[at : at + size]
        at += size
    if at < len(body):
        yield body[at:]


def with_transfer_syntax(data: bytes, syntax: str) -> bytes:
    """`data` with another TransferSyntaxUID (same length of the meta group fixed up)."""
    at = data.find(_TS_TAG)
    if at < 0:
        return data
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    value = syntax.encode() + (b"\0" if len(syntax) % 2 else b"")
    new = data[: at + 6] + len(value).to_bytes(2, "little") + value + data[at + 8 + length :]
    # (0002,0000) FileMetaInformationGroupLength, the first element after the preamble.
    group = int.from_bytes(data[140:144], "little") + len(value) - length
    return new[:140] + group.to_bytes(4, "little") + new[144:]


def _fresh_uid() -> str:
    """A new UID of fixed length: hypothesis needs a file of the same size for the same
    choices (the damage is drawn within it)."""
    return f"2.25.1{uuid.uuid4().int:039d}"


@st.composite
def dicom_file(draw: st.DrawFn) -> bytes:
    """A small CT instance with fresh UIDs, often damaged."""
    study = draw(st.sampled_from([None, "1.2.3", "1.2.3.4"]))  # shared studies, sometimes
    data = make_file(
        study=study or _fresh_uid(),
        series=_fresh_uid(),
        sop=_fresh_uid(),
        rows=draw(st.sampled_from([1, 2, 8])),
        columns=draw(st.sampled_from([1, 3, 8])),
        frames=draw(st.sampled_from([1, 1, 2])),
        PatientID=draw(st.sampled_from(["A", "B", "TEST-ID"])),
    )
    damage = draw(
        st.sampled_from(["none", "none", "bytes", "truncate", "syntax", "insert", "header"])
    )
    if damage == "syntax":
        return with_transfer_syntax(data, draw(st.sampled_from(TRANSFER_SYNTAXES)))
    if damage == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if damage == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if damage in ("bytes", "header"):
        # "header": the file meta and the first elements, where lengths and VRs live.
        end = min(len(data), 600) if damage == "header" else len(data)
        buffer = bytearray(data)
        for at, value in draw(
            st.lists(st.tuples(st.integers(0, end - 1), st.integers(0, 255)), max_size=8)
        ):
            buffer[at] = value
        return bytes(buffer)
    return data


BOUNDARY = st.one_of(
    st.just("BOUNDARY"),
    st.builds(lambda: uuid.uuid4().hex),
    st.builds(lambda: f"{uuid.uuid4()}-{uuid.uuid4()}"),  # Orthanc: 73 characters
    st.sampled_from(
        ["x" * 70, "x" * 256, "x" * 257, "a b", "a ", " ", "-", "--", "é", "\u00ff" * 3]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
)

_PART_HEADERS = st.one_of(
    st.just(["Content-Type: application/dicom"]),
    st.just([]),
    st.lists(
        st.sampled_from(
            [
                "Content-Type: application/dicom",
                "Content-Type: application/dicom+json",
                "Content-Type: APPLICATION/DICOM; transfer-syntax=1.2.3",
                "Content-Type: text/plain",
                "Content-Type:",
                "Content-Length: 5",
                "Content-Location: x",
                " folded continuation",
                "no colon here",
                ": no name",
                "X-\u00e9: \u00ff",
                "X-Long: " + "y" * 20000,
            ]
        ),
        max_size=4,
    ),
)


@st.composite
def _part(draw: st.DrawFn, newline: str) -> bytes:
    headers = draw(_PART_HEADERS)
    head = "".join(h + newline for h in headers) + newline
    kind = draw(st.sampled_from(["dicom", "dicom", "empty", "junk", "special"]))
    if kind == "dicom":
        body = draw(dicom_file())
    elif kind == "empty":
        body = b""
    elif kind == "junk":
        body = draw(st.binary(max_size=200))
    else:
        body = draw(st.sampled_from(SPECIAL_VALUES)).encode()
    return head.encode("utf-8") + body


_PARTS = {newline: st.lists(_part(newline), max_size=6) for newline in ("\r\n", "\n")}


@st.composite
def stow_request(draw: st.DrawFn) -> StowRequest:
    boundary = draw(BOUNDARY)
    declared = draw(st.one_of(st.just(boundary), BOUNDARY))
    newline = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    if draw(st.integers(0, 9)) == 0:  # many empty parts at once
        parts = [newline.encode()] * draw(st.integers(100, 3000))
    else:
        parts = draw(_PARTS[newline])
    delimiter = f"{newline}--{boundary}{newline}".encode()
    body = draw(st.sampled_from([b"", b"preamble" + newline.encode()]))
    body += f"--{boundary}{newline}".encode() if parts else b""
    body += delimiter.join(parts)
    if draw(st.booleans()) or not parts:
        body += f"{newline}--{boundary}--{newline}".encode()
    body += draw(st.sampled_from([b"", b"epilogue", b"\r\n--" + boundary.encode("utf-8")]))
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    content_type = draw(
        st.sampled_from(
            [
                'multipart/related; type="application/dicom"; boundary="{b}"',
                "multipart/related; type=application/dicom; boundary={b}",
                "multipart/related; boundary={b}",
                'Multipart/Related; boundary="{b}"; type="application/dicom"; start=x',
                'multipart/related; type="application/dicom+json"; boundary={b}',
                "multipart/related; type=application/dicom",
                "multipart/related; boundary=",
                "multipart/form-data; boundary={b}",
                "application/dicom",
                "",
                "text/plain",
            ]
        )
    ).replace("{b}", declared.replace('"', '\\"'))
    if content_type == "application/dicom":
        body = draw(dicom_file())
    chunked = draw(st.booleans())
    sizes = tuple(draw(st.lists(st.integers(1, 4096), max_size=5))) if chunked else None
    return StowRequest(content_type, body, sizes)
