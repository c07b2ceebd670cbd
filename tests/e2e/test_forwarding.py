"""Forwarding rules end to end (issue 12): a running `pacs serve` with a rules file sends
each stable CT study, and nothing else, to a DCMTK storescp that accepts only uncompressed
syntaxes (the study's JPEG 2000 series transcoded on the way, pixel for pixel) and to a
second archive over STOW-RS; a destination that refuses every instance fails its job with
the reason, and the admin API queues it again."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, MRImageStorage, generate_uid

from tests.conformance.helpers import stow_ok
from tests.support.dcmtk import require_dcmtk, storescp
from tests.support.dicom_factory import make_dataset, to_bytes
from tests.support.oidc import SERVICE, OpenIdProvider
from tests.support.server import PIDS, free_port, running_server

UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
SIZE = 32  # JPEG 2000 needs more than 8 x 8 pixels for its resolution levels
FAST = {
    "PACS_STABLE_AFTER": "1",
    "PACS_STABLE_SCAN_MS": "100",
    "PACS_OUTBOX_POLL_MS": "100",
    "PACS_FORWARD_POLL_MS": "100",
}


def ct_study() -> list[Dataset]:
    """Two CT series of one study: one stored uncompressed, one as JPEG 2000 lossless."""
    study = generate_uid()
    plain, j2k = generate_uid(), generate_uid()
    images = [
        make_dataset(study=study, series=plain, rows=SIZE, columns=SIZE, seed=n, InstanceNumber=n)
        for n in (1, 2)
    ]
    for n in (1, 2):
        ds = make_dataset(
            study=study, series=j2k, rows=SIZE, columns=SIZE, seed=10 + n, InstanceNumber=n,
            SeriesNumber=2,
        )  # fmt: skip
        ds.BitsStored, ds.HighBit = 12, 11  # what the random 0..4095 values need
        images.append(ds)
    return images


def encoded(ds: Dataset) -> bytes:
    """The PS3.10 file of `ds`; JPEG 2000 lossless for the second series."""
    if ds.SeriesNumber != 2:
        return to_bytes(ds)
    copy = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    copy.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    buffer = io.BytesIO()
    copy.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def wait_for(what: str, found: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_stable_ct_study_goes_to_storescp_decompressed_and_to_an_archive(
    tmp_path: Path,
) -> None:
    require_dcmtk()
    ct = ct_study()
    mr = make_dataset(SOPClassUID=MRImageStorage, Modality="MR")
    study = ct[0].StudyInstanceUID
    with (
        storescp(tmp_path / "received", syntaxes="+xe") as scp,
        running_server(tmp_path / "second") as second,
    ):
        rules = {
            "rules": [
                {
                    "name": "ct-to-scp",
                    "event": "study.stable",
                    "filter": {"Modality": "CT"},
                    "priority": 5,
                    "destination": {
                        "dicom": {"aeTitle": "STORESCP", "host": "127.0.0.1", "port": scp}
                    },
                },
                {
                    "name": "ct-to-archive",
                    "event": "study.stable",
                    "filter": {"Modality": "CT"},
                    "destination": {"stow": {"url": f"{second}/dicomweb/studies"}},
                },
                {
                    # STOW-RS to another study's URL: every instance is refused (409).
                    "name": "ct-refused",
                    "event": "study.stable",
                    "filter": {"Modality": "CT"},
                    "destination": {"stow": {"url": f"{second}/dicomweb/studies/1.2.3"}},
                },
                {
                    # Nobody listens there: retried later, not failed.
                    "name": "ct-unreachable",
                    "event": "study.stable",
                    "filter": {"Modality": "CT"},
                    "destination": {
                        "dicom": {"aeTitle": "GONE", "host": "127.0.0.1", "port": free_port()}
                    },
                },
            ]
        }
        rules_file = tmp_path / "rules.json"
        rules_file.write_text(json.dumps(rules))
        env = {**FAST, "PACS_FORWARDING_RULES": str(rules_file)}
        with (
            running_server(tmp_path / "first", env=env) as first,
            httpx.Client(base_url=f"{first}/dicomweb", timeout=30) as http,
        ):
            stow_ok(http, [encoded(ds) for ds in ct])
            stow_ok(http, [to_bytes(mr)])

            def jobs(state: str | None = None) -> list[dict[str, Any]]:
                params = {"state": state} if state else {}
                response = http.get("/jobs", params=params)
                assert response.status_code == 200, response.text
                listed: list[dict[str, Any]] = response.json()
                return listed

            wait_for("two jobs done", lambda: len(jobs("done")) == 2)
            [failed] = wait_for("a failed job", lambda: jobs("failed"))
            assert failed["rule"] == "ct-refused"
            assert failed["lastError"].startswith("4 of 4 instances refused")
            assert "HTTP 409" in failed["lastError"]
            # Only the CT study made jobs: one per rule.
            assert sorted(j["rule"] for j in jobs()) == [
                "ct-refused", "ct-to-archive", "ct-to-scp", "ct-unreachable"
            ]  # fmt: skip
            [unreachable] = wait_for(
                "a failed attempt", lambda: [j for j in jobs("queued") if j["attempts"]]
            )
            assert unreachable["rule"] == "ct-unreachable"
            assert "cannot connect to GONE@127.0.0.1" in unreachable["lastError"]
            assert {j["studyInstanceUID"] for j in jobs()} == {study}

            # Every CT instance at storescp, uncompressed, with the pixels stored.
            received = {
                str(ds.SOPInstanceUID): ds for ds in map(read, (tmp_path / "received").iterdir())
            }
            assert set(received) == {ds.SOPInstanceUID for ds in ct}
            for original in ct:
                got = received[original.SOPInstanceUID]
                assert got.file_meta.TransferSyntaxUID in UNCOMPRESSED
                expected = np.frombuffer(original.PixelData, np.uint16).reshape(SIZE, SIZE)
                assert np.array_equal(got.pixel_array, expected)

            # And in the second archive, found by QIDO; the MR study nowhere.
            with httpx.Client(base_url=f"{second}/dicomweb", timeout=30) as other:
                found = other.get(f"/studies/{study}/instances")
                assert found.status_code == 200
                assert len(found.json()) == len(ct)
                assert other.get("/studies").json() == [found_study(other, study)]
            # Nor at storescp: only the CT instances came (above).

            # The failed job queued again by an administrator: run again, failed again.
            retried = http.post(f"/jobs/{failed['id']}/retry")
            assert retried.status_code == 200, retried.text
            assert retried.json()["state"] == "queued"
            again = wait_for(
                "the retried job to fail again",
                lambda: [j for j in jobs("failed") if j["updated"] > failed["updated"]],
            )
            assert again[0]["attempts"] == 1
            # Only a failed job can be retried; bad requests are named.
            done = jobs("done")[0]
            assert http.post(f"/jobs/{done['id']}/retry").status_code == 404
            assert http.post("/jobs/999999/retry").status_code == 404
            bad = http.get("/jobs", params={"state": "lost"})
            assert bad.status_code == 400 and "lost" in bad.text


def found_study(http: httpx.Client, study: str) -> dict[str, Any]:
    [found] = http.get("/studies", params={"StudyInstanceUID": study}).json()
    assert isinstance(found, dict)
    return found


def read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def test_stow_rs_to_an_archive_that_requires_tokens_uses_client_credentials(
    tmp_path: Path, oidc_provider: OpenIdProvider
) -> None:
    """The destination requires sign-in: the forwarder fetches a client-credentials token
    from the provider's token endpoint and sends it; a wrong secret is retried, not sent."""
    client = oidc_provider.clients[SERVICE]
    token_url = oidc_provider.discovery()["token_endpoint"]
    ct = ct_study()[:2]
    study = ct[0].StudyInstanceUID
    with running_server(tmp_path / "second", env=oidc_provider.archive_env()) as second:

        def oauth(secret_env: str) -> dict[str, Any]:
            return {
                "url": f"{second}/dicomweb/studies",
                "oauth": {
                    "tokenUrl": token_url,
                    "clientId": client.client_id,
                    "secretEnv": secret_env,
                    "scope": "pacs:write",
                },
            }

        rules = {
            "rules": [
                {"name": name, "event": "study.stable", "destination": {"stow": oauth(secret)}}
                for name, secret in (("signed-in", "GOOD"), ("wrong-secret", "BAD"))
            ]
        }
        rules_file = tmp_path / "rules.json"
        rules_file.write_text(json.dumps(rules))
        assert client.secret is not None
        env = {
            **FAST,
            "PACS_FORWARDING_RULES": str(rules_file),
            "GOOD": client.secret,
            "BAD": client.secret + "x",
        }
        with (
            running_server(tmp_path / "first", env=env) as first,
            httpx.Client(base_url=f"{first}/dicomweb", timeout=30) as http,
        ):
            stow_ok(http, [to_bytes(ds) for ds in ct])

            def job(rule: str, state: str) -> dict[str, Any] | None:
                listed = http.get("/jobs", params={"state": state}).json()
                found = [j for j in listed if j["rule"] == rule and j["attempts"]]
                return found[0] if found else None

            wait_for("the signed-in job done", lambda: job("signed-in", "done"))
            refused = wait_for("the wrong secret's attempt", lambda: job("wrong-secret", "queued"))
            assert "answered HTTP 401" in refused["lastError"]
            token = oidc_provider.token(scopes=["pacs:read"])
            found = httpx.get(
                f"{second}/dicomweb/studies/{study}/instances",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert found.status_code == 200, found.text
            assert len(found.json()) == len(ct)


def test_a_queued_job_survives_a_kill_9_and_runs_after_the_restart(tmp_path: Path) -> None:
    """The destination is down when the study becomes stable: the job waits in the index;
    the server is killed (SIGKILL), the destination comes up, and the restarted server
    sends the study."""
    require_dcmtk()
    port = free_port()
    rules = {
        "rules": [
            {
                "name": "ct-to-scp",
                "event": "study.stable",
                "destination": {
                    "dicom": {"aeTitle": "STORESCP", "host": "127.0.0.1", "port": port}
                },
            }
        ]
    }
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rules))
    env = {
        **FAST,
        "PACS_FORWARDING_RULES": str(rules_file),
        "PACS_FORWARD_RETRY_MIN": "1",
        # Killed during an attempt (running), the job is taken again 2 s later.
        "PACS_FORWARD_LEASE": "2",
    }
    ct = ct_study()[:2]
    data = tmp_path / "data"
    with (
        running_server(data, env=env) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        stow_ok(http, [to_bytes(ds) for ds in ct])
        [waiting] = wait_for(
            "a failed attempt",
            lambda: [j for j in http.get("/jobs").json() if j["attempts"]],
        )
        assert waiting["state"] in ("queued", "running")
        os.kill(PIDS[url], signal.SIGKILL)
    with (
        storescp(tmp_path / "received", port=port),
        running_server(data, env=env) as url,
        httpx.Client(base_url=f"{url}/dicomweb", timeout=30) as http,
    ):
        [done] = wait_for(
            "the job done", lambda: http.get("/jobs", params={"state": "done"}).json()
        )
        assert done["id"] == waiting["id"]
        received = {str(read(p).SOPInstanceUID) for p in (tmp_path / "received").iterdir()}
        assert received == {ds.SOPInstanceUID for ds in ct}


def test_a_rule_created_through_the_api_routes_a_stable_study_to_an_archive(
    tmp_path: Path, oidc_provider: OpenIdProvider
) -> None:
    """No rules file: a rule POSTed by an administrator to a running server (a reader is
    refused, 403) is picked up within PACS_FORWARD_RULES_REFRESH_MS and sends the next
    stable CT study over STOW-RS to a second archive."""
    ct = ct_study()[:2]
    study = ct[0].StudyInstanceUID
    rule = {
        "name": "ct-to-archive",
        "event": "study.stable",
        "filter": {"Modality": "CT"},
        "destination": {"stow": {"url": ""}},
    }
    admin = {"Authorization": f"Bearer {oidc_provider.token(scopes=['pacs:admin'])}"}
    writer = oidc_provider.token(scopes=["pacs:read", "pacs:write", "pacs:delete"])
    env = {**FAST, **oidc_provider.archive_env(), "PACS_FORWARD_RULES_REFRESH_MS": "200"}
    with (
        running_server(tmp_path / "second") as second,
        running_server(tmp_path / "first", env=env) as first,
        httpx.Client(
            base_url=f"{first}/dicomweb",
            timeout=30,
            headers={"Authorization": f"Bearer {writer}"},
        ) as http,
    ):
        rule["destination"] = {"stow": {"url": f"{second}/dicomweb/studies"}}
        refused = http.post("/forwarding-rules", json=rule)
        assert refused.status_code == 403, refused.text
        created = http.post("/forwarding-rules", json=rule, headers=admin)
        assert created.status_code == 201, created.text
        time.sleep(0.4)  # two refreshes: the router reads the rule before the study is stable
        stow_ok(http, [to_bytes(ds) for ds in ct])

        def done() -> list[dict[str, Any]]:
            listed: list[dict[str, Any]] = http.get(
                "/jobs", params={"state": "done"}, headers=admin
            ).json()
            return listed

        [job] = wait_for("the job done", done, timeout=15)
        assert (job["rule"], job["studyInstanceUID"]) == ("ct-to-archive", study)
        with httpx.Client(base_url=f"{second}/dicomweb", timeout=30) as other:
            found = other.get(f"/studies/{study}/instances")
            assert found.status_code == 200 and len(found.json()) == len(ct)
        assert http.delete("/forwarding-rules/ct-to-archive", headers=admin).status_code == 204
