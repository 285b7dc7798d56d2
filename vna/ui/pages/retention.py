"""Retention and legal holds: the rules in force, studies coming due, reviews (create with an
as-of date, read, approve after a confirmation naming what goes), legal holds (list, set,
release).

Every action is the engine's (``lifecycle.retention``), which audits it in the name of the
signed-in token; an approval re-checks every study (legal holds above all) before deleting
it, so a held study is never deleted whatever this page shows.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from markupsafe import Markup

from lifecycle import listings, report, retention
from lifecycle.policy.deletion import Verdict
from lifecycle.status import human_bytes
from vna.errors import InvalidRequest
from vna.ui.core import Pager, Visitor, archive_of, audit_view, page, render, url

#: How far ahead the "coming due" list looks, in days (the form's choices).
WINDOWS = (30, 90, 365)
#: The next dates studies fall due on, listed on the retention page.
NEXT_DATES = 10
#: The downloads of a review: (format, media type).
REPORT_TYPES = {
    "html": "text/html",
    "csv": "text/csv",
    "json": "application/json",
}
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/retention", retention_page, name="retention")
    router.add_get("/retention/due", coming_due, name="retention-due")
    router.add_post("/retention/reviews", review_create, name="review-create")
    router.add_get(r"/retention/reviews/{review:\d+}", review_page, name="review")
    router.add_get(
        r"/retention/reviews/{review:\d+}/report.{fmt:html|csv|json}",
        review_report,
        name="review-report",
    )
    router.add_get(r"/retention/reviews/{review:\d+}/approve", approve_form, name="review-approve")
    router.add_post(r"/retention/reviews/{review:\d+}/approve", approve_post)
    router.add_get("/holds", holds_page, name="holds")
    router.add_post("/holds", hold_set, name="hold-set")
    router.add_post(r"/holds/{hold:\d+}/release", hold_release, name="hold-release")


def parse_day(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(f"{what} must be a date (YYYY-MM-DD), got {value!r}") from None


def _id(request: web.Request, key: str) -> int:
    return int(request.match_info[key])


# --- retention ----------------------------------------------------------------------------------


@page(admin=True)
async def retention_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    rows, pager = pager.cut(await listings.reviews(archive.db, pager.fetch, pager.offset))
    upcoming = await listings.next_due_dates(archive.db, dt.date.today(), NEXT_DATES)
    return render(
        request,
        "retention.html",
        upcoming=upcoming,
        title="Retention",
        rules=archive.settings.retention_rules,
        reviews=rows,
        pager=pager,
        links=pager.links(request.query.items()),
        today=dt.date.today().isoformat(),
        windows=WINDOWS,
        notice=_notice(request.query),
    )


@page(admin=True)
async def coming_due(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Studies due now (``within=0``) or falling due within the next N days."""
    archive = archive_of(request)
    try:
        within = int(request.query.get("within", "0"))
    except ValueError:
        raise InvalidRequest("within must be a number of days") from None
    if within < 0 or within > 36_500:
        raise InvalidRequest("within must be from 0 to 36500 days")
    today = dt.date.today()
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    # A study falls due the day after its retain-until date: due now is retain_until < today.
    since, before = (None, today) if within == 0 else (today, today + dt.timedelta(within))
    rows, pager = pager.cut(
        await listings.coming_due(archive.db, since, before, pager.fetch, pager.offset)
    )
    await audit_view(
        request,
        visitor,
        what="retention-coming-due",
        study_uids=[r["study_uid"] for r in rows],
        detail={"within_days": within, "matches": len(rows)},
    )
    return render(
        request,
        "retention_due.html",
        title="Due now" if within == 0 else f"Coming due within {within} days",
        rows=rows,
        within=within,
        windows=WINDOWS,
        pager=pager,
        links=pager.links(request.query.items()),
    )


@page(admin=True)
async def review_create(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    form = await request.post()
    as_of = parse_day(str(form.get("as_of", "")) or dt.date.today().isoformat(), "As of")
    review = await retention.create_review(
        archive.db, archive.settings.retention_rules, as_of, visitor.name
    )
    raise web.HTTPSeeOther(url(request, "review", review=str(review.id)) + "?created=1")


@page(admin=True)
async def review_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The review as its HTML report shows it (figures, by rule/source/year, held studies,
    studies due), the long list a page at a time, and the approval button."""
    archive = archive_of(request)
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    # Grouped in the catalogue and read a page at a time: a review lists tens of thousands.
    seen = await listings.review_overview(
        archive.db, _id(request, "review"), pager.fetch, pager.offset
    )
    review = seen.review
    shown, pager = pager.cut(seen.due_items)
    held = seen.held_items[: pager.size]
    await audit_view(
        request,
        visitor,
        what="retention-review",
        study_uids=[i["study_uid"] for i in [*held, *shown]],
        detail={"review": review.id},
    )
    rejected_due = [r for r in review.rejected if r["state"] == "due"]
    chart = report.svg_bar_chart(
        [
            (g["key"], g["bytes"], f"{human_bytes(g['bytes'])}, {report.studies(g['studies'])}")
            for g in seen.by_year
        ],
        title="Size of the studies due, by year of the study date",
    )
    return render(
        request,
        "retention_review.html",
        title=f"Retention review {review.id}",
        review=review,
        heading=report.heading(review),
        due=seen.due,
        shown=shown,
        held=held,
        held_total=seen.held,
        by_rule=seen.by_rule,
        by_source=seen.by_source,
        by_year=seen.by_year,
        # Built by the report module with every text escaped (as in the HTML report).
        chart=Markup(chart),
        can_approve=review.state == "open" and bool(seen.due["studies"] or rejected_due),
        pager=pager,
        links=pager.links(request.query.items()),
        notice=_notice(request.query),
    )


@page(admin=True)
async def review_report(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The review's report exactly as ``vna retention show --format html|csv|json`` writes
    it; the HTML one opens here (its stylesheet allowed by its hash), the others download."""
    archive = archive_of(request)
    review = await retention.load_review(archive.db, _id(request, "review"))
    fmt = request.match_info["fmt"]
    await audit_view(
        request,
        visitor,
        what="retention-review-report",
        study_uids=[i["study_uid"] for i in review.items],
        detail={"review": review.id, "format": fmt},
    )
    return report_response(report.render(review, fmt), fmt, f"retention-review-{review.id}")


def report_response(text: str, fmt: str, name: str) -> web.Response:
    """A stored report as a response: HTML shown with a policy allowing only its own inline
    stylesheet (no script at all), CSV and JSON as downloads."""
    response = web.Response(text=text, content_type=REPORT_TYPES[fmt], charset="utf-8")
    if fmt == "html":
        hashes = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
            for style in _STYLE.findall(text)
        )
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src {hashes or chr(39) + 'none' + chr(39)};"
            " img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
    else:
        response.headers["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@page(admin=True)
async def approve_form(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The confirmation: what approving deletes now (studies, instances, bytes, copies), what
    waits for its date and what stays (on hold, changed), judged now by the engine's guards."""
    archive = archive_of(request)
    review_id = _id(request, "review")
    plan = await retention.plan_approval(archive, archive.settings.retention_rules, review_id)
    review = await retention.load_review(archive.db, review_id)
    await audit_view(
        request,
        visitor,
        what="retention-approve-confirm",
        study_uids=[p.study_uid for p in plan],
        detail={"review": review_id},
    )
    return render(request, "retention_approve.html", **_plan_context(review, plan))


def _plan_context(
    review: retention.Review, plan: list[retention.PlannedDeletion]
) -> dict[str, Any]:
    deleting = [p for p in plan if p.verdict is Verdict.DELETE]
    rejected = [r for r in review.rejected if r["state"] == "due"]
    return {
        "title": f"Approve retention review {review.id}",
        "review": review,
        "plan": plan,
        "deleting": deleting,
        "later": [p for p in plan if p.verdict is Verdict.PENDING],
        "kept": [p for p in plan if p.verdict is Verdict.SKIP],
        "held": review.held,
        "n_studies": len(deleting),
        "n_instances": sum(p.instances for p in deleting),
        "n_bytes": sum(p.bytes for p in deleting),
        "n_objects": sum(p.objects for p in deleting),
        "n_rejected": len(rejected),
        "rejected_bytes": sum(r["bytes"] for r in rejected),
        "stores": plan[0].stores if plan else (),
        "studies_text": report.studies(len(deleting)),
    }


@page(admin=True)
async def approve_post(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Approve, if what the visitor confirmed (studies and bytes) is still what would go."""
    archive = archive_of(request)
    review_id = _id(request, "review")
    form = await request.post()
    if form.get("confirm") != "yes":
        raise InvalidRequest("tick the confirmation to approve the deletions")
    rules = archive.settings.retention_rules
    plan = await retention.plan_approval(archive, rules, review_id)
    deleting = [p for p in plan if p.verdict is Verdict.DELETE]
    studies, size = len(deleting), sum(p.bytes for p in deleting)
    if (str(studies), str(size)) != (str(form.get("studies")), str(form.get("bytes"))):
        raise InvalidRequest(
            f"review {review_id} changed since the confirmation was shown (it now deletes"
            f" {report.studies(studies)}, {size:,} bytes); nothing was approved: confirm again"
        )
    await retention.approve(
        archive,
        rules,
        review_id,
        visitor.name,
        detail={"confirmed": "console", "studies": studies, "bytes": size},
    )
    raise web.HTTPSeeOther(url(request, "review", review=str(review_id)) + "?approved=1")


# --- legal holds --------------------------------------------------------------------------------


@page(admin=True)
async def holds_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    include_released = request.query.get("all") == "1"
    everything = await retention.list_holds(archive.db, include_released)
    everything.reverse()  # newest first
    pager = Pager.of(request.query, archive.settings.ui.page_size)
    rows, pager = pager.cut(everything[pager.offset : pager.offset + pager.fetch])
    await audit_view(
        request,
        visitor,
        what="legal-holds",
        study_uids=[h["study_uid"] for h in rows if h["study_uid"]],
        patients=[(h["patient_id"], h["issuer"] or "") for h in rows if h["patient_id"]],
    )
    return render(
        request,
        "holds.html",
        title="Legal holds",
        holds=rows,
        include_released=include_released,
        pager=pager,
        links=pager.links(request.query.items()),
        notice=_notice(request.query),
    )


@page(admin=True)
async def hold_set(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    form = await request.post()
    study = str(form.get("study_uid", "")).strip()
    patient = str(form.get("patient_id", "")).strip()
    issuer = str(form.get("issuer", "")).strip()
    if bool(study) == bool(patient):
        raise InvalidRequest("a legal hold is on a study (its UID) or a patient (its ID), not both")
    await retention.set_hold(
        archive_of(request).db,
        actor=visitor.name,
        reason=str(form.get("reason", "")),
        study_uid=study or None,
        patient_id=patient or None,
        issuer=issuer or None,
    )
    raise web.HTTPSeeOther(url(request, "holds") + "?set=1")


@page(admin=True)
async def hold_release(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    form = await request.post()
    reason = str(form.get("reason", "")).strip()
    if not reason:
        raise InvalidRequest("say why the legal hold is released (the reason is audited)")
    await retention.release_hold(archive_of(request).db, _id(request, "hold"), visitor.name, reason)
    raise web.HTTPSeeOther(url(request, "holds") + "?released=1")


#: Messages after a redirect, by query key: fixed texts, nothing from the request.
NOTICES = {
    "created": "Review created. Nothing is deleted until it is approved.",
    "approved": "Review approved: the outcome of each study is listed below.",
    "set": "Legal hold set.",
    "released": "Legal hold released.",
}


def _notice(query: Mapping[str, str]) -> str:
    return next((text for key, text in NOTICES.items() if query.get(key) == "1"), "")
