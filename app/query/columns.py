"""The whitelist of indexed attributes: which tag is matched against which column.

Each level's row keeps real columns for the standard QIDO matching keys (PS3.18 Table
10.6.1-5) in a normalized form, so matching and sorting need no JSON. Values are written
by the index at ingest with `column_values` and compared in SQL in the same form, which
`normalize` produces for query values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.dicom.levels import Level
from app.dicom.tags import tag
from app.digits import INT64, NumberError, parse_int


class Kind(StrEnum):
    UID = "uid"
    TEXT = "text"  # SH, LO, CS, AE...: case-sensitive
    PN = "pn"  # stored case-folded; matched case-insensitively
    DATE = "date"  # YYYYMMDD
    TIME = "time"  # HHMMSS.FFFFFF, zero-padded
    INT = "int"  # IS, US
    MULTI = "multi"  # a computed multi-valued CS list stored as "\CT\MR\"


@dataclass(frozen=True)
class Column:
    table: str  # "patient", "study", "series", "instance"
    name: str
    path: tuple[int, ...]  # tag path inside the instance's DICOM JSON
    kind: Kind

    @property
    def level(self) -> Level:
        return TABLE_LEVEL[self.table]


TABLE_LEVEL: dict[str, Level] = {
    "patient": Level.PATIENT,
    "study": Level.STUDY,
    "series": Level.SERIES,
    "instance": Level.INSTANCE,
}


def _column(table: str, name: str, kind: Kind, *path: str) -> Column:
    """The column `name` of `table` for the attribute at the path of keywords `path`."""
    return Column(table, name, tuple(tag(keyword) for keyword in path), kind)


_COLUMNS: tuple[Column, ...] = (
    _column("patient", "patient_id", Kind.TEXT, "PatientID"),
    _column("patient", "issuer_of_patient_id", Kind.TEXT, "IssuerOfPatientID"),
    _column("patient", "patient_name", Kind.PN, "PatientName"),
    _column("patient", "patient_birth_date", Kind.DATE, "PatientBirthDate"),
    _column("patient", "patient_sex", Kind.TEXT, "PatientSex"),
    _column("study", "study_instance_uid", Kind.UID, "StudyInstanceUID"),
    _column("study", "study_date", Kind.DATE, "StudyDate"),
    _column("study", "study_time", Kind.TIME, "StudyTime"),
    _column("study", "accession_number", Kind.TEXT, "AccessionNumber"),
    _column("study", "study_id", Kind.TEXT, "StudyID"),
    _column("study", "referring_physician_name", Kind.PN, "ReferringPhysicianName"),
    _column("study", "study_description", Kind.TEXT, "StudyDescription"),
    _column("study", "modalities_in_study", Kind.MULTI, "ModalitiesInStudy"),
    _column("series", "series_instance_uid", Kind.UID, "SeriesInstanceUID"),
    _column("series", "modality", Kind.TEXT, "Modality"),
    _column("series", "series_number", Kind.INT, "SeriesNumber"),
    _column("series", "series_description", Kind.TEXT, "SeriesDescription"),
    _column("series", "body_part_examined", Kind.TEXT, "BodyPartExamined"),
    _column(
        "series",
        "performed_procedure_step_start_date",
        Kind.DATE,
        "PerformedProcedureStepStartDate",
    ),
    _column(
        "series",
        "performed_procedure_step_start_time",
        Kind.TIME,
        "PerformedProcedureStepStartTime",
    ),
    _column(
        "series",
        "scheduled_procedure_step_id",
        Kind.TEXT,
        "RequestAttributesSequence",
        "ScheduledProcedureStepID",
    ),
    _column(
        "series",
        "requested_procedure_id",
        Kind.TEXT,
        "RequestAttributesSequence",
        "RequestedProcedureID",
    ),
    _column("instance", "sop_instance_uid", Kind.UID, "SOPInstanceUID"),
    _column("instance", "sop_class_uid", Kind.UID, "SOPClassUID"),
    _column("instance", "instance_number", Kind.INT, "InstanceNumber"),
)

# Patient attributes are also matched on the study row (denormalized), so that study and
# lower-level queries need no join to the patient table.
_STUDY_PATIENT_COLUMNS: tuple[Column, ...] = (
    _column("study", "patient_id", Kind.TEXT, "PatientID"),
    _column("study", "patient_name", Kind.PN, "PatientName"),
    _column("study", "patient_birth_date", Kind.DATE, "PatientBirthDate"),
    _column("study", "patient_sex", Kind.TEXT, "PatientSex"),
)


def columns_of(table: str) -> tuple[Column, ...]:
    cols = tuple(c for c in _COLUMNS if c.table == table)
    return cols + _STUDY_PATIENT_COLUMNS if table == "study" else cols


def column_for(path: tuple[int, ...], level: Level) -> Column | None:
    """The column that matches `path` in a query at `level`, or None if not indexed.

    Patient attributes in study, series and instance queries use the study row's copy; one
    without a column there (IssuerOfPatientID) is matched in the study row's JSON, as the
    patient table is not joined below the patient level.
    """
    if level is not Level.PATIENT:
        for col in _STUDY_PATIENT_COLUMNS:
            if col.path == path:
                return col
    for col in _COLUMNS:
        if col.path == path and (level is Level.PATIENT or col.table != "patient"):
            return col
    return None


def normalize(kind: Kind, value: str) -> str | int | None:
    """A DICOM string value in the stored column form (None when it cannot be stored)."""
    value = value.strip()
    if value == "":
        return None
    if kind is Kind.PN:
        return value.casefold()
    if kind is Kind.DATE:
        digits = value.replace(".", "").replace("-", "")  # tolerate ACR-NEMA YYYY.MM.DD
        return digits if len(digits) == 8 and digits.isascii() and digits.isdigit() else None
    if kind is Kind.TIME:
        return normalize_time(value, upper=False)
    if kind is Kind.INT:
        # Both backends' integer columns are 64-bit: a larger value (an IS can be any
        # 12 characters in a damaged file; a "99999999999999999999" reached SQL and failed
        # the store) cannot be matched or sorted as a number, so the column stays NULL.
        try:
            return parse_int(value, *INT64, signed=True)
        except NumberError:
            return None
    return value


def normalize_time(value: str, *, upper: bool) -> str | None:
    """TM value as HHMMSS.FFFFFF; missing parts are 0 (or their maximum for an upper bound)."""
    value = value.replace(":", "").strip()
    whole, _, fraction = value.partition(".")
    if not value.isascii():  # str.isdigit() and int() take other scripts' digits too
        return None
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    pad = "995959"[len(whole) :] if upper else "000000"[len(whole) :]
    if upper and len(whole) == 2:
        pad = "5959"
    frac = fraction[:6].ljust(6, "9" if upper else "0")
    return f"{whole}{pad}.{frac}"


def _json_value(attrs: dict[str, Any], path: tuple[int, ...]) -> Any:
    node: Any = attrs
    for i, step in enumerate(path):
        element = node.get(f"{step:08X}") if isinstance(node, dict) else None
        values = element.get("Value") if isinstance(element, dict) else None
        if not values:
            return None
        node = values[0]
        if i < len(path) - 1 and not isinstance(node, dict):
            return None
    if isinstance(node, dict):  # PN: {"Alphabetic": ...}
        return node.get("Alphabetic")
    return node


def column_values(table: str, attrs: dict[str, Any]) -> dict[str, str | int | None]:
    """Column values of `table` taken from an instance's DICOM JSON (computed ones excluded)."""
    out: dict[str, str | int | None] = {}
    for col in columns_of(table):
        if col.kind is Kind.MULTI:
            continue
        raw = _json_value(attrs, col.path)
        out[col.name] = None if raw is None else normalize(col.kind, str(raw))
    return out
