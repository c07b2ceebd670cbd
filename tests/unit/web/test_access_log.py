"""The access log's route template, read from the app's own route table: through the
tenant mount and the plain one, for a wrong method, and for no route at all."""

from __future__ import annotations

from typing import Any

import pytest

from app.web.access_log import NO_ROUTE, route_template
from app.web.app import create_app


def _unused() -> Any:
    raise AssertionError("only the route table is read")


def _routes() -> Any:
    app: Any = create_app(_unused)
    while not hasattr(app, "router"):  # unwrap the middleware around the Starlette app
        app = app.app
    return app.router.routes


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/health", "/health"),
        ("GET", "/dicomweb/studies", "/dicomweb/studies"),
        ("GET", "/dicomweb/studies/1.2.3/series", "/dicomweb/studies/{study}/series"),
        (
            "GET",
            "/dicomweb/tenants/acme/studies/1.2/series/3.4/instances/5.6/frames/1,2",
            "/dicomweb/tenants/{tenant}/studies/{study}/series/{series}/instances/{instance}"
            "/frames/{frames}",
        ),
        ("DELETE", "/dicomweb/studies", "/dicomweb/studies"),  # 405: the path's template
        ("GET", "/dicomweb/nothing-here", NO_ROUTE),
        ("GET", "/PatientName=DOE", NO_ROUTE),
    ],
)
def test_route_template(method: str, path: str, template: str) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    assert route_template(_routes(), scope) == template
