"""WADO-RS (PS3.18 10.4): instances as multipart/related application/dicom, and metadata.

Instances are streamed from the object store part by part: a study of any size passes
through a bounded buffer.
"""

from __future__ import annotations

import json
import logging
import uuid

from aiohttp import web

from vna.archive import Archive
from vna.errors import NotFound, VnaError
from vna.gateway.auth import AUDIT, principal_of
from vna.gateway.bulk_uris import with_bulk_data_uris
from vna.gateway.media import (
    DICOM,
    DICOM_JSON,
    accepts_json,
    negotiate_instances,
    parse_accept,
    part_header,
)
from vna.gateway.request_context import ARCHIVE, base_url, caller_source
from vna.security.audit import ACCESS_DENIED, METADATA, RETRIEVE, Access
from vna.security.query_scope import patient_scope

log = logging.getLogger(__name__)


async def retrieve(request: web.Request) -> web.StreamResponse:
    archive = request.app[ARCHIVE]
    m = request.match_info
    rendition = negotiate_instances(parse_accept(request.headers.get("Accept")))
    if rendition is None:
        raise web.HTTPNotAcceptable(
            text=f'instances are served as multipart/related; type="{DICOM}" only\n'
        )
    await _check_access(request, archive)
    # A source token retrieves within its patients (its [[sources]] query_scope): another
    # hospital's study is absent to it (404), as it is to its searches.
    scope = patient_scope(caller_source(request))
    instances = await archive.retriever.find(
        m["study"], m.get("series"), m.get("instance"), scope=scope
    )
    if rendition.transfer_syntax is not None:
        other = [i for i in instances if i.transfer_syntax != rendition.transfer_syntax]
        if other:
            raise web.HTTPNotAcceptable(
                text=(
                    f"{len(other)} instance(s) are stored in transfer syntax"
                    f" {other[0].transfer_syntax}; the archive does not transcode"
                    " (ask for transfer-syntax=*)\n"
                )
            )

    # Open the first object before sending headers, so a missing object is a clean 404/503
    # instead of a truncated 200; likewise any object in an offline tier (a 503 with
    # Retry-After, a restore queued).
    await archive.retriever.ensure_online(instances)
    first = await archive.retriever.open(instances[0])
    # Audited before the first byte goes out (PS3.15 A.5.3.7); no audit row, no answer.
    try:
        await _audit(request, RETRIEVE, len(instances))
    except BaseException:
        aclose = getattr(first, "aclose", None)
        if aclose is not None:
            await aclose()
        raise
    boundary = uuid.uuid4().hex
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": f'multipart/related; type="{DICOM}"; boundary={boundary}',
        },
    )
    await response.prepare(request)
    root = base_url(request)
    delimiter = f"--{boundary}\r\n".encode("ascii")
    try:
        for index, instance in enumerate(instances):
            chunks = first if index == 0 else await archive.retriever.open(instance)
            location = (
                f"{root}/studies/{instance.study_uid}/series/{instance.series_uid}"
                f"/instances/{instance.sop_uid}"
            )
            await response.write(delimiter)
            await response.write(
                part_header(f"{DICOM}; transfer-syntax={instance.transfer_syntax}", location)
            )
            async for chunk in chunks:
                await response.write(chunk)
            await response.write(b"\r\n")
    except VnaError as exc:
        cut_short(request, exc)
        return response
    await response.write(f"--{boundary}--\r\n".encode("ascii"))
    await response.write_eof()
    return response


def cut_short(request: web.Request, exc: VnaError) -> None:
    """A stored object failed after the 200 went out: the answer can only be cut short.  The
    connection is dropped so that the client sees an incomplete answer at once (never a
    complete one holding other bytes); the retriever recorded the damage, so a retry is served
    from a replica."""
    log.error("%s %s cut short: %s", request.method, request.path, exc)
    if request.transport is not None:
        request.transport.abort()


async def metadata(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    m = request.match_info
    if not accepts_json(parse_accept(request.headers.get("Accept"))):
        raise web.HTTPNotAcceptable(text=f"metadata is served as {DICOM_JSON} only\n")
    await _check_access(request, archive)
    scope = patient_scope(caller_source(request))
    entries = await archive.retriever.metadata_entries(
        m["study"], m.get("series"), m.get("instance"), scope=scope
    )
    await _audit(request, METADATA, len(entries))
    # Headers as indexed at ingest; Pixel Data and bulk values are not in them: each gets a
    # BulkDataURI instead (PS3.18 F.2.6), answered by vna.gateway.frames.
    root = base_url(request)
    items = [with_bulk_data_uris(e, root) for e in entries]
    return web.Response(body=json.dumps(items).encode(), status=200, content_type=DICOM_JSON)


async def _check_access(request: web.Request, archive: Archive, study: str | None = None) -> None:
    """A reader restricted to some sources sees the studies of others as absent (404, not
    403: it learns nothing about them); the attempt is audited.  ``study``: when the request
    names it other than in its path (WADO-URI's studyUID)."""
    principal = principal_of(request)
    if principal.readable_sources is None:
        return
    study = study if study is not None else request.match_info["study"]
    source = await archive.retriever.source_of_study(study)
    if source is None or principal.may_read_source(source):
        return  # absent studies are the retriever's 404
    await request.app[AUDIT].record(
        Access(
            actor=principal.name,
            origin=request.remote or "",
            action=ACCESS_DENIED,
            study_uids=[study],
            outcome="failure",
            detail={
                "reason": f"the token may not read studies of source {source!r}",
                "method": request.method,
                "path": request.path,
            },
        )
    )
    raise NotFound(f"study {study} is not in the archive")


#: For the other WADO handlers (frames, bulk data, WADO-URI): the same rule.
check_access = _check_access


async def audit_access(
    request: web.Request,
    action: str,
    instances: int,
    detail: dict[str, object] | None = None,
    uids: dict[str, str] | None = None,
) -> None:
    """One audit record of this request, naming the study disclosed (PS3.15 A.5.3.7);
    ``uids`` (study, series, instance) when not in the request's path."""
    await _audit(request, action, instances, detail, uids)


async def _audit(
    request: web.Request,
    action: str,
    instances: int,
    extra: dict[str, object] | None = None,
    uids: dict[str, str] | None = None,
) -> None:
    m = uids if uids is not None else request.match_info
    await request.app[AUDIT].record(
        Access(
            actor=principal_of(request).name,
            origin=request.remote or "",
            action=action,
            study_uids=[m["study"]],
            series_uid=m.get("series"),
            sop_uid=m.get("instance"),
            detail={
                "protocol": "wado-uri" if uids is not None else "wado-rs",
                "path": request.path,
                "instances": instances,
                **(extra or {}),
            },
        )
    )
