"""A retention review for people and for programs: text table, JSON, CSV and an HTML page.

The HTML page is for a records manager: what is due, how much, under which rule, from which
source and year, what a legal hold keeps back, with a bar chart drawn as inline SVG (no script,
no external file: it prints, and it opens from an e-mail attachment).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from markupsafe import Markup

from lifecycle.html_pages import render_page
from lifecycle.policy.deletion import Verdict
from lifecycle.retention import ApprovalReport, PlannedDeletion, Review
from lifecycle.status import human_bytes

FORMATS = ("table", "json", "csv", "html")

CSV_COLUMNS = (
    "state",
    "study_uid",
    "patient_id",
    "issuer",
    "patient_name",
    "accession_number",
    "study_date",
    "study_description",
    "modalities",
    "source",
    "rule",
    "retain_until",
    "basis",
    "instances",
    "bytes",
    "stored_bytes",
    "hold",
    "outcome",
)


def render(review: Review, fmt: str) -> str:
    renderers: dict[str, Callable[[Review], str]] = {
        "table": render_table,
        "json": render_json,
        "csv": render_csv,
        "html": render_html,
    }
    return renderers[fmt](review)


def summary(
    items: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """Studies and bytes grouped by ``key``, largest first."""
    groups: dict[str, dict[str, Any]] = {}
    for item in items:
        g = groups.setdefault(
            key(item), {"key": key(item), "studies": 0, "instances": 0, "bytes": 0}
        )
        g["studies"] += 1
        g["instances"] += item["instances"]
        g["bytes"] += item["bytes"]
    return sorted(groups.values(), key=lambda g: (-g["bytes"], g["key"]))


def _year(item: dict[str, Any]) -> str:
    return str(item["study_date"].year) if item["study_date"] else "no study date"


# --- text -------------------------------------------------------------------------------------


def render_table(review: Review) -> str:
    out = [_heading(review), ""]
    due, held = review.due, review.held
    out.append(
        f"{_studies(len(due))} due for deletion ({human_bytes(sum(i['bytes'] for i in due))}),"
        f" {len(held)} held back by legal holds"
    )
    if due:
        out.append("")
        out.append(_text_rows(due))
    if held:
        out.append("")
        out.append("held back by a legal hold (never deleted while held):")
        out.append(_text_rows(held, with_hold=True))
    if review.rejected:
        out.append("")
        out.append(_rejected_rows(review.rejected))
    if review.state == "open" and (due or any(r["state"] == "due" for r in review.rejected)):
        out.append("")
        out.append(f"approve with: vna retention approve {review.id}")
    return "\n".join(out)


def _rejected_rows(items: list[dict[str, Any]]) -> str:
    """Instances withdrawn by IOCM rejection notes (lifecycle.rejections), with the reason."""
    due = [i for i in items if i["state"] == "due"]
    lines = [
        f"{len(items)} rejected instances (IOCM rejection notes), {len(due)} due for deletion"
        f" ({human_bytes(sum(i['bytes'] for i in due))}):"
    ]
    for i in items:
        patient = i["patient_id"] + (f" ({i['issuer']})" if i["issuer"] else "")
        lines.append(
            f"  {i['state']:<8} {i['code']}^DCM {i['meaning']}  patient {patient}"
            f"  {human_bytes(i['bytes'])}"
        )
        lines.append(f"    instance {i['sop_uid']} (study {i['study_uid']})")
        lines.append(f"    rejected by note {i['note_sop_uid']}")
        if i["hold"]:
            lines.append(f"    {i['hold']}")
        if i["outcome"]:
            lines.append(f"    {i['outcome']}")
    return "\n".join(lines)


def _heading(review: Review) -> str:
    state = review.state
    if review.approved_by:
        state += f" by {review.approved_by} at {review.approved_at:%Y-%m-%d %H:%M}"
    return (
        f"retention review {review.id} as of {review.as_of} (created by {review.created_by}"
        f" at {review.created_at:%Y-%m-%d %H:%M}; {state})"
    )


def _text_rows(items: list[dict[str, Any]], with_hold: bool = False) -> str:
    header = (
        "state",
        "study date",
        "patient",
        "mod",
        "source",
        "rule",
        "kept until",
        "inst",
        "size",
    )
    rows = [header]
    for i in items:
        rows.append(
            (
                i["state"],
                str(i["study_date"] or "-"),
                i["patient_id"] + (f" ({i['issuer']})" if i["issuer"] else ""),
                ",".join(i["modalities"]),
                i["source"],
                i["rule"],
                str(i["retain_until"]),
                str(i["instances"]),
                human_bytes(i["bytes"]),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for index, i in enumerate(items, start=1):
        lines[index] += f"\n    study {i['study_uid']}"
        if with_hold and i["hold"]:
            lines[index] += f"\n    {i['hold']}"
        if i["outcome"]:
            lines[index] += f"\n    {i['outcome']}"
    return "\n".join(lines)


def render_plan(review_id: int, plan: list[PlannedDeletion]) -> str:
    """What approving a review would do, study by study (before the confirmation)."""
    deleting = [p for p in plan if p.verdict is Verdict.DELETE]
    stores = ", ".join(plan[0].stores) if plan else ""
    out = [
        f"approving review {review_id} deletes {_studies(len(deleting))}"
        f" ({sum(p.instances for p in deleting):,} instances,"
        f" {human_bytes(sum(p.bytes for p in deleting))}): every object of each, earlier"
        " versions and compression originals included, from every store"
        f" ({stores}): {_copies(sum(p.objects for p in deleting))}"
    ]
    labels = {Verdict.DELETE: "delete", Verdict.PENDING: "later", Verdict.SKIP: "keep"}
    for p in plan:
        patient = p.patient_id + (f" ({p.issuer})" if p.issuer else "")
        line = f"  {labels[p.verdict]:7} {p.study_uid}  {patient}"
        if p.verdict is Verdict.DELETE:
            line += f"  {p.instances:,} instances, {human_bytes(p.bytes)}, {_copies(p.objects)}"
        else:
            line += f"  {p.reason}"
        out.append(line)
    return "\n".join(out)


def render_approval(report: ApprovalReport) -> str:
    out = [
        f"review {report.review_id}: deleted {_studies(len(report.deleted))}"
        f" ({human_bytes(report.deleted_bytes)}; {_copies(report.deleted_objects)} removed from"
        " the stores)"
    ]
    if report.pending:
        first = min(d for _, d in report.pending)
        out.append(
            f"{_studies(len(report.pending))} approved but not due yet (the first after {first});"
            " `vna lifecycle run` deletes each on its date"
        )
    if report.skipped:
        out.append(f"{_studies(len(report.skipped))} left alone:")
        out.extend(f"  {uid}: {reason}" for uid, reason in report.skipped)
    if report.left_to_jobs:
        out.append(
            f"{_copies(len(report.left_to_jobs))} could not be removed yet; their deletion jobs"
            " retry (`vna lifecycle status`):"
        )
        out.extend(f"  {store} {key}: {err}" for store, key, err in report.left_to_jobs[:20])
    if report.deleted_instances or report.skipped_instances:
        out.append(f"deleted {len(report.deleted_instances)} rejected instances")
    if report.skipped_instances:
        out.append(f"{len(report.skipped_instances)} rejected instances left alone:")
        out.extend(f"  {uid}: {reason}" for uid, reason in report.skipped_instances)
    return "\n".join(out)


# --- JSON and CSV -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def render_json(review: Review) -> str:
    items = [{k: _plain(v) for k, v in i.items() if k not in ("review_fk",)} for i in review.items]
    document = {
        "review": review.id,
        "as_of": review.as_of.isoformat(),
        "created_at": review.created_at.isoformat(),
        "created_by": review.created_by,
        "state": review.state,
        "approved_by": review.approved_by,
        "approved_at": _plain(review.approved_at),
        "rules_fingerprint": review.rules_fingerprint,
        "due": {
            "studies": len(review.due),
            "bytes": sum(i["bytes"] for i in review.due),
            "stored_bytes": sum(i["stored_bytes"] for i in review.due),
        },
        "held": {"studies": len(review.held), "bytes": sum(i["bytes"] for i in review.held)},
        "by_rule": summary(review.due, lambda i: i["rule"]),
        "by_source": summary(review.due, lambda i: i["source"]),
        "by_year": summary(review.due, _year),
        "items": items,
        "rejected_instances": [
            {k: _plain(v) for k, v in i.items() if k != "review_fk"} for i in review.rejected
        ],
    }
    return json.dumps(document, indent=2)


def render_csv(review: Review) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in review.items:
        row = [i[c] for c in CSV_COLUMNS]
        row[CSV_COLUMNS.index("modalities")] = "\\".join(i["modalities"])  # DICOM's separator
        writer.writerow(["" if v is None else _plain(v) for v in row])
    return buf.getvalue()


# --- HTML -------------------------------------------------------------------------------------


def render_html(review: Review) -> str:
    """The page for a records manager (``templates/retention_review.html``)."""
    due = review.due
    by_year = sorted(summary(due, _year), key=lambda g: g["key"])
    chart = svg_bar_chart(
        [
            (g["key"], g["bytes"], f"{human_bytes(g['bytes'])}, {_studies(g['studies'])}")
            for g in by_year
        ],
        title="Size of the studies due, by year of the study date",
    )
    return render_page(
        "retention_review.html",
        review=review,
        heading=_heading(review),
        due=due,
        held=review.held,
        due_bytes=sum(i["bytes"] for i in due),
        due_stored_bytes=sum(i["stored_bytes"] for i in due),
        chart=Markup(chart),  # built below with every text escaped
        by_rule=summary(due, lambda i: i["rule"]),
        by_source=summary(due, lambda i: i["source"]),
        by_year=by_year,
    )


def heading(review: Review) -> str:
    """The line naming a review, its date, author and state (the report's heading)."""
    return _heading(review)


def studies(n: int) -> str:
    """``1 study``, ``3 studies``."""
    return _studies(n)


def _copies(n: int) -> str:
    return f"{n:,} object copy" if n == 1 else f"{n:,} object copies"


def _studies(n: int) -> str:
    return f"{n:,} study" if n == 1 else f"{n:,} studies"


def svg_bar_chart(
    bars: list[tuple[str, float, str]],
    *,
    title: str,
    width: int = 720,
    bar_height: int = 22,
) -> str:
    """Horizontal bars (label, value, value as text) as inline SVG; readable printed in black
    and white."""
    e = html.escape
    if not bars:
        return "<p>No studies due.</p>"
    label_width, value_width, gap = 120, 170, 6
    plot = width - label_width - value_width
    top = max(v for _, v, _ in bars) or 1
    height = len(bars) * (bar_height + gap) + 30
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' role="img" aria-label="{e(title)}" font-family="sans-serif" font-size="12">',
        f"<title>{e(title)}</title>",
        f'<text x="0" y="14" font-weight="bold">{e(title)}</text>',
    ]
    for index, (label, value, text) in enumerate(bars):
        y = 24 + index * (bar_height + gap)
        length = max(plot * value / top, 1)
        out.append(
            f'<text x="{label_width - 8}" y="{y + bar_height * 0.7:.0f}" text-anchor="end">'
            f"{e(label)}</text>"
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}"'
            f' fill="#3b6ea5"><title>{e(label)}: {e(text)}</title></rect>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + bar_height * 0.7:.0f}">'
            f"{e(text)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
