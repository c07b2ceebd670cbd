"""Issue 11: WADO-RS sends stored files under a Content-Length, read and written or, with
PACS_HTTP_SENDFILE, with os.sendfile (app/web/zerocopy.py). The bytes
must be the stored files' bytes, in order, also when the client reads slowly (the socket
fills and the server waits for it), and a stored file whose size changed since ingest is an
error, never a body that silently disagrees with its Content-Length headers.
"""

from __future__ import annotations

import hashlib
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import media_params, parse_multipart, split_multipart, stow_ok
from tests.support.dicom_factory import make_file
from tests.support.server import running_server

STUDY_ACCEPT = 'multipart/related; type="application/dicom"'


@pytest.fixture(scope="module", params=["true", "false"], ids=["sendfile", "read"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A server sending stored files with sendfile (PACS_HTTP_SENDFILE), or reading them."""
    data = tmp_path_factory.mktemp("zero-copy")
    with running_server(data, env={"PACS_HTTP_SENDFILE": request.param}) as url:
        yield url, data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stored_files(data: Path) -> dict[str, Path]:
    """The blob files on disk by the SHA-256 of their bytes."""
    return {
        _sha(p.read_bytes()): p
        for p in (data / "blobs").rglob("*")
        if p.is_file() and ".quarantine" not in p.parts
    }


def _slow_get(url: str, path: str) -> tuple[dict[str, str], bytes]:
    """GET with a small receive buffer, read a little at a time: the server's socket fills
    and each sendfile must wait for room."""
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {STUDY_ACCEPT}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        received = bytearray()
        while chunk := sock.recv(4096):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    assert status.startswith("HTTP/1.1 200"), status
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return headers, body


def test_a_study_is_sent_byte_for_byte_from_the_stored_files(served: tuple[str, Path]) -> None:
    url, data = served
    study = generate_uid()
    # Sizes from a few KB to 3 MB: more than a socket buffer holds.
    shapes = [(16, 16), (1024, 1536), (256, 256), (512, 512)]
    files = [
        make_file(study=study, series=generate_uid(), rows=r, columns=c, InstanceNumber=i)
        for i, (r, c) in enumerate(shapes)
    ]
    with httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http:
        stow_ok(http, files)
        head = http.head(f"/studies/{study}", headers={"Accept": STUDY_ACCEPT})
    on_disk = _stored_files(data)
    sent = {_sha(f) for f in files}
    assert sent <= set(on_disk), "the stored files are the files sent"

    headers, body = _slow_get(url, f"/dicomweb/studies/{study}")
    assert int(headers["content-length"]) == len(body)
    _, params = media_params(headers["content-type"])
    parts = split_multipart(body, params["boundary"])
    assert sorted(_sha(p.content) for p in parts) == sorted(sent)
    # The access log counts the bytes sent from files too.
    assert _logged(data / "server.log", f"GET /dicomweb/studies/{{study}} 200 {len(body)} B")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(body)

    with httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http:
        one = http.get(
            f"/studies/{study}/series/{_series(files[1])}/instances/{_sop(files[1])}",
            headers={"Accept": "application/dicom"},
        )
    assert one.status_code == 200
    assert _sha(one.content) == _sha(files[1]) and one.headers["etag"] == f'"{_sha(files[1])}"'


def _logged(log: Path, line: str) -> bool:
    """Whether `line` appears in the server's log (written as the request ends)."""
    deadline = time.monotonic() + 5
    while line not in log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _series(file: bytes) -> str:
    return _attr(file, "SeriesInstanceUID")


def _sop(file: bytes) -> str:
    return _attr(file, "SOPInstanceUID")


def _attr(file: bytes, keyword: str) -> str:
    return str(pydicom.dcmread(io.BytesIO(file), stop_before_pixels=True).get(keyword))


def test_a_stored_file_whose_size_changed_is_an_error_not_a_corrupt_body(
    served: tuple[str, Path],
) -> None:
    # Before: the file's bytes were streamed as they were, under the part headers' recorded
    # Content-Length: a body that parsed wrong, answered 200 in full.
    url, data = served
    study, series = generate_uid(), generate_uid()
    files = [make_file(study=study, series=series, InstanceNumber=i) for i in (1, 2)]
    with httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http:
        stow_ok(http, files)
        order = [_sha(p.content) for p in parse_multipart(
            http.get(f"/studies/{study}", headers={"Accept": STUDY_ACCEPT})
        )]  # fmt: skip
        on_disk = _stored_files(data)
        first, second = (on_disk[sha] for sha in order)

        with second.open("ab") as grown:  # the second part's file: after the 200 went out
            grown.write(b"\0" * 10)
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/studies/{study}", headers={"Accept": STUDY_ACCEPT})

        first.write_bytes(first.read_bytes()[:-10])  # the first part's file: before it
        refused = http.get(f"/studies/{study}", headers={"Accept": STUDY_ACCEPT})
        assert refused.status_code == 500
        assert "not the" in refused.text and "recorded when it was stored" in refused.text
        shrunk = next(f for f in files if _sha(f) == order[0])
        single = http.get(
            f"/studies/{study}/series/{series}/instances/{_sop(shrunk)}",
            headers={"Accept": "application/dicom"},
        )
        assert single.status_code == 500 and "recorded when it was stored" in single.text
