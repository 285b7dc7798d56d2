"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

The older single-object retrieve EMR portals and older viewers use.  ``contentType`` says
what comes back (PS3.18 9.1.2.1.5 / 9.1.2.2.1): ``application/dicom`` is the stored object,
bit-exact, in its stored transfer syntax; the image types (``image/jpeg``, ``image/png``, the
default for images when ``contentType`` is absent) are rendered answers, added to
``ANSWERS`` by the rendering module (``vna.gateway.rendered.register_wado_uri``).  Every
answer goes through the same reader, access rule, query scope, availability and audit as
WADO-RS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidRequest, VnaError
from vna.gateway.media import DICOM
from vna.gateway.request_context import ARCHIVE, PREFIX, caller_source
from vna.gateway.wado import audit_access, check_access, cut_short
from vna.retrieve import StoredInstance
from vna.security.audit import RETRIEVE
from vna.security.query_scope import patient_scope


@dataclass(frozen=True)
class WadoUriRequest:
    """The parameters of one WADO-URI request (PS3.18 9.1.2.1)."""

    study_uid: str
    series_uid: str
    object_uid: str
    #: The acceptable content types, in the order given (PS3.18 9.1.2.1.5: a list).
    content_types: tuple[str, ...]
    transfer_syntax: str | None
    #: Every parameter as sent, for answers that read more (frameNumber, rows, columns,
    #: region, windowCenter, windowWidth, imageQuality...).
    params: dict[str, str]


#: One answer per content type: (request, the stored instance, the parsed request) -> the
#: response.  The rendering module registers ``image/jpeg`` and ``image/png`` here
#: (``ANSWERS["image/jpeg"] = ...``); it must stream through ``archive.retriever`` and audit
#: with ``audit_access(..., uids=uids_of(parsed))`` as ``_dicom`` does.
Answer = Callable[[web.Request, StoredInstance, WadoUriRequest], Awaitable[web.StreamResponse]]
ANSWERS: dict[str, Answer] = {}
#: PS3.18 9.1.2.1.5: without contentType, an image is answered as image/jpeg.
DEFAULT_CONTENT_TYPE = "image/jpeg"


def register(app: web.Application) -> None:
    # Both where WADO-URI clients usually look and beside the DICOMweb routes.
    app.router.add_get("/wado", retrieve)
    app.router.add_get(f"{PREFIX}/wado", retrieve)


def parse(query: dict[str, str]) -> WadoUriRequest:
    """The request's parameters; InvalidRequest (400) naming the first one that is wrong."""
    request_type = query.get("requestType")
    if request_type != "WADO":
        raise InvalidRequest(
            "requestType must be WADO" + (f", not {request_type[:40]!r}" if request_type else "")
        )
    uids = []
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = query.get(name, "")
        if not value:
            raise InvalidRequest(f"{name} is required")
        if not is_valid_uid(value):
            raise InvalidRequest(f"{name} is not a valid UID: {value[:80]!r}")
        uids.append(value)
    raw = query.get("contentType", "")
    types = tuple(
        t.split(";")[0].strip().lower() for t in raw.split(",") if t.split(";")[0].strip()
    )
    return WadoUriRequest(
        study_uid=uids[0],
        series_uid=uids[1],
        object_uid=uids[2],
        content_types=types or (DEFAULT_CONTENT_TYPE,),
        transfer_syntax=query.get("transferSyntax") or None,
        params=dict(query),
    )


def uids_of(parsed: WadoUriRequest) -> dict[str, str]:
    return {"study": parsed.study_uid, "series": parsed.series_uid, "instance": parsed.object_uid}


async def retrieve(request: web.Request) -> web.StreamResponse:
    parsed = parse(dict(request.query))
    archive = request.app[ARCHIVE]
    await check_access(request, archive, parsed.study_uid)
    scope = patient_scope(caller_source(request))
    (instance,) = await archive.retriever.find(
        parsed.study_uid, parsed.series_uid, parsed.object_uid, scope=scope
    )
    answers = {DICOM: _dicom, **ANSWERS}
    for content_type in parsed.content_types:
        answer = answers.get(content_type)
        if answer is not None:
            return await answer(request, instance, parsed)
    raise web.HTTPNotAcceptable(
        text=(
            f"contentType {', '.join(parsed.content_types)} is not served"
            f" (served: {', '.join(sorted(answers))})\n"
        )
    )


async def _dicom(
    request: web.Request, instance: StoredInstance, parsed: WadoUriRequest
) -> web.StreamResponse:
    """The stored object, bit-exact (PS3.18 9.1.2.2.1: application/dicom), or transcoded to
    the ``transferSyntax`` asked for (vna.transcoding)."""
    archive = request.app[ARCHIVE]
    if parsed.params.get("anonymize", "").lower() == "yes":
        raise web.HTTPNotAcceptable(text="anonymize=yes is not supported by this archive\n")
    if parsed.transfer_syntax not in (None, instance.transfer_syntax):
        choice = archive.transcoder.choose(instance.transfer_syntax, [(parsed.transfer_syntax, 1)])
        if isinstance(choice, list):
            raise web.HTTPNotAcceptable(text="; ".join(choice) + "\n")
        data = await archive.transcoder.instance(instance, choice)
        await audit_access(request, RETRIEVE, 1, {"transcoded_to": choice}, uids=uids_of(parsed))
        return web.Response(
            body=data,
            headers={
                "Content-Type": DICOM,
                "Content-Disposition": f'attachment; filename="{_filename(instance)}"',
            },
        )
    # Opened before the answer starts: a missing object is a clean 404, an offline one a 503
    # with Retry-After (a restore queued).
    chunks = await archive.retriever.open(instance)
    try:
        await audit_access(request, RETRIEVE, 1, uids=uids_of(parsed))
    except BaseException:
        await chunks.aclose()  # type: ignore[attr-defined]
        raise
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": DICOM,
            "Content-Length": str(instance.size),
            "Content-Disposition": f'attachment; filename="{_filename(instance)}"',
        },
    )
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except VnaError as exc:
        cut_short(request, exc)
        return response
    await response.write_eof()
    return response


def _filename(instance: StoredInstance) -> str:
    # The SOP Instance UID is digits and dots only (validated), safe in a header.
    return f"{instance.sop_uid}.dcm"
