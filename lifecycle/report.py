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

from lifecycle.page_style import BASE_STYLE
from lifecycle.retention import ApprovalReport, Review
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


def render_approval(report: ApprovalReport) -> str:
    out = [
        f"review {report.review_id}: deleted {_studies(len(report.deleted))}"
        f" ({human_bytes(report.deleted_bytes)})"
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

_STYLE = (
    BASE_STYLE
    + """
.held { background: #fff6e0; }
code { background: #f3f3f3; padding: 0 .3em; }
"""
)


def render_html(review: Review) -> str:
    e = html.escape
    due, held = review.due, review.held
    due_bytes = sum(i["bytes"] for i in due)
    by_year = sorted(summary(due, _year), key=lambda g: g["key"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Retention review {review.id} as of {review.as_of}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Retention review {review.id}: studies due for deletion as of {review.as_of}</h1>",
        f'<p class="muted">{e(_heading(review))}. Rule set {e(review.rules_fingerprint)}.'
        " Each study is kept through its retention date and falls due the day after;"
        " nothing is deleted until the review is approved, and an approval re-checks every"
        " study (legal holds, rules, contents) before deleting it.</p>",
        '<div class="figures">',
        _figure("studies due", f"{len(due):,}"),
        _figure("size", human_bytes(due_bytes)),
        _figure("stored", human_bytes(sum(i["stored_bytes"] for i in due))),
        _figure("held back by legal holds", f"{len(held):,}"),
        "</div>",
        "<h2>Due for deletion by year of study</h2>",
        svg_bar_chart(
            [
                (g["key"], g["bytes"], f"{human_bytes(g['bytes'])}, {_studies(g['studies'])}")
                for g in by_year
            ],
            title="Size of the studies due, by year of the study date",
        ),
        _summary_table("By rule", "rule", summary(due, lambda i: i["rule"])),
        _summary_table("By source", "source", summary(due, lambda i: i["source"])),
        _summary_table("By year of study", "year", by_year),
    ]
    if held:
        parts.append("<h2>Held back by a legal hold</h2>")
        parts.append(
            "<p>These studies are due under their rule but will not be deleted while the hold"
            " lasts.</p>"
        )
        parts.append(_items_table(held, css="held"))
    parts.append("<h2>Studies due for deletion</h2>")
    parts.append(_items_table(due) if due else "<p>None.</p>")
    if review.state == "open" and due:
        parts.append(f"<p>To approve: <code>vna retention approve {review.id}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _figure(label: str, value: str) -> str:
    return f'<div class="figure"><b>{html.escape(value)}</b>{html.escape(label)}</div>'


def _summary_table(title: str, what: str, groups: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(g['key'] or '-')}</td><td class=n>{g['studies']:,}</td>"
        f"<td class=n>{g['instances']:,}</td>"
        f"<td class=n>{html.escape(human_bytes(g['bytes']))}</td></tr>"
        for g in groups
    )
    return (
        f"<h2>{html.escape(title)}</h2><table><tr><th>{html.escape(what)}</th>"
        f"<th class=n>studies</th><th class=n>instances</th><th class=n>size</th></tr>"
        f"{rows or '<tr><td colspan=4>none</td></tr>'}</table>"
    )


def _items_table(items: list[dict[str, Any]], css: str = "") -> str:
    e = html.escape
    head = (
        "<tr><th>study date</th><th>patient</th><th>accession / study UID</th><th>description</th>"
        "<th>modalities</th><th>source</th><th>rule</th><th>kept until</th>"
        "<th class=n>instances</th><th class=n>size</th><th>status</th></tr>"
    )
    rows = []
    for i in items:
        status = i["hold"] if i["state"] == "held" else (i["outcome"] or i["state"])
        patient = i["patient_id"] + (f" ({i['issuer']})" if i["issuer"] else "")
        rows.append(
            f'<tr class="{css}"><td>{e(str(i["study_date"] or "-"))}</td>'
            f"<td>{e(patient)}<br><span class=muted>{e(i['patient_name'])}</span></td>"
            f"<td>{e(i['accession_number'])}<br><span class=muted>{e(i['study_uid'])}</span></td>"
            f"<td>{e(i['study_description'])}</td>"
            f"<td>{e(', '.join(i['modalities']))}</td><td>{e(i['source'])}</td>"
            f"<td>{e(i['rule'])}<br><span class=muted>{e(i['basis'])}</span></td>"
            f"<td>{e(str(i['retain_until']))}</td><td class=n>{i['instances']:,}</td>"
            f"<td class=n>{e(human_bytes(i['bytes']))}</td><td>{e(status or '')}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


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
