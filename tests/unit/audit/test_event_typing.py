"""Events are built with type-checked fields: mypy (as `make typecheck` runs it) refuses a
field of the wrong type, however the event is made."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[3]
SNIPPET = """
from dataclasses import replace
from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.auth.principal import Access, anonymous

access = Access(anonymous(None), "default")
event = AuditEvent.of(access, AuditAction.QUERY, AuditProtocol.DIMSE)
replace(event, outcome="bad")
AuditEvent.of(access, AuditAction.QUERY, AuditProtocol.DIMSE, outcome="bad")
"""


def test_a_field_of_the_wrong_type_is_a_type_error(tmp_path: Path) -> None:
    """Regression: AuditEvent.of(**what: object) with a type: ignore let any keyword and
    any value through."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    out, _, status = api.run(
        ["--strict", "--config-file", str(ROOT / "pyproject.toml"), str(snippet)]
    )
    assert status == 1, out
    lines = sorted(int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line)
    assert lines == [8, 9], out
