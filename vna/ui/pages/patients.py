"""Patients (administrators): find identities, a patient's page (demographics, studies, links),
link and unlink, correct, merge with a preview of what moves, and the list of changes with
undo.  Every action is a call of the engine (:mod:`vna.admin.patients`), which audits it,
exactly as ``/admin`` and ``vna patients`` call it; the console has no SQL of its own here.

Patients are named in URLs by their catalogue row id, never by PatientID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from vna.admin import patients as engine
from vna.admin.patients import Identity
from vna.catalog.console import patient_by_pk
from vna.catalog.search import search_page
from vna.dicom.qido_params import parse_qido
from vna.errors import InvalidRequest, NotFound
from vna.ui.core import Pager, Visitor, archive_of, audit_view, page, render, url
from vna.ui.pages.studies import study_row

#: What a redirect after an action says (fixed texts: nothing from the request is echoed).
DONE = {
    "updated": "The correction was applied to the catalogue and every stored object.",
    "linked": "The identities are linked.",
    "unlinked": "The link was removed.",
    "accepted": "The proposed link was accepted: the identities are linked.",
    "rejected": "The proposed link was rejected; it will not be proposed again.",
    "merged": "The patients were merged.",
    "undone": "The change was undone.",
}
#: The correction form's fields: (DICOM keyword, label).
UPDATE_FIELDS = (
    ("PatientName", "Patient name"),
    ("PatientBirthDate", "Birth date (YYYYMMDD)"),
    ("PatientSex", "Sex (M, F, O)"),
    ("PatientID", "Patient ID"),
    ("IssuerOfPatientID", "Issuer of patient ID"),
)
_COLUMNS = {
    "PatientName": "patient_name",
    "PatientBirthDate": "birth_date",
    "PatientSex": "sex",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer",
}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/patients", patients, name="patients")
    router.add_post("/patients", patients)
    router.add_get("/patients/changes", changes, name="changes")
    router.add_post("/patients/changes/{change:\\d+}/undo", undo, name="change-undo")
    router.add_get("/patients/{pk:\\d+}", patient, name="patient")
    router.add_post("/patients/{pk:\\d+}/update", update, name="patient-update")
    router.add_post("/patients/{pk:\\d+}/link", link, name="patient-link")
    router.add_post("/patients/{pk:\\d+}/unlink", unlink, name="patient-unlink")
    router.add_post(
        "/patients/{pk:\\d+}/pending/{pending:\\d+}/{decision:accept|reject}",
        decide_pending,
        name="pending-decide",
    )
    router.add_post("/patients/{pk:\\d+}/merge/preview", merge_preview, name="merge-preview")
    router.add_post("/patients/{pk:\\d+}/merge", merge, name="patient-merge")


def _done(request: web.Request) -> str:
    return DONE.get(request.query.get("done", ""), "")


@page(admin=True)
async def patients(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Find patients by PatientID (and issuer); all of them, page by page, without one."""
    archive = archive_of(request)
    size = archive.settings.ui.page_size
    if request.method != "POST":
        return render(request, "patients.html", title="Patients", form={}, rows=None, pager=None)
    posted = await request.post()
    form = {k: str(posted.get(k, "")).strip() for k in ("patient_id", "issuer")}
    pager = Pager.of({"page": str(posted.get("page", "1"))}, size)
    identity = Identity(form["patient_id"], form["issuer"]) if form["patient_id"] else None
    found = await engine.find_patients(
        archive.db, identity, pager.fetch, any_issuer=not form["issuer"], offset=pager.offset
    )
    rows, pager = pager.cut(found)
    await audit_view(
        request,
        visitor,
        what="patient-search",
        patients=[(r["patient_id"], r["issuer"]) for r in rows],
        detail={"criteria": {k: v for k, v in form.items() if v}, "matches": len(rows)},
    )
    return render(request, "patients.html", title="Patients", form=form, rows=rows, pager=pager)


async def _patient(request: web.Request) -> dict[str, Any]:
    archive = archive_of(request)
    async with archive.db.acquire() as conn:
        found = await patient_by_pk(conn, int(request.match_info["pk"]))
    if found is None:
        raise NotFound("no such patient")
    return found


def _identity(row: Mapping[str, Any]) -> Identity:
    return Identity(row["patient_id"], row["issuer"])


async def _studies_of(request: web.Request, identity: Identity) -> list[Any]:
    """The patient's studies through the QIDO-RS search (an administrator sees every source)."""
    archive = archive_of(request)
    settings = archive.settings
    query = parse_qido(
        "study",
        [
            ("PatientID", identity.patient_id),
            ("IssuerOfPatientID", identity.issuer),
            ("includefield", "StudyDescription,IssuerOfPatientID"),
        ],
    )
    async with archive.db.acquire() as conn:
        found = await search_page(
            conn,
            query,
            max_results=settings.query.max_results,
            default_limit=settings.query.max_results,
            offline_tiers=archive.store.offline_tiers,
        )
    # IssuerOfPatientID "" is universal matching in QIDO: keep exactly this identity's.
    return [r for r in map(study_row, found.results) if r.issuer == identity.issuer]


@page(admin=True)
async def patient(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    row = await _patient(request)
    identity = _identity(row)
    studies = await _studies_of(request, identity)
    links = await engine.links_of(archive.db, identity)
    pending = [
        p
        for p in await engine.pending_links(archive.db, "pending", 1000)
        if identity in engine.link_identities(p)
    ]
    await audit_view(
        request,
        visitor,
        what="patient",
        patients=[(identity.patient_id, identity.issuer)],
        study_uids=[s.uid for s in studies],
    )
    return render(
        request,
        "patient.html",
        title=f"Patient {row['patient_name'] or identity}",
        patient=row,
        identity=str(identity),
        studies=studies,
        links=[_link(link, identity) for link in links["links"]],
        same_person=[i for i in links["same_person"] if i != str(identity)],
        pending=pending,
        fields=[(k, label, _shown(row, k)) for k, label in UPDATE_FIELDS],
        done=_done(request),
    )


def _shown(row: Mapping[str, Any], keyword: str) -> str:
    value = row[_COLUMNS[keyword]]
    if value is None:
        return ""
    if hasattr(value, "strftime"):
        return value.strftime("%Y%m%d")
    return str(value)


def _link(row: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    a, b = engine.link_identities(row)
    return {
        "id": row["id"],
        "other": str(b if a == identity else a),
        "reason": row["reason"],
        "by": row["created_by"],
        "at": row["created_at"],
    }


async def _form(request: web.Request) -> Mapping[str, str]:
    posted = await request.post()
    return {k: str(v).strip() for k, v in posted.items() if isinstance(v, str)}


def _back(request: web.Request, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(url(request, "patient", pk=request.match_info["pk"]) + f"?done={done}")


@page(admin=True)
async def update(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    row = await _patient(request)
    form = await _form(request)
    # Only what the administrator changed is corrected.
    values = {k: form[k] for k, _ in UPDATE_FIELDS if k in form and form[k] != _shown(row, k)}
    await engine.update_patient(
        archive_of(request),
        _identity(row),
        values,
        actor=visitor.name,
        origin=request.remote or "",
    )
    raise _back(request, "updated")


def _other(form: Mapping[str, str], prefix: str = "") -> Identity:
    patient_id = form.get(f"{prefix}patient_id", "")
    if not patient_id:
        raise InvalidRequest("name the other patient's Patient ID")
    return Identity(patient_id, form.get(f"{prefix}issuer", ""))


@page(admin=True)
async def link(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    row = await _patient(request)
    form = await _form(request)
    await engine.link(
        archive_of(request).db,
        _identity(row),
        _other(form),
        reason=form.get("reason", ""),
        actor=visitor.name,
        origin=request.remote or "",
    )
    raise _back(request, "linked")


@page(admin=True)
async def unlink(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    await _patient(request)
    form = await _form(request)
    if not form.get("link", "").isdigit():
        raise InvalidRequest("no link named")
    await engine.unlink(
        archive_of(request).db,
        int(form["link"]),
        actor=visitor.name,
        origin=request.remote or "",
    )
    raise _back(request, "unlinked")


@page(admin=True)
async def decide_pending(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Accept or reject a link the archive proposes (an identical instance arrived under two
    identities)."""
    await _patient(request)
    pending_id = int(request.match_info["pending"])
    db = archive_of(request).db
    if request.match_info["decision"] == "accept":
        await engine.accept_pending_link(
            db, pending_id, actor=visitor.name, origin=request.remote or ""
        )
        raise _back(request, "accepted")
    await engine.reject_pending_link(
        db, pending_id, actor=visitor.name, origin=request.remote or ""
    )
    raise _back(request, "rejected")


@page(admin=True)
async def merge_preview(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """What a merge would move: the studies of this patient, and the identity and
    demographics their objects would take.  Nothing changes until it is confirmed."""
    archive = archive_of(request)
    row = await _patient(request)
    source = _identity(row)
    target = _other(await _form(request), "into_")
    if target == source:
        raise InvalidRequest("a patient cannot be merged into itself")
    found = await engine.find_patients(archive.db, target, 1)
    if not found:
        raise NotFound(f"patient {target} is not in the archive")
    studies = await _studies_of(request, source)
    target_studies = await _studies_of(request, target)
    await audit_view(
        request,
        visitor,
        what="merge-preview",
        patients=[(source.patient_id, source.issuer), (target.patient_id, target.issuer)],
        study_uids=[s.uid for s in studies + target_studies],
    )
    return render(
        request,
        "merge_preview.html",
        title="Merge: preview",
        patient=row,
        source=str(source),
        target=found[0],
        target_identity=str(target),
        studies=studies,
        target_studies=target_studies,
        instances=sum(s.instances or 0 for s in studies),
    )


@page(admin=True)
async def merge(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    row = await _patient(request)
    target = _other(await _form(request), "into_")
    change = await engine.merge_patients(
        archive, _identity(row), target, actor=visitor.name, origin=request.remote or ""
    )
    raise web.HTTPSeeOther(url(request, "changes") + f"?done=merged&change={change}")


@page(admin=True)
async def changes(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    found = await engine.list_changes(archive.db, pager.fetch, pager.offset)
    rows, pager = pager.cut(found)
    await audit_view(
        request,
        visitor,
        what="patient-changes",
        patients=[(r["patient_id"], r["issuer"]) for r in rows],
    )
    change = request.query.get("change", "")
    return render(
        request,
        "changes.html",
        title="Patient changes",
        rows=rows,
        pager=pager,
        links=pager.links([(k, v) for k, v in request.query.items() if k == "page"]),
        done=_done(request),
        change=int(change) if change.isdigit() else None,
    )


@page(admin=True)
async def undo(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    await engine.undo_change(
        archive_of(request),
        int(request.match_info["change"]),
        actor=visitor.name,
        origin=request.remote or "",
    )
    raise web.HTTPSeeOther(url(request, "changes") + "?done=undone")
