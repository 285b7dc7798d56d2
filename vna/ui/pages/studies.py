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

from vna.catalog.search import search_page
from vna.config import SourceSettings
from vna.dicom.qido_params import parse_qido
from vna.security.query_scope import query_patient_scope
from vna.ui.core import Pager, Visitor, archive_of, audit_view, page, render

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
    rows = [_row(match) for match in results]
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


def _row(match: Mapping[str, Any]) -> StudyRow:
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
