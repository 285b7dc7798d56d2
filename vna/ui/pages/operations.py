"""Operations: the lifecycle queue (ready, running, dead jobs with their last error, retry),
bytes per storage tier and compression savings: the figures of ``vna lifecycle status``
(``lifecycle.status.collect``), with ``vna lifecycle retry`` as buttons."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from lifecycle import listings, queue, status
from vna.errors import InvalidRequest
from vna.ui.core import Pager, Visitor, archive_of, page, render, url
from vna.ui.snapshots import forget, snapshot


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/operations", operations, name="operations")
    router.add_post("/operations/retry", retry, name="jobs-retry")


@page(admin=True)
async def operations(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    figures = await snapshot(
        archive,
        "lifecycle-status",
        lambda: status.collect(archive.db, archive.settings, dt.date.today()),
        refresh=request.query.get("refresh") == "1",
    )
    data = figures.data
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    dead, pager = pager.cut(await listings.dead_jobs(archive.db, pager.fetch, pager.offset))
    compression = data["compression"]
    share = (
        100 * compression["saved_bytes"] / compression["original_bytes"]
        if compression["original_bytes"]
        else None
    )
    requeued = request.query.get("requeued", "")
    return render(
        request,
        "operations.html",
        title="Operations",
        state=data,
        taken_at=figures.taken_at,
        dead=dead,
        share=share,
        pager=pager,
        links=pager.links(request.query.items()),
        notice=f"Queued again: {requeued} job(s)." if requeued.isdigit() else "",
    )


@page(admin=True)
async def retry(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Queue dead jobs again: one (``job``) or every dead job (``all``)."""
    form = await request.post()
    all_dead = form.get("all") == "1"
    ids: list[int] = []
    if not all_dead:
        try:
            ids = [int(str(form.get("job", "")))]
        except ValueError:
            raise InvalidRequest("name the dead job to retry") from None
    async with archive_of(request).db.acquire() as conn:
        requeued = await queue.requeue_dead(conn, ids, all_dead)
    forget(archive_of(request))
    if ids and not requeued:
        raise InvalidRequest(f"job {ids[0]} is not dead (or does not exist)")
    raise web.HTTPSeeOther(url(request, "operations") + f"?requeued={len(requeued)}")
