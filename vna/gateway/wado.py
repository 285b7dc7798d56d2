"""WADO-RS (PS3.18 10.4): instances as multipart/related application/dicom, and metadata.

Instances are streamed from the object store part by part: a study of any size passes
through a bounded buffer.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from vna.archive import Archive
from vna.dicom.transcode import NATIVE, PixelFacts, facts_of
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
from vna.retrieve import StoredInstance
from vna.security.audit import ACCESS_DENIED, METADATA, RETRIEVE, Access
from vna.security.query_scope import PatientScope, patient_scope

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
    facts = await _pixel_facts(archive, m, scope, rendition.transfer_syntaxes)
    targets = _targets(archive, instances, rendition.transfer_syntaxes, facts)

    # Open (or transcode) the first object before sending headers, so a missing object is a
    # clean 404/503 and an instance that cannot be transcoded a clean 406/500 instead of a
    # truncated 200; likewise any object in an offline tier (a 503 with Retry-After, a
    # restore queued).
    await archive.retriever.ensure_online(instances)
    parts = archive.transcoder.stream(instances, targets)
    first = await anext(parts)
    try:
        # Audited before the first byte goes out (PS3.15 A.5.3.7); no audit row, no answer.
        await _audit(request, RETRIEVE, len(instances), _transcoding_detail(targets))
    except BaseException:
        await _close_part(parts, first[2])
        raise
    boundary = uuid.uuid4().hex
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": f'multipart/related; type="{DICOM}"; boundary={boundary}',
        },
    )
    root = base_url(request)
    delimiter = f"--{boundary}\r\n".encode("ascii")
    part: tuple[StoredInstance, str, AsyncIterator[bytes] | bytes] | None = first
    try:
        await response.prepare(request)
        while part is not None:
            instance, syntax, body = part
            location = (
                f"{root}/studies/{instance.study_uid}/series/{instance.series_uid}"
                f"/instances/{instance.sop_uid}"
            )
            await response.write(delimiter)
            await response.write(part_header(f"{DICOM}; transfer-syntax={syntax}", location))
            if isinstance(body, bytes):
                await response.write(body)
            else:
                async for chunk in body:
                    await response.write(chunk)
            await response.write(b"\r\n")
            part = await anext(parts, None)
    except VnaError as exc:
        # A later instance whose stored copy turned out damaged (after the 200 went out) or
        # that cannot be transcoded: the answer is cut short, never other bytes in its place.
        await _close_part(parts, part[2] if part is not None else None)
        cut_short(request, exc)
        return response
    except BaseException:
        # Anything else (the client went away, a bug): the same, and raised.
        await _close_part(parts, part[2] if part is not None else None)
        raise
    await response.write(f"--{boundary}--\r\n".encode("ascii"))
    await response.write_eof()
    return response


async def _pixel_facts(
    archive: Archive,
    m: Any,
    scope: PatientScope | None,
    acceptable: tuple[tuple[str, float], ...] | None,
) -> dict[str, PixelFacts]:
    """What the encoders need to know of each instance (from the catalogue), when the
    request names a syntax that encodes: so that an instance an encoder will not take
    (1-bit, 32-bit, float) is known before the answer starts, not half-way through a study."""
    if acceptable is None or all(ts in NATIVE for ts, _ in acceptable):
        return {}
    entries = await archive.retriever.metadata_entries(
        m["study"], m.get("series"), m.get("instance"), scope=scope
    )
    out = {}
    for e in entries:
        pixels = e.layout.pixels if e.layout is not None else None
        tag = pixels.tag if pixels is not None else None
        out[e.sop_uid] = facts_of(e.metadata, e.has_pixel_data, tag)
    return out


def _targets(
    archive: Archive,
    instances: list[StoredInstance],
    acceptable: tuple[tuple[str, float], ...] | None,
    facts: dict[str, PixelFacts],
) -> list[str | None]:
    """Per instance, the syntax to transcode it to (None: as stored); 406 naming the syntax
    asked and why when some instance cannot be had in any syntax asked."""
    if acceptable is None:
        return [None] * len(instances)
    targets: list[str | None] = []
    refused: dict[str, list[str]] = {}
    for instance in instances:
        choice = archive.transcoder.choose(
            instance.transfer_syntax, acceptable, facts.get(instance.sop_uid)
        )
        if isinstance(choice, list):
            refused.setdefault(instance.transfer_syntax, choice)
            targets.append(None)
        else:
            targets.append(None if choice == instance.transfer_syntax else choice)
    if refused:
        stored, reasons = next(iter(refused.items()))
        count = sum(1 for i in instances if i.transfer_syntax in refused)
        asked = ", ".join(ts for ts, _ in acceptable)
        raise web.HTTPNotAcceptable(
            text=(
                f"{count} instance(s) stored in transfer syntax {stored} cannot be had in"
                f" {asked}: {'; '.join(dict.fromkeys(reasons))}\n"
            )
        )
    return targets


def _transcoding_detail(targets: list[str | None]) -> dict[str, object]:
    made = sorted({t for t in targets if t is not None})
    return {"transcoded_to": made} if made else {}


async def _close_part(parts: AsyncIterator[Any], body: object) -> None:
    """Close the parts' generator and a stored object's stream it handed out."""
    for closable in (body, parts):
        aclose = getattr(closable, "aclose", None)
        if aclose is not None:
            await aclose()


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
