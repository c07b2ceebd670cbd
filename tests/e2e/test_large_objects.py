"""A large instance streams through STOW-RS and WADO-RS with bounded server memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.large import LargeInstance, frame_value
from tests.support.server import peak_rss_bytes, running_server

# 640 frames of 512 KiB: a 320 MiB instance. The server must not hold it.
FRAMES = 640
MEMORY_LIMIT = 160 * 1024 * 1024


def _multipart(instance: LargeInstance, boundary: str) -> Iterator[bytes]:
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    yield from instance.chunks()
    yield f"\r\n--{boundary}--\r\n".encode()


def test_large_instance_streams_in_and_out_with_bounded_memory(tmp_path: Path) -> None:
    instance = LargeInstance(FRAMES)
    ds = instance.dataset
    with running_server(tmp_path / "data") as url, httpx.Client(timeout=300) as client:
        base = f"{url}/dicomweb"
        response = client.post(
            f"{base}/studies",
            content=_multipart(instance, "LARGE"),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=LARGE'},
        )
        assert response.status_code == 200, response.text

        instance_url = (
            f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        # Whole-instance download, streamed: every byte hashed as it arrives (the test holds
        # one chunk at a time) and compared with the hash of the bytes sent.
        received, digest = 0, hashlib.sha256()
        with client.stream("GET", instance_url, headers={"Accept": "application/dicom"}) as r:
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == instance.size
            for chunk in r.iter_bytes():
                digest.update(chunk)
                received += len(chunk)
        assert received == instance.size
        assert digest.hexdigest() == instance.sha256(), "the body differs from what was stored"

        for number in (1, 333, FRAMES):
            frame = client.get(
                f"{instance_url}/frames/{number}",
                headers={"Accept": "application/octet-stream"},
            )
            assert frame.status_code == 200, frame.text
            assert frame.content == bytes([frame_value(number)]) * instance.frame_size

        peak = peak_rss_bytes(url)
    assert peak < MEMORY_LIMIT, f"server peak RSS {peak / 2**20:.0f} MiB"
    assert not list((tmp_path / "data" / "tmp").iterdir())
