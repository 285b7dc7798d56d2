"""Studies: search (the QIDO-RS search path of the catalogue, within the visitor's sources and
patient scope) and a study's page.

The search form is POSTed, so patient names and IDs stay out of URLs (browser history, proxy
logs); its pages are buttons of the same form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lifecycle.retention import holds_of_study
from vna.admin.patients import Identity, find_patients
from vna.admin.studies import show_study
from vna.catalog.console import instance_history, study_storage
from vna.catalog.search import search_page
from vna.config import SourceSettings
from vna.dicom.qido_params import parse_qido
from vna.dicom.uids import is_valid_uid
from vna.errors import CannotRender, NotFound
from vna.security.audit import ACCESS_DENIED, RETRIEVE, Access
from vna.security.query_scope import patient_scope, query_patient_scope
from vna.ui.core import AUDIT, Pager, Visitor, archive_of, audit_view, page, render

#: The search form's fields: (form name, label).
FIELDS = (
    ("patient_name", "Patient name"),
    ("patient_id", "Patient ID"),
    ("issuer", "Issuer of patient ID"),
    ("accession", "Accession number"),
    ("date_from", "Study date from"),
    ("date_to", "Study date to"),
    ("modality", "Modality"),
    ("source", "Source"),
    ("availability", "Availability"),
)
AVAILABILITIES = ("ONLINE", "NEARLINE", "OFFLINE")

# DICOM JSON tags of the columns shown.
STUDY_UID = "0020000D"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"
ISSUER = "00100021"
STUDY_DATE = "00080020"
ACCESSION = "00080050"
MODALITIES = "00080061"
DESCRIPTION = "00081030"
N_SERIES = "00201206"
N_INSTANCES = "00201208"
AVAILABILITY = "00080056"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/studies", studies, name="studies")
    router.add_post("/studies", studies)
    router.add_get("/studies/{study}", study, name="study")
    router.add_get("/studies/{study}/series/{series}/thumbnail", thumbnail, name="thumbnail")


@dataclass(frozen=True)
class StudyRow:
    uid: str
    patient_name: str
    patient_id: str
    issuer: str
    date: str
    accession: str
    modalities: str
    description: str
    series: int | None
    instances: int | None
    availability: str


def qido_params(form: Mapping[str, str], pager: Pager) -> list[tuple[str, str]]:
    """The QIDO-RS parameters of the search form: what the API would be sent for it."""
    params: list[tuple[str, str]] = [
        ("includefield", "StudyDescription,IssuerOfPatientID"),
        ("limit", str(pager.size)),
        ("offset", str(pager.offset)),
    ]
    name = form.get("patient_name", "").strip()
    if name:
        # Operators type the start of a name: a prefix search unless they wrote wildcards.
        params.append(("PatientName", name if "*" in name or "?" in name else name + "*"))
    for field, key in (
        ("patient_id", "PatientID"),
        ("issuer", "IssuerOfPatientID"),
        ("accession", "AccessionNumber"),
        ("modality", "ModalitiesInStudy"),
    ):
        value = form.get(field, "").strip()
        if value:
            params.append((key, value.upper() if field == "modality" else value))
    low = form.get("date_from", "").replace("-", "").strip()
    high = form.get("date_to", "").replace("-", "").strip()
    if low or high:
        params.append(("StudyDate", f"{low}-{high}" if low != high else low))
    return params


def searched_sources(visitor: Visitor, wanted: str) -> list[str] | None:
    """The sources to search: the visitor's (None: all), narrowed to ``wanted`` if given."""
    allowed = visitor.readable_sources
    if not wanted:
        return list(allowed) if allowed is not None else None
    return [wanted] if allowed is None or wanted in allowed else []


def caller_source(request: web.Request, visitor: Visitor) -> SourceSettings | None:
    """A source token's declared source, whose query scope applies (as in the API)."""
    if visitor.principal.role != "source":
        return None
    return archive_of(request).settings.source_named(visitor.principal.source or "")


@page()
async def studies(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    settings = archive.settings
    sources = [s.name for s in settings.sources]
    if visitor.readable_sources is not None:
        sources = [s for s in sources if s in visitor.readable_sources]
    if request.method != "POST":
        return render(
            request,
            "studies.html",
            title="Studies",
            form={},
            fields=FIELDS,
            sources=sources,
            availabilities=AVAILABILITIES,
            rows=None,
            pager=None,
        )
    posted = await request.post()
    form = {name: str(posted.get(name, "")) for name, _ in FIELDS}
    pager = Pager.of({"page": str(posted.get("page", "1"))}, settings.ui.page_size)
    query = parse_qido("study", qido_params(form, pager))
    wanted = searched_sources(visitor, form["source"])
    async with archive.db.acquire() as conn:
        found = (
            await search_page(
                conn,
                query,
                max_results=settings.query.max_results,
                default_limit=settings.query.default_limit,
                sources=wanted,
                offline_tiers=archive.store.offline_tiers,
                scope=query_patient_scope(caller_source(request, visitor), query),
            )
            if wanted != []
            else None
        )
    results = found.results if found is not None else []
    pager = Pager(pager.number, pager.size, bool(found and found.more))
    rows = [study_row(match) for match in results]
    if form["availability"]:
        # Availability is computed per match (the least available instance), not matched in
        # SQL: the filter applies to the page of matches.
        rows = [r for r in rows if r.availability == form["availability"]]
    await audit_view(
        request,
        visitor,
        what="study-search",
        study_uids=[r.uid for r in rows],
        detail={"criteria": {k: v for k, v in form.items() if v}, "matches": len(rows)},
    )
    return render(
        request,
        "studies.html",
        title="Studies",
        form=form,
        fields=FIELDS,
        sources=sources,
        availabilities=AVAILABILITIES,
        rows=rows,
        pager=pager,
    )


def _first(match: Mapping[str, Any], tag: str) -> Any:
    values = match.get(tag, {}).get("Value") or [""]
    return values[0]


def _name(match: Mapping[str, Any]) -> str:
    value = _first(match, PATIENT_NAME)
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else value


def _count(match: Mapping[str, Any], tag: str) -> int | None:
    value = _first(match, tag)
    return int(value) if value != "" else None


def study_row(match: Mapping[str, Any]) -> StudyRow:
    return StudyRow(
        uid=str(_first(match, STUDY_UID)),
        patient_name=_name(match),
        patient_id=str(_first(match, PATIENT_ID)),
        issuer=str(_first(match, ISSUER)),
        date=_date(str(_first(match, STUDY_DATE))),
        accession=str(_first(match, ACCESSION)),
        modalities=", ".join(str(v) for v in match.get(MODALITIES, {}).get("Value") or []),
        description=str(_first(match, DESCRIPTION)),
        series=_count(match, N_SERIES),
        instances=_count(match, N_INSTANCES),
        availability=str(_first(match, AVAILABILITY)),
    )


# --- one study --------------------------------------------------------------------------------

SERIES_UID = "0020000E"
SERIES_NUMBER = "00200011"
MODALITY = "00080060"
SERIES_DESCRIPTION = "0008103E"
N_SERIES_INSTANCES = "00201209"
BIRTH_DATE = "00100030"
SEX = "00100040"


async def _readable_study(request: web.Request, visitor: Visitor, study_uid: str) -> dict:
    """The study's QIDO-RS match as the visitor's token would get it; NotFound (404) when the
    archive does not hold it or the visitor may not see it (audited then, as WADO-RS does:
    another source's study is absent to a restricted reader)."""
    if not is_valid_uid(study_uid):
        raise NotFound(f"not a Study Instance UID: {study_uid[:80]!r}")
    archive = archive_of(request)
    query = parse_qido(
        "study",
        [
            ("StudyInstanceUID", study_uid),
            ("includefield", "StudyDescription,IssuerOfPatientID,PatientBirthDate,PatientSex"),
        ],
    )
    async with archive.db.acquire() as conn:
        found = await search_page(
            conn,
            query,
            max_results=1,
            default_limit=1,
            sources=visitor.readable_sources,
            offline_tiers=archive.store.offline_tiers,
            scope=query_patient_scope(caller_source(request, visitor), query),
        )
    if found.results:
        return found.results[0]
    source = await archive.retriever.source_of_study(study_uid)
    if source is not None:
        await request.app[AUDIT].record(
            Access(
                actor=visitor.name,
                origin=request.remote or "",
                action=ACCESS_DENIED,
                study_uids=[study_uid],
                outcome="failure",
                detail={
                    "reason": "the token may not read this study",
                    "path": request.path,
                    "protocol": "console",
                },
            )
        )
    raise NotFound(f"study {study_uid} is not in the archive")


@page()
async def study(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    settings = archive.settings
    uid = request.match_info["study"]
    match = await _readable_study(request, visitor, uid)
    head = study_row(match)
    series_query = parse_qido("series", [("includefield", "SeriesDescription")], study_uid=uid)
    replicas = [r.name for r in settings.replicas]
    async with archive.db.acquire() as conn:
        series = await search_page(
            conn,
            series_query,
            max_results=settings.query.max_results,
            default_limit=settings.query.max_results,
            sources=visitor.readable_sources,
            offline_tiers=archive.store.offline_tiers,
            scope=query_patient_scope(caller_source(request, visitor), series_query),
        )
        storage = {s.series_uid: s for s in await study_storage(conn, uid, replicas)}
        holds = await holds_of_study(conn, uid, head.patient_id, head.issuer)
    history = (await show_study(archive.db, uid))["changes"]
    instances = await archive.retriever.find(
        uid, scope=patient_scope(caller_source(request, visitor))
    )
    async with archive.db.acquire() as conn:
        logged = await instance_history(conn, [i.sop_uid for i in instances])
    source = await archive.retriever.source_of_study(uid)
    rows = []
    for m in series.results:
        series_uid = str(_first(m, SERIES_UID))
        rows.append(
            {
                "uid": series_uid,
                "number": _first(m, SERIES_NUMBER),
                "modality": _first(m, MODALITY),
                "description": _first(m, SERIES_DESCRIPTION),
                "availability": str(_first(m, AVAILABILITY)),
                "storage": storage.get(series_uid),
            }
        )
    patient_pk = None
    if visitor.is_admin:
        found = await find_patients(archive.db, Identity(head.patient_id, head.issuer), 1)
        patient_pk = found[0]["id"] if found else None
    viewer = settings.ui.viewer_url.replace("{study}", uid) if settings.ui.viewer_url else ""
    total_size = sum(s.size for s in storage.values())
    total_stored = sum(s.stored_size for s in storage.values())
    await audit_view(request, visitor, what="study", study_uids=[uid])
    return render(
        request,
        "study.html",
        title=f"Study of {head.patient_name or head.patient_id or 'unnamed patient'}",
        head=head,
        birth_date=_date(str(_first(match, BIRTH_DATE))),
        sex=str(_first(match, SEX)),
        source=source,
        series=rows,
        replicas=replicas,
        holds=holds,
        history=history,
        logged=logged,
        viewer=viewer,
        patient_pk=patient_pk,
        total_size=total_size,
        total_stored=total_stored,
    )


@page()
async def thumbnail(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """A series' thumbnail (the archive's renderer, as ``/thumbnail`` of DICOMweb), for the
    study page.  Never queues a restore: an offline series has no thumbnail (404)."""
    archive = archive_of(request)
    uid, series_uid = request.match_info["study"], request.match_info["series"]
    await _readable_study(request, visitor, uid)
    if not is_valid_uid(series_uid):
        raise NotFound("not a Series Instance UID")
    instances = await archive.retriever.find(
        uid, series_uid, scope=patient_scope(caller_source(request, visitor))
    )
    online = [i for i in instances if i.tier not in archive.store.offline_tiers]
    if not online:
        raise NotFound("the series is in an offline tier: no thumbnail without a restore")
    options = archive.renderer.thumbnail_options("image/jpeg", None)
    middle = online[len(online) // 2]
    try:
        image = (await archive.renderer.frames(middle, [1], options))[0][1]
    except CannotRender as exc:
        raise NotFound(f"no thumbnail: {exc}") from exc
    await request.app[AUDIT].record(
        Access(
            actor=visitor.name,
            origin=request.remote or "",
            action=RETRIEVE,
            study_uids=[uid],
            series_uid=series_uid,
            sop_uid=middle.sop_uid,
            detail={"protocol": "console", "page": "thumbnail", "path": request.path},
        )
    )
    return web.Response(body=image, content_type="image/jpeg")
