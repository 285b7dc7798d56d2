"""Disaster recovery: per replica what is replicated, the backlog and the RPO as it stands
(``lifecycle.dr.status``); run a failover drill and read its report (``lifecycle.dr.drill``,
``lifecycle.dr.report``); past drills; fixity checks (``lifecycle.dr.fixity``), run and past.

A drill or a fixity check runs in the request (a sample of 100 instances takes seconds); the
form says so and the page answers when it is done.  Both are recorded and audited by the
engine in the name of the signed-in token.
"""

from __future__ import annotations

from aiohttp import web

from lifecycle import listings
from lifecycle.dr import drill, fixity
from lifecycle.dr import report as dr_report
from lifecycle.dr import status as dr_status
from vna.errors import InvalidRequest
from vna.security.audit import AuditFilter, search_newest
from vna.ui.core import Pager, Visitor, archive_of, audit_view, page, render, url
from vna.ui.pages.retention import report_response
from vna.ui.snapshots import forget, snapshot

#: Past fixity checks shown (newest first; the audit page finds older ones).
FIXITY_SHOWN = 10


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/dr", dr_page, name="dr")
    router.add_post("/dr/drills", drill_run, name="dr-drill-run")
    router.add_get(r"/dr/drills/{drill:\d+}", drill_page, name="dr-drill")
    router.add_get(r"/dr/drills/{drill:\d+}/report.html", drill_report, name="dr-drill-report")
    router.add_post("/dr/fixity", fixity_run, name="fixity-run")


def _number(value: object, what: str, *, low: float = 1) -> float | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise InvalidRequest(f"{what} must be a number, got {text!r}") from None
    if number < low:
        raise InvalidRequest(f"{what} must be at least {low:g}")
    return number


@page(admin=True)
async def dr_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    figures = await snapshot(
        archive,
        "dr-status",
        lambda: dr_status.collect_status(archive),
        refresh=request.query.get("refresh") == "1",
    )
    data = figures.data
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    past, pager = pager.cut(await listings.drills(archive.db, pager.fetch, pager.offset))
    async with archive.db.acquire() as conn:
        checks = await search_newest(conn, AuditFilter(action="fixity-check", limit=FIXITY_SHOWN))
    stores = [data["active_store"]] + [
        r["name"] for r in data["replicas"] if r["name"] != data["active_store"]
    ]
    fixed = request.query.get("fixity", "")
    return render(
        request,
        "dr.html",
        title="Disaster recovery",
        state=data,
        taken_at=figures.taken_at,
        drills=past,
        checks=checks,
        stores=stores,
        pager=pager,
        links=pager.links(request.query.items()),
        notice={
            "ok": "Fixity check done: every instance read was intact.",
            "problems": "Fixity check done: problems were found (see below).",
        }.get(fixed, ""),
    )


@page(admin=True)
async def drill_run(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    form = await request.post()
    full = form.get("amount") == "full"
    sample = None if full else _number(form.get("sample"), "Sample")
    max_rpo = _number(form.get("max_rpo"), "RPO target", low=0)
    result = await drill.drill(
        archive,
        replica=str(form.get("replica", "")) or None,
        full=full,
        sample=int(sample) if sample is not None else None,
        actor=visitor.name,
        max_rpo_seconds=max_rpo,
    )
    forget(archive)
    raise web.HTTPSeeOther(url(request, "dr-drill", drill=str(result.id)))


@page(admin=True)
async def drill_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    result = await listings.load_drill(archive_of(request).db, int(request.match_info["drill"]))
    return render(
        request,
        "dr_drill.html",
        title=f"DR drill {result.id}",
        r=result,
        reasons=dr_report.drill_reasons(result),
    )


@page(admin=True)
async def drill_report(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The drill's HTML report, as ``vna dr drill --report`` writes it (it names the studies
    of the instances it lists: audited like a query)."""
    result = await listings.load_drill(archive_of(request).db, int(request.match_info["drill"]))
    studies = [d.study_uid for d in result.defects] + [i["study_uid"] for i in result.lost]
    await audit_view(
        request, visitor, what="dr-drill-report", study_uids=studies, detail={"drill": result.id}
    )
    return report_response(dr_report.render_drill_html(result), "html", f"dr-drill-{result.id}")


@page(admin=True)
async def fixity_run(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    assert archive.sites is not None
    form = await request.post()
    sample = _number(form.get("sample"), "Sample")
    found = await fixity.verify(
        archive.db,
        archive.sites,
        sample=int(sample) if sample is not None else None,
        store_name=str(form.get("store", "")) or None,
        scratch_dir=archive.incoming,
        actor=visitor.name,
    )
    forget(archive)
    raise web.HTTPSeeOther(url(request, "dr") + ("?fixity=ok" if found.ok else "?fixity=problems"))
