"""The access log's route template, read from the app's own route table: through the
tenant mount and the plain one, for a wrong method, and for no route at all."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Mount, Route

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


def test_the_routed_route_is_not_matched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: after every request the log line matched the path against the mount's
    thirty route patterns again, although the router had left its choice in the scope."""
    routes = _routes()
    path = "/dicomweb/tenants/acme/studies/1.2/series/3.4/instances/5.6/rendered"
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    plain = next(r for r in routes if isinstance(r, Mount) and r.path == "/dicomweb")
    routed = next(
        r
        for r in plain.routes
        if isinstance(r, Route) and r.path.endswith("/instances/{instance}/rendered")
    )
    matched: list[str] = []
    matches = Route.matches

    def counting(self: Route, scope: Any) -> Any:
        matched.append(self.path)
        return matches(self, scope)

    monkeypatch.setattr(Route, "matches", counting)
    template = "/dicomweb/tenants/{tenant}/studies/{study}/series/{series}/instances/{instance}"
    assert route_template(routes, scope, routed) == template + "/rendered"
    assert len(matched) <= 2  # /health and /wado, before the mounts
    # Without the router's choice (a request refused before routing), the table decides.
    assert route_template(routes, scope) == template + "/rendered"
