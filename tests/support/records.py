"""InstanceRecords for index tests and load tests, made as the store service makes them."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from app.dicom.parse import parse_instance
from app.services.ports import InstanceRecord
from tests.support.dicom_factory import make_file


class Records:
    """InstanceRecords as the store service makes them, from files written and parsed here.

    Blob keys are synthetic; size and SHA-256 are those of the file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def make(self, **attrs: Any) -> InstanceRecord:
        data = make_file(**attrs)
        path = self.folder / f"{uuid.uuid4().hex}.dcm"
        path.write_bytes(data)
        parsed = parse_instance(path)
        return InstanceRecord(
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
            sop_instance_uid=parsed.sop_instance_uid,
            sop_class_uid=parsed.sop_class_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            blob_key=uuid.uuid4().hex,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            encapsulated=parsed.encapsulated,
            frames=parsed.frames,
            bulk=parsed.bulk,
            metadata=parsed.metadata,
            patient_id=_patient_id(parsed.metadata),
        )


def _patient_id(metadata: dict[str, Any]) -> str | None:
    values = metadata.get("00100020", {}).get("Value")
    return str(values[0]) if values else None
