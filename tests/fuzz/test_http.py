"""Generated requests against a live server on each index backend (issue 10).

Every target runs for the suite's time budget (tests/fuzz/budget.py) and checks the
properties of tests/fuzz/live.py on every answer: no 5xx, no hang, no answer that breaks off
or a multipart answer without its close delimiter; afterwards /health answers at once and the
server logged no error. Inputs that once found a bug stay as `@example`s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from tests.conformance.helpers import Stored
from tests.fuzz.budget import Figures, batch_settings, spend
from tests.fuzz.live import Live, Served
from tests.fuzz.stow_bodies import StowRequest, stow_request
from tests.fuzz.strategies import (
    ACCEPT,
    HOSTILE_TEXT,
    INTEGER_TEXT,
    KNOWN_KEYS,
    QUERY_KEY,
    UID_TEXT,
    frame_list,
)

Params = list[tuple[str, str]]
Request = tuple[str, Params, dict[str, bytes]]


def _live(archive: Served, target: str) -> Live:
    return Live(archive, Figures(f"{target} ({archive.backend})"))


def _pick(draw: st.DrawFn, items: list[str]) -> str:
    """One of `items`: cheaper than building a sampled_from strategy for each example."""
    return items[draw(st.integers(0, len(items) - 1))]


def _segment(text: str) -> str:
    return quote(text, safe="")


def _uids(draw: st.DrawFn, sample: Stored) -> tuple[str, str, str]:
    """The sample's UIDs, one of them sometimes replaced by a hostile path segment."""
    uids = [sample.study, sample.series, sample.sop]
    if draw(st.integers(0, 3)) == 0:
        uids[draw(st.integers(0, 2))] = draw(UID_TEXT)
    study, series, sop = (_segment(u) for u in uids)
    return study, series, sop


def _headers(draw: st.DrawFn) -> dict[str, bytes]:
    accept = draw(st.none() | ACCEPT)
    # What can be sent at all: h11 refuses surrounding whitespace.
    return {} if accept is None else {"Accept": accept.strip(" \t").encode("latin-1")}


# -- QIDO-RS -------------------------------------------------------------------------------


_QIDO_PAIRS = st.lists(st.tuples(QUERY_KEY, st.none() | HOSTILE_TEXT), max_size=6)
_INCLUDE_FIELDS = st.lists(
    st.one_of(st.sampled_from([*KNOWN_KEYS, "all", "ALL"]), HOSTILE_TEXT), min_size=1, max_size=4
)


@st.composite
def qido_request(draw: st.DrawFn, samples: list[Stored]) -> Request:
    sample = draw(st.sampled_from(samples))
    study, series, _ = _uids(draw, sample)
    path = _pick(
        draw,
        [
            "/studies",
            "/series",
            "/instances",
            f"/studies/{study}/series",
            f"/studies/{study}/instances",
            f"/studies/{study}/series/{series}/instances",
        ],
    )
    known = ["CT", "MR", "OT", sample.study, sample.series, "19*", "2000-2030"]
    params: Params = [
        (key, _pick(draw, known) if value is None else value) for key, value in draw(_QIDO_PAIRS)
    ]
    if draw(st.booleans()):
        params.append(("includefield", ",".join(draw(_INCLUDE_FIELDS))))
    for name in ("limit", "offset", "fuzzymatching"):
        if draw(st.integers(0, 2)) == 0:
            params.append((name, draw(st.one_of(INTEGER_TEXT, HOSTILE_TEXT, st.just("true")))))
    return path, params, _headers(draw)


# -- WADO-RS ---------------------------------------------------------------------------------


_BULK_PATHS = st.one_of(
    st.sampled_from(["7FE00010", "00280010", "7FE00010/1", "x/y/z"]), HOSTILE_TEXT
)
_FRAMES = frame_list(10)


@st.composite
def wado_request(draw: st.DrawFn, samples: list[Stored]) -> Request:
    sample = draw(st.sampled_from(samples))
    study, series, sop = _uids(draw, sample)
    instance = f"/studies/{study}/series/{series}/instances/{sop}"
    frames = _segment(draw(_FRAMES))
    bulk = draw(_BULK_PATHS)
    path = _pick(
        draw,
        [
            f"/studies/{study}",
            f"/studies/{study}/metadata",
            f"/studies/{study}/series/{series}",
            f"/studies/{study}/series/{series}/metadata",
            instance,
            f"{instance}/metadata",
            f"{instance}/frames/{frames}",
            f"{instance}/frames/{frames}",
            f"{instance}/bulkdata/{quote(bulk, safe='/')}",
        ],
    )
    return path, draw(_EXTRA), _headers(draw)


# -- rendered and thumbnails -----------------------------------------------------------------

_SMALL = st.integers(-2, 600).map(str)
_NUMBER = st.one_of(_SMALL, INTEGER_TEXT, st.just(""))
_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str), _NUMBER, st.just("1e308")
)


_VIEWPORT = st.lists(_NUMBER, min_size=1, max_size=7)
_WINDOW = st.lists(_FLOAT, min_size=1, max_size=3)
_QUALITY = st.one_of(st.integers(-5, 120).map(str), HOSTILE_TEXT)
_ANNOTATION = st.lists(
    st.sampled_from(["patient", "technique", "PATIENT", "", "x"]), min_size=1, max_size=3
)
_EXTRA = st.lists(st.tuples(QUERY_KEY, HOSTILE_TEXT), max_size=2)


@st.composite
def _render_params(draw: st.DrawFn) -> Params:
    params: Params = []
    if draw(st.booleans()):
        params.append(("viewport", ",".join(draw(_VIEWPORT))))
    if draw(st.booleans()):
        parts = draw(_WINDOW)
        if draw(st.booleans()):
            parts.append(_pick(draw, ["linear", "LINEAR_EXACT", "sigmoid", "x", ""]))
        params.append(("window", ",".join(parts)))
    if draw(st.booleans()):
        params.append(("quality", draw(_QUALITY)))
    if draw(st.integers(0, 2)) == 0:
        params.append(("annotation", ",".join(draw(_ANNOTATION))))
    if draw(st.integers(0, 3)) == 0:
        icc = ["no", "yes", "srgb", "adobergb", "rommrgb", "displayp3", "x"]
        params.append(("iccprofile", _pick(draw, icc)))
    return params + draw(_EXTRA)


@st.composite
def rendered_request(draw: st.DrawFn, samples: list[Stored]) -> Request:
    sample = draw(st.sampled_from(samples))
    study, series, sop = _uids(draw, sample)
    instance = f"/studies/{study}/series/{series}/instances/{sop}"
    frames = _segment(draw(_FRAMES))
    kind = draw(st.sampled_from(["rendered", "thumbnail"]))
    path = _pick(
        draw,
        [
            f"/studies/{study}/{kind}",
            f"/studies/{study}/series/{series}/{kind}",
            f"{instance}/{kind}",
            f"{instance}/frames/{frames}/{kind}",
        ],
    )
    return path, draw(_render_params()), _headers(draw)


# -- WADO-URI ----------------------------------------------------------------------------------

_WADO_URI_VALUES: dict[str, st.SearchStrategy[str]] = {
    "contentType": st.one_of(
        st.sampled_from(["application/dicom", "image/jpeg", "image/png", "image/gif"]),
        ACCEPT,
    ),
    "transferSyntax": st.one_of(st.sampled_from(["1.2.840.10008.1.2.1", "1.2.3.4.5"]), UID_TEXT),
    "frameNumber": _NUMBER,
    "rows": _NUMBER,
    "columns": _NUMBER,
    "windowCenter": _FLOAT,
    "windowWidth": _FLOAT,
    "imageQuality": _NUMBER,
    "region": st.lists(_FLOAT, max_size=5).map(",".join),
    "annotation": st.sampled_from(["patient", "technique", "patient,technique", "x", ""]),
    "anonymize": st.sampled_from(["yes", "no", ""]),
    "charset": HOSTILE_TEXT,
}


@st.composite
def wado_uri_request(draw: st.DrawFn, samples: list[Stored]) -> Request:
    sample = draw(st.sampled_from(samples))
    uids = dict(zip(("studyUID", "seriesUID", "objectUID"), _uids(draw, sample), strict=True))
    params: Params = [("requestType", _pick(draw, ["WADO", "WADO", "wado", ""]))]
    params += [
        (name, value.replace("%2E", ".")) for name, value in uids.items() if draw(st.integers(0, 9))
    ]
    for name, values in _WADO_URI_VALUES.items():
        if draw(st.integers(0, 3)) == 0:
            params.append((name, draw(values)))
    params += draw(_EXTRA)
    return "/wado", draw(st.permutations(params)), {}


# -- the targets -------------------------------------------------------------------------------

# Inputs that found a bug, replayed by every batch.
QIDO_REGRESSIONS: tuple[Request, ...] = (
    # IssuerOfPatientID has a column in the patient table only, not joined: a 500.
    ("/studies", [("00100021", "0")], {}),
    ("/instances", [("IssuerOfPatientID", "X*")], {}),
)


def _examples(requests: tuple[Request, ...]) -> Callable[[Callable[..., None]], Any]:
    def decorate(test: Callable[..., None]) -> Any:
        for request in requests:
            test = example(request)(test)
        return test

    return decorate


def _get_target(
    archive: Served,
    target: str,
    strategy: st.SearchStrategy[Request],
    regressions: tuple[Request, ...] = (),
) -> Live:
    live = _live(archive, target)
    with live.client() as client:

        @given(strategy)
        @batch_settings()
        @_examples(regressions)
        def batch(request: Request) -> None:
            live.figures.examples += 1
            path, params, headers = request
            live.request(client, "GET", path, params=params, headers=headers)

        spend(live.figures, batch)
    live.check_after()
    return live


def test_qido_rs_answers_every_query_without_a_server_error(archive: Served) -> None:
    _get_target(archive, "QIDO-RS", qido_request(archive.samples), QIDO_REGRESSIONS)


def test_wado_rs_answers_every_path_and_accept_header_without_a_server_error(
    archive: Served,
) -> None:
    _get_target(archive, "WADO-RS", wado_request(archive.samples))


def test_rendered_and_thumbnails_answer_every_parameter_without_a_server_error(
    archive: Served,
) -> None:
    _get_target(archive, "rendered", rendered_request(archive.samples))


def _wado_uri_regressions(sample: Stored) -> tuple[Request, ...]:
    uids = [("studyUID", sample.study), ("seriesUID", sample.series), ("objectUID", sample.sop)]
    return (
        # Unknown parameter names were echoed into the Warning header: one outside Latin-1
        # was a 500, one with a control character an answer the server could not send.
        ("/wado", [("requestType", "WADO"), *uids, ("\u0661", "")], {}),
        (
            "/wado",
            [("requestType", "WADO"), *uids, ("contentType", "image/png"), ("a\x01", "")],
            {},
        ),
    )


def test_wado_uri_answers_every_parameter_without_a_server_error(archive: Served) -> None:
    regressions = _wado_uri_regressions(archive.samples[0])
    _get_target(archive, "WADO-URI", wado_uri_request(archive.samples), regressions)


def _check_stow_answer(live: Live, client: httpx.Client, body: dict[str, Any]) -> None:
    """Every failure has a reason, and every instance said to be stored can be retrieved
    (its metadata: pixel data of a damaged file may rightly be unservable)."""
    for item in body.get("00081198", {}).get("Value", []):
        assert item["00081197"]["Value"], item
    for item in body.get("00081199", {}).get("Value", []):
        (url,) = item["00081190"]["Value"]
        response = live.request(client, "GET", f"{url}/metadata")
        assert response.status_code == 200, f"stored, yet {response.status_code}: {url}"


def test_stow_rs_answers_every_body_without_a_server_error(archive: Served) -> None:
    live = _live(archive, "STOW-RS")
    with live.client() as client:

        @given(stow_request())
        @batch_settings()
        def batch(request: StowRequest) -> None:
            live.figures.examples += 1
            headers = {"Content-Type": request.content_type.strip(" \t").encode("utf-8")}
            response = live.request(
                client, "POST", "/studies", headers=headers, content=request.content()
            )
            if response.status_code in (200, 202, 409):
                _check_stow_answer(live, client, orjson.loads(response.content))

        spend(live.figures, batch)
    live.check_after()
