"""The audit trail: search by patient, study, user, action and time range, newest first, a
page at a time; export what matches as CSV or as DICOM audit messages (PS3.15 A.5), one JSON
object a line, as ``vna audit --format jsonl`` prints them.

The form is POSTed (patient IDs stay out of URLs), and looking at the audit trail is itself
audited: it discloses who saw which patient.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from vna.errors import InvalidRequest
from vna.security.audit import AuditFilter, search_newest
from vna.security.audit_message import audit_message
from vna.ui.core import Pager, Visitor, archive_of, audit_view, page, render

#: The search form's fields: (form name, label, input type).
FIELDS = (
    ("patient_id", "Patient ID", "text"),
    ("issuer", "Issuer of patient ID", "text"),
    ("study_uid", "Study Instance UID", "text"),
    ("user", "User", "text"),
    ("action", "Action", "text"),
    ("since", "From (UTC)", "datetime-local"),
    ("until", "Before (UTC)", "datetime-local"),
)
#: Rows an export holds at most (as ``vna audit``'s default limit).
EXPORT_LIMIT = 100_000
CSV_COLUMNS = (
    "at",
    "actor",
    "origin",
    "action",
    "outcome",
    "patient_id",
    "issuer",
    "study_uid",
    "series_uid",
    "sop_uid",
    "study_uids",
    "patient_ids",
    "detail",
)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/audit", audit_page, name="audit")
    router.add_post("/audit", audit_page)
    router.add_post("/audit/export", audit_export, name="audit-export")


def _time(text: str, what: str) -> dt.datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{what} must be a date (2025-01-31) or a date and time (2025-01-31T08:00),"
            f" got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def audit_filter(form: Mapping[str, str], limit: int) -> AuditFilter:
    def text(name: str) -> str | None:
        return form.get(name, "").strip() or None

    return AuditFilter(
        patient_id=text("patient_id"),
        issuer=text("issuer"),
        study_uid=text("study_uid"),
        actor=text("user"),
        action=text("action"),
        since=_time(form.get("since", ""), "From"),
        until=_time(form.get("until", ""), "Before"),
        limit=limit,
    )


def _criteria(form: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in form.items() if v}


@page(admin=True)
async def audit_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    archive = archive_of(request)
    if request.method != "POST":
        return render(
            request,
            "audit.html",
            title="Audit trail",
            form={},
            fields=FIELDS,
            rows=None,
            pager=None,
        )
    posted = await request.post()
    form = {name: str(posted.get(name, "")) for name, _, _ in FIELDS}
    pager = Pager.of({"page": str(posted.get("page", "1"))}, archive.settings.ui.page_size)
    found = audit_filter(form, pager.fetch)
    async with archive.db.acquire() as conn:
        rows, pager = pager.cut(await search_newest(conn, found, pager.offset))
    await _audit_search(request, visitor, rows, form, "audit-search")
    return render(
        request,
        "audit.html",
        title="Audit trail",
        form=form,
        fields=FIELDS,
        rows=[_shown(r) for r in rows],
        pager=pager,
    )


@page(admin=True)
async def audit_export(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Every matching row (up to EXPORT_LIMIT), oldest first, as CSV or DICOM JSON lines."""
    archive = archive_of(request)
    posted = await request.post()
    form = {name: str(posted.get(name, "")) for name, _, _ in FIELDS}
    fmt = str(posted.get("format", "csv"))
    if fmt not in ("csv", "jsonl"):
        raise InvalidRequest("export as csv or jsonl")
    async with archive.db.acquire() as conn:
        rows = await search_newest(conn, audit_filter(form, EXPORT_LIMIT))
    rows.reverse()  # oldest first, as `vna audit` prints them
    await _audit_search(request, visitor, rows, form, f"audit-export-{fmt}")
    if fmt == "csv":
        body, media = export_csv(rows), "text/csv"
    else:
        ae_title = archive.settings.dimse.ae_title
        body = "".join(
            json.dumps(audit_message(r, ae_title), default=_json_default) + "\n" for r in rows
        )
        media = "application/jsonl"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.Response(text=body, content_type=media, charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


async def _audit_search(
    request: web.Request,
    visitor: Visitor,
    rows: list[dict[str, Any]],
    form: Mapping[str, str],
    what: str,
) -> None:
    studies = {r["study_uid"] for r in rows if r["study_uid"]}
    patients = {(r["patient_id"], r["issuer"] or "") for r in rows if r["patient_id"]}
    await audit_view(
        request,
        visitor,
        what=what,
        study_uids=sorted(studies),
        patients=sorted(patients),
        detail={"criteria": _criteria(form), "rows": len(rows)},
    )


def export_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["at"].astimezone(dt.UTC).isoformat(),
                *(r[c] or "" for c in CSV_COLUMNS[1:10]),
                " ".join(r["study_uids"] or []),
                " ".join(r["patient_ids"] or []),
                json.dumps(r["detail"] or {}, default=_json_default, sort_keys=True),
            ]
        )
    return buf.getvalue()


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    detail = row["detail"] or {}
    if isinstance(detail, str):
        detail = json.loads(detail)
    return {**row, "detail_text": json.dumps(detail, default=_json_default, sort_keys=True)[:400]}


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
