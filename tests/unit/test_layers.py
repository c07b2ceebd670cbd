"""The import direction of DESIGN.md, checked on the source: `index` imports only `dicom`,
`query`, `services.ports` and its own package (so does `storage`, by DESIGN; not checked
here yet: storage/keys.py imports app.auth.principal)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"


def app_imports(package: str) -> dict[str, set[str]]:
    """Module file -> the `app.*` modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((APP / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(APP.parent))] = {n for n in names if n.startswith("app.")}
    return found


def within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(f"{a}.") for a in allowed)


@pytest.mark.parametrize("package", ["index", "broker", "search"])
def test_backends_import_only_dicom_query_and_the_ports(package: str) -> None:
    """Regression: the index's audit modules imported the audit model from app.auth."""
    allowed = ("app.dicom", "app.query", "app.services.ports", f"app.{package}")
    wrong = {
        path: sorted(m for m in modules if not within(m, allowed))
        for path, modules in app_imports(package).items()
    }
    assert {path: found for path, found in wrong.items() if found} == {}


def test_the_store_audit_rule_lives_in_the_audit_service() -> None:
    """Regression: how a store's outcome changes its audit event (business logic) sat in
    services/ports.py, which declares what the backends implement."""
    from app.services import audit, ports

    assert not hasattr(ports, "audit_outcome")
    assert callable(audit.audit_outcome)


@pytest.mark.parametrize("package", ["web", "dimse"])
def test_protocol_layers_reach_imaging_and_backends_through_services(package: str) -> None:
    """Regression: app/web imported app/imaging (the transcoder, rendering options, window
    types) beside the services, so what to produce was decided in two layers."""
    forbidden = ("app.imaging", "app.index", "app.storage", "app.search")
    wrong = {
        path: sorted(m for m in modules if within(m, forbidden))
        for path, modules in app_imports(package).items()
    }
    assert {path: found for path, found in wrong.items() if found} == {}
