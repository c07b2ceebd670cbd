"""The thumbnail cache (PACS_THUMBNAIL_CACHE_BYTES) never shows what is no longer there, over
HTTP against a running `pacs serve --overwrite`: each thumbnail is asked for first, so that it
is cached, then the instances change and it is asked for again.

Every image has its own pattern (tests/conformance/test_thumbnail_choice.py's ramps), and
thumbnails are PNG: which image a thumbnail shows is read from its pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.uid import generate_uid

from tests.conformance.helpers import PNG, Stored, open_image, stored, stow_ok, token
from tests.conformance.test_thumbnail_choice import PATTERNS, SIZE
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.server import running_server

LEFT_TO_RIGHT, TOP_TO_BOTTOM, RIGHT_TO_LEFT = range(3)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DICOMweb root of an archive that replaces an instance stored again."""
    data = tmp_path_factory.mktemp("thumbnail-cache")
    with running_server(data, "--overwrite") as url:
        yield f"{url}/dicomweb"


@pytest.mark.parametrize(("budget", "kept"), [(None, True), ("0", False)])
def test_thumbnail_cache_bytes_from_the_environment(
    tmp_path: Path, budget: str | None, kept: bool
) -> None:
    """The cache answers without the stored file once it holds the thumbnail: taking the
    blobs away shows whether it did (the default keeps it, PACS_THUMBNAIL_CACHE_BYTES=0 not)."""
    env = {} if budget is None else {"PACS_THUMBNAIL_CACHE_BYTES": budget}
    with (
        running_server(tmp_path / "data", env=env) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http,
    ):
        instance = _image(LEFT_TO_RIGHT, study=generate_uid(), series=generate_uid())
        stow_ok(http, [instance.data])
        first = http.get(f"{instance.path}/thumbnail", headers={"Accept": PNG})
        assert first.status_code == 200, first.text
        blobs = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
        assert blobs
        for blob in blobs:
            blob.unlink()
        again = http.get(f"{instance.path}/thumbnail", headers={"Accept": PNG})
    if kept:
        assert again.status_code == 200, again.text
        assert again.content == first.content
    else:
        # Drawn again from the file, which is gone: the server's own fault, said as such.
        assert again.status_code == 500, again.text
        assert "missing from storage" in again.text


def _image(
    pattern: int, *, study: str, series: str, number: int = 1, sop: str | None = None
) -> Stored:
    ds = make_dataset(
        study=study,
        series=series,
        sop=sop,
        rows=SIZE,
        columns=SIZE,
        PatientID="THUMBCACHE",
        BitsStored=12,
        HighBit=11,
        SeriesNumber=1,
        InstanceNumber=number,
        PixelData=PATTERNS[pattern]().tobytes(),
    )
    return stored(to_bytes(ds))


def _shown(http: httpx.Client, url: str) -> int:
    """Which pattern the thumbnail at `url` shows."""
    response = http.get(f"{url}/thumbnail", headers={"Accept": PNG})
    assert response.status_code == 200, (url, response.text)
    thumbnail = np.asarray(open_image(response.content, "PNG").convert("L"), dtype=np.float64)
    distances = [float(np.abs(thumbnail - _scaled(p)).mean()) for p in range(len(PATTERNS))]
    best = int(np.argmin(distances))
    assert distances[best] < 8, distances  # a clear match, the others are 40+ levels away
    return best


def _scaled(pattern: int) -> NDArray[np.float64]:
    """The pattern as a 128-pixel thumbnail shows it: the 12-bit range on 0..255, halved."""
    values = PATTERNS[pattern]().astype(np.float64)
    grey = (values - values.min()) * 255 / (values.max() - values.min())
    return grey.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))


def test_series_thumbnail_follows_a_new_instance(archive: str) -> None:
    """The middle of 3 images is number 2; two more make number 3 the middle."""
    study, series = generate_uid(), generate_uid()
    with httpx.Client(base_url=archive, timeout=60) as http:
        first = [
            _image(p, study=study, series=series, number=n)
            for n, p in ((1, LEFT_TO_RIGHT), (2, TOP_TO_BOTTOM), (3, RIGHT_TO_LEFT))
        ]
        stow_ok(http, [i.data for i in first])
        url = f"/studies/{study}/series/{series}"
        assert _shown(http, url) == _shown(http, url) == TOP_TO_BOTTOM
        assert _shown(http, f"/studies/{study}") == TOP_TO_BOTTOM
        more = [_image(LEFT_TO_RIGHT, study=study, series=series, number=n) for n in (4, 5)]
        stow_ok(http, [i.data for i in more])
        assert _shown(http, url) == RIGHT_TO_LEFT
        assert _shown(http, f"/studies/{study}") == RIGHT_TO_LEFT


def test_replaced_instance_shows_its_new_image(archive: str) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    with httpx.Client(base_url=archive, timeout=60) as http:
        before = _image(LEFT_TO_RIGHT, study=study, series=series, sop=sop)
        stow_ok(http, [before.data])
        assert _shown(http, before.path) == LEFT_TO_RIGHT
        assert _shown(http, f"{before.path}/frames/1") == LEFT_TO_RIGHT
        after = _image(TOP_TO_BOTTOM, study=study, series=series, sop=sop)
        stow_ok(http, [after.data])  # --overwrite: the same UIDs, other pixels
        assert _shown(http, after.path) == TOP_TO_BOTTOM
        assert _shown(http, f"{after.path}/frames/1") == TOP_TO_BOTTOM
        assert _shown(http, f"/studies/{study}") == TOP_TO_BOTTOM


def test_tenants_never_see_each_others_thumbnails(archive: str) -> None:
    """The same UIDs in two tenants, with other pixels; a third tenant has none of them."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    tenants = {token().lower(): LEFT_TO_RIGHT, token().lower(): RIGHT_TO_LEFT}
    instance = _image(LEFT_TO_RIGHT, study=study, series=series, sop=sop)
    for tenant, pattern in tenants.items():
        with httpx.Client(base_url=f"{archive}/tenants/{tenant}", timeout=60) as http:
            stowed = _image(pattern, study=study, series=series, sop=sop)
            stow_ok(http, [stowed.data])
    for _ in range(2):  # the second round from the cache
        for tenant, pattern in tenants.items():
            with httpx.Client(base_url=f"{archive}/tenants/{tenant}", timeout=60) as http:
                assert _shown(http, instance.path) == pattern
                assert _shown(http, f"/studies/{study}") == pattern
    with httpx.Client(base_url=f"{archive}/tenants/{token().lower()}", timeout=60) as http:
        for url in (instance.path, f"/studies/{study}"):
            response = http.get(f"{url}/thumbnail", headers={"Accept": PNG})
            assert response.status_code == 404, response.text
