"""Study and series download as one ZIP file (Accept: application/zip), streamed.

Files are stored as they are in the archive, one member per instance, named
`<study>/<series>/<instance>.dcm` by UID; with `?dicomdir=true` they are laid out as a
PS3.10 file-set instead (`DICOM/STnnnnnn/SEnnnnnn/IMnnnnnn`) with a DICOMDIR at the root,
which media-importing workstations read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.auth.principal import Access
from app.dicom.dicomdir import DicomdirEntry, build_dicomdir, file_id_for
from app.services.archive import Archive
from app.services.errors import BadRequest
from app.services.plan import MediaRange
from app.services.ports import StoredInstance
from app.web.streaming import opened
from app.web.zipstream import ZipStream

ZIP = "application/zip"
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


def wants_zip(accept: list[MediaRange]) -> bool:
    """Whether the client prefers a ZIP file to multipart (its first choice is ZIP)."""
    return bool(accept) and accept[0].media_type == ZIP


def _file_ids(instances: Sequence[StoredInstance]) -> list[tuple[str, ...]]:
    studies: dict[str, int] = {}
    series: dict[str, int] = {}
    counts: dict[str, int] = {}
    ids = []
    for inst in instances:
        study = studies.setdefault(inst.study_instance_uid, len(studies) + 1)
        one = series.setdefault(inst.series_instance_uid, len(series) + 1)
        counts[inst.series_instance_uid] = counts.get(inst.series_instance_uid, 0) + 1
        ids.append(file_id_for(study, one, counts[inst.series_instance_uid]))
    return ids


async def _dicomdir(
    archive: Archive,
    access: Access,
    instances: Sequence[StoredInstance],
    ids: Sequence[tuple[str, ...]],
) -> bytes:
    first = instances[0]
    single_series = all(i.series_instance_uid == first.series_instance_uid for i in instances)
    found = await archive.retrieve.metadata(
        access, first.study_instance_uid, first.series_instance_uid if single_series else None
    )
    metadata = {m.sop_instance_uid: m.json for m in found}
    entries = [
        DicomdirEntry(
            file_id, orjson.loads(metadata[inst.sop_instance_uid]), inst.transfer_syntax_uid
        )
        for inst, file_id in zip(instances, ids, strict=True)
        if inst.sop_instance_uid in metadata
    ]
    return build_dicomdir(entries)


async def zipped(
    request: Request, archive: Archive, access: Access, instances: Sequence[StoredInstance]
) -> Response:
    flag = request.query_params.get("dicomdir", "").lower()
    if flag not in _TRUE + _FALSE:
        raise BadRequest(f"invalid dicomdir={flag!r}: expected true or false")
    with_dicomdir = flag in _TRUE
    if with_dicomdir:
        ids = _file_ids(instances)
        names = ["/".join(i) for i in ids]
        directory = await _dicomdir(archive, access, instances, ids)
    else:
        names = [
            f"{i.study_instance_uid}/{i.series_instance_uid}/{i.sop_instance_uid}.dcm"
            for i in instances
        ]
    stream = ZipStream()

    async def body() -> AsyncIterator[bytes]:
        for inst, name in zip(instances, names, strict=True):
            content = await opened(archive.retrieve.content(inst))
            async for piece in stream.member(name, content):
                yield piece
        if with_dicomdir:
            yield stream.member_bytes("DICOMDIR", directory)
        yield stream.close()

    first = instances[0]
    scope = first.study_instance_uid
    if len({i.series_instance_uid for i in instances}) == 1 and len(instances) > 1:
        scope = first.series_instance_uid
    elif len(instances) == 1:
        scope = first.sop_instance_uid
    return StreamingResponse(
        await opened(body()),
        media_type=ZIP,
        headers={"Content-Disposition": f'attachment; filename="{scope}.zip"'},
    )
