"""The OHIF viewer signs in to the archive through a real OpenID Provider, in headless Chromium.

The archive requires bearer tokens of the provider (tests/support/oidc.py: oidc-provider),
and the CT study of test_ohif.py is stored with a service's token (client credentials,
pacs:write). The viewer is configured with OHIF's `oidc` setting: a public client using the
authorization code flow with PKCE and the scope `openid profile pacs:read`. The driver
(tests/e2e/ohif/drive.mjs) opens the study list, is sent to the provider's login page, signs
in as a user, comes back through the viewer's /callback, and then sees the study list and
the image as in test_ohif.py: every archive request carried the user's access token and
none failed. The same viewer without the `oidc` setting, against the same archive, gets 401
for every request and shows no patient's name and no image.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.multipart import encode_multipart
from tests.e2e.test_ohif import BLANK, BRIGHTER, PROBES, STEP_S, Session, Study, native_ct
from tests.support.browser import ROOT, Tools, app_config, find_tools, run_driver, serve_viewer
from tests.support.oidc import (
    SERVICE,
    Account,
    Client,
    OpenIdProvider,
    default_clients,
    running_provider,
)
from tests.support.server import free_port, running_server

ARTIFACTS = ROOT / "test-artifacts" / "ohif-signin"
BUDGET_S = 120
# Without sign-in nothing is to be shown: how long the driver looks for it anyway.
ANONYMOUS_STEP_S = 15
VIEWER_CLIENT = "ohif-viewer"
USER = Account("radiologist", secrets.token_urlsafe(12), name="Ada Radiologist")
STEPS = ("study-list", "ct-native")


@dataclass(frozen=True)
class Run:
    provider: OpenIdProvider
    archive: str
    study: Study
    signed_in: Session  # the viewer with sign-in
    anonymous: Session  # the viewer without


def drive(
    tools: Tools, viewer: str, archive: str, study: Study, *, name: str, step_s: int, **extra: Any
) -> dict[str, Any]:
    """Run drive.mjs on the viewer at `viewer` for `study`; its report, also kept (with the
    screenshots) in test-artifacts/ohif-signin/`name`."""
    report = run_driver(
        tools,
        "drive.mjs",
        {
            "viewerUrl": viewer,
            "archiveOrigin": archive,
            "artifacts": str(ARTIFACTS / name),
            "stepMs": step_s * 1000,
            "budgetMs": BUDGET_S * 1000,
            "blank": BLANK,
            "probes": PROBES,
            "studies": [
                {"key": study.key, "studyInstanceUID": study.uid, "shownName": study.shown_name}
            ],
            **extra,
        },
        timeout=BUDGET_S + 3 * step_s,
    )
    (ARTIFACTS / name / "driver.log").write_text(str(report.pop("log")))
    (ARTIFACTS / name / "report.json").write_text(json.dumps(report, indent=2))
    return report


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tools = find_tools()
    study = native_ct()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    # The provider must know the viewer's redirect URIs, and the viewer's configuration the
    # provider and the archive, which needs the provider running: the viewer's port first.
    viewer_port = free_port()
    viewer_origin = f"http://127.0.0.1:{viewer_port}"
    viewer_client = Client(
        VIEWER_CLIENT,
        secret=None,  # a browser application: public, with PKCE
        grant_types=("authorization_code",),
        redirect_uris=(f"{viewer_origin}/callback", f"{viewer_origin}/silent-refresh.html"),
        scopes=("pacs:read",),
        test_claims=False,
    )
    directory = tmp_path_factory.mktemp("ohif-signin")
    with (
        running_provider(directory / "oidc", [*default_clients(), viewer_client], [USER]) as op,
        running_server(directory / "archive", env=op.archive_env()) as archive,
    ):
        content_type, body = encode_multipart(list(study.files))
        response = httpx.post(
            f"{archive}/dicomweb/studies",
            content=body,
            headers={
                "Content-Type": content_type,
                "Authorization": f"Bearer {op.token(SERVICE, ['pacs:write'])}",
            },
            timeout=60,
        )
        assert response.status_code == 200, f"STOW: {response.status_code} {response.text}"
        oidc = {
            "authority": op.issuer,
            "client_id": VIEWER_CLIENT,
            "redirect_uri": "/callback",
            "response_type": "code",
            "scope": "openid profile pacs:read",
            "post_logout_redirect_uri": "/",
        }
        config = app_config(f"{archive}/dicomweb", oidc)
        with serve_viewer(tools.dist, config, viewer_port) as viewer:
            login = {"providerOrigin": op.issuer, "username": USER.username}
            signed_in = drive(
                tools,
                viewer,
                archive,
                study,
                name="signed-in",
                step_s=STEP_S,
                login={**login, "password": USER.password},
            )
        with serve_viewer(tools.dist, app_config(f"{archive}/dicomweb")) as plain:
            anonymous = drive(
                tools, plain, archive, study, name="anonymous", step_s=ANONYMOUS_STEP_S
            )
        yield Run(
            op,
            archive,
            study,
            Session(archive, viewer, (study,), signed_in),
            Session(archive, plain, (study,), anonymous),
        )


# --- signed in -----------------------------------------------------------------------------


def test_viewer_signs_in_on_the_providers_login_page(run: Run) -> None:
    sign_in = run.signed_in.report["signIn"]
    assert sign_in is not None and "error" not in sign_in, (
        f"{sign_in}; see signed-in/sign-in.png and study-list-error.png"
    )
    assert sign_in["loginPage"].startswith(f"{run.provider.issuer}/interaction/")
    assert sign_in["returnedTo"].startswith(f"{run.signed_in.viewer}/")


def test_viewer_sends_the_users_access_token(run: Run) -> None:
    claims = run.signed_in.report["bearerClaims"]
    assert claims, "no archive request carried a bearer token"
    for seen in claims:
        assert seen["iss"] == run.provider.issuer, seen
        assert seen["aud"] == run.provider.audience, seen
        assert seen["sub"] == USER.username, seen
        assert seen["clientId"] == VIEWER_CLIENT, seen
        assert seen["scope"].split() == ["pacs:read"], seen


@pytest.mark.parametrize("step", STEPS)
def test_every_archive_request_carries_a_bearer_token(run: Run, step: str) -> None:
    responses = run.signed_in.responses(step)
    assert responses, f"{step}: no request reached the archive"
    without = [f"{r['method']} {r['url']}" for r in responses if not r["bearer"]]
    assert without == [], f"{step}: requests without a bearer token:\n" + "\n".join(without)


@pytest.mark.parametrize("step", STEPS)
def test_no_archive_request_failed_once_signed_in(run: Run, step: str) -> None:
    failures = run.signed_in.failures(step)
    assert not failures, f"{step}: archive requests failed:\n" + "\n".join(failures)


def test_signed_in_study_list_shows_the_study(run: Run) -> None:
    listed = run.signed_in.step("study-list")
    assert listed["found"] == [run.study.shown_name], listed
    (row,) = listed["rows"]
    assert row[0] == run.study.shown_name and run.study.modality in row, row


def test_signed_in_viewport_shows_the_image(run: Run) -> None:
    seen = run.signed_in.step(run.study.key)
    stats = seen["stats"]
    context = f"{stats}; see signed-in/viewer-{run.study.key}.png"
    assert "error" not in stats, context
    assert stats["stddev"] >= BLANK["minStddev"], context
    assert stats["levels"] >= BLANK["minLevels"], context
    for bright, dark in BRIGHTER:
        assert stats["probes"][bright] >= stats["probes"][dark] + 10, context


@pytest.mark.parametrize("step", STEPS)
def test_no_script_error_once_signed_in(run: Run, step: str) -> None:
    errors = run.signed_in.errors(step)
    assert not errors, f"{step}: errors in the page:\n" + "\n".join(errors)


# --- not signed in -------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_without_sign_in_the_archive_answers_401(run: Run, step: str) -> None:
    responses = run.anonymous.responses(step)
    assert responses, f"{step}: the viewer asked the archive nothing"
    for response in responses:
        assert not response["bearer"], response
        assert response["status"] == 401, response
        assert response["allowOrigin"] in ("*", run.anonymous.viewer), response


def test_without_sign_in_no_patient_is_listed(run: Run) -> None:
    listed = run.anonymous.report["studyList"]
    assert "error" not in listed, listed
    assert listed["found"] == [], listed
    cells = [cell for row in listed["rows"] for cell in row]
    assert not [c for c in cells if run.study.family in c], listed["rows"]


def test_without_sign_in_no_image_is_shown(run: Run) -> None:
    seen = run.anonymous.report["studies"][run.study.key]
    stats = seen.get("stats") or {}
    assert "error" in seen or "error" in stats or stats["stddev"] < BLANK["minStddev"], (
        f"{seen}; see anonymous/viewer-{run.study.key}.png"
    )
    assert run.study.family not in seen.get("overlay", ""), seen


def test_the_archive_serves_the_study_to_the_users_token_only(run: Run) -> None:
    """The same check without a browser: the user's kind of token reads, none does not."""
    url = f"{run.archive}/dicomweb/studies?StudyInstanceUID={run.study.uid}"
    token = run.provider.token(SERVICE, ["pacs:read"])
    with httpx.Client(timeout=30) as http:
        anonymous = http.get(url)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert run.study.family not in anonymous.text
        signed = http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert signed.status_code == 200, signed.text
        assert run.study.family in signed.text
