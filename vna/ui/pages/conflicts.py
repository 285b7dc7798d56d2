"""Conflicts (administrators): quarantined versions of archived instances, the two headers side
by side with the differing values highlighted, accept or discard.  The engine is
:mod:`vna.admin.conflicts` (which audits each resolution), as for ``/admin/conflicts``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydicom.datadict import keyword_for_tag

from vna.admin import conflicts as engine
from vna.errors import InvalidRequest
from vna.ui.core import Pager, Visitor, archive_of, audit_view, page, render, url

STATES = ("open", "accepted", "discarded", "all")
DONE = {"accept": "The quarantined version was accepted.", "discard": "It was discarded."}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/conflicts", conflicts, name="conflicts")
    router.add_get("/conflicts/{id:\\d+}", conflict, name="conflict")
    router.add_post("/conflicts/{id:\\d+}/resolve", resolve, name="conflict-resolve")


@page(admin=True)
async def conflicts(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    state = request.query.get("state", "open")
    if state not in STATES:
        raise InvalidRequest(f"state is one of {', '.join(STATES)}")
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    found = await engine.list_conflicts(
        archive.db, None if state == "all" else state, pager.fetch, pager.offset
    )
    rows, pager = pager.cut(found)
    await audit_view(
        request,
        visitor,
        what="conflicts",
        study_uids=[r["study_uid"] for r in rows],
        patients=[(r["patient_id"] or "", r["issuer"] or "") for r in rows],
    )
    return render(
        request,
        "conflicts.html",
        title="Conflicts",
        rows=rows,
        state=state,
        states=STATES,
        pager=pager,
        links=pager.links([("state", state), ("page", str(pager.number))]),
        done=DONE.get(request.query.get("done", ""), ""),
    )


def side_by_side(
    archived: dict[str, Any] | None, quarantined: dict[str, Any], differing: set[str]
) -> list[dict[str, Any]]:
    """One row per top-level attribute of either header: keyword, both values as text, and
    whether they differ (the engine's comparison decides); the differing ones first."""
    rows = []
    archived = archived or {}
    for tag in sorted(set(archived) | set(quarantined)):
        rows.append(
            {
                "tag": f"({tag[:4]},{tag[4:]})",
                "keyword": keyword_for_tag(int(tag, 16)) or "",
                "archived": _text(archived.get(tag)),
                "quarantined": _text(quarantined.get(tag)),
                "differs": tag in differing,
            }
        )
    # The differing attributes first: on a long header they would be far apart.
    return sorted(rows, key=lambda r: not r["differs"])


def _text(element: dict[str, Any] | None) -> str:
    if element is None:
        return "(absent)"
    if "Value" in element:
        values = element["Value"]
        if element.get("vr") == "SQ":
            return f"(sequence of {len(values)} item{'s' if len(values) != 1 else ''})"
        shown = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values]
        return "\\".join(shown)
    if "InlineBinary" in element or "BulkDataURI" in element:
        return "(binary)"
    return ""


@page(admin=True)
async def conflict(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    shown = await engine.show_conflict(archive.db, int(request.match_info["id"]), with_headers=True)
    c = shown["conflict"]
    differing = {d["tag"] for d in shown["differences"]}
    await audit_view(
        request,
        visitor,
        what="conflict",
        study_uids=[c["study_uid"]],
        detail={"conflict": c["id"]},
    )
    return render(
        request,
        "conflict.html",
        title=f"Conflict {c['id']}",
        c=c,
        archived=shown["archived"],
        rows=side_by_side(shown["archived_header"], shown["quarantined_header"], differing),
        differences=len(differing),
        note=shown.get("note", ""),
    )


@page(admin=True)
async def resolve(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    posted = await request.post()
    action = str(posted.get("action", ""))
    await engine.resolve_conflict(
        archive_of(request).db,
        int(request.match_info["id"]),
        action,
        actor=visitor.name,
        origin=request.remote or "",
    )
    raise web.HTTPSeeOther(url(request, "conflicts") + f"?done={action}")
