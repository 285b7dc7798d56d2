"""Disaster recovery for people: ``vna dr status`` as text, a drill's outcome as text and as a
self-contained HTML page for an auditor (no script, no external file: it prints, and it opens
from an e-mail attachment)."""

from __future__ import annotations

import html
from typing import Any

from lifecycle.dr.drill import DrillRead, DrillResult
from lifecycle.dr.failover import FailbackReport, FailoverReport
from lifecycle.page_style import BASE_STYLE
from lifecycle.status import human_bytes


def duration(seconds: float | None) -> str:
    """``0.42 s``, ``3 min 20 s``, ``2 h 05 min``, ``3 d 4 h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds == 0:
        return "0 s"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


# --- status -----------------------------------------------------------------------------------


def render_status(data: dict[str, Any]) -> str:
    lines = [f"active store   {data['active_store']} ({data['active_storage_url']})"]
    if data["failover"]:
        f = data["failover"]
        jobs = f["primary_jobs"]
        lines.append(
            f"FAILED OVER    since {f['since']} by {f['by']}; the primary awaits"
            f" `vna dr failback`: {f['received_since_instances']:,} instances"
            f" ({human_bytes(f['received_since_bytes'])}) received since,"
            f" {jobs.get('deletions_queued', 0) + jobs.get('deletions_dead', 0)}"
            " deletions pending for it"
        )
    lines.append(
        f"catalogue      {data['catalogue_instances']:,} instances,"
        f" {human_bytes(data['catalogue_bytes'])}"
        f" ({human_bytes(data['catalogue_stored_bytes'])} stored)"
    )
    if not data["replicas"]:
        lines.append(
            "replicas       none declared ([[replicas]] in the configuration); objects are"
            " protected only by the storage's own replication, if any"
        )
    for r in data["replicas"]:
        lines.append("")
        lines.append(f"replica {r['name']} ({r['storage_url']})")
        if not r["available"]:
            lines.append(f"  UNAVAILABLE    {r.get('error', '')}")
        if r["role"] == "active":
            lines.append("  role           active store (failed over to it)")
        else:
            lines.append(
                f"  replicated     {r['replicated_instances']:,} instances,"
                f" {human_bytes(r['replicated_bytes'])}"
            )
            lines.append(
                f"  backlog        {r['backlog_instances']:,} instances,"
                f" {human_bytes(r['backlog_bytes'])}"
            )
            rpo = duration(r["rpo_seconds"])
            oldest = r["oldest_unreplicated"]
            lines.append(
                f"  RPO now        {rpo}"
                + (
                    f" (oldest unreplicated instance received {oldest})"
                    if oldest
                    else " (every instance has a verified copy)"
                )
            )
            lines.append(f"  last verified  {r['last_verified'] or 'never'}")
        jobs = r["jobs"]
        lines.append(
            f"  jobs           copies queued {jobs.get('copies_queued', 0)},"
            f" running {jobs.get('copies_running', 0)}, dead {jobs.get('copies_dead', 0)};"
            f" deletions queued {jobs.get('deletions_queued', 0)},"
            f" dead {jobs.get('deletions_dead', 0)}"
        )
        drill = r["last_drill"]
        if drill:
            verdict = "no defects" if not drill["defects"] else f"{drill['defects']} DEFECTS"
            lines.append(
                f"  last drill     #{drill['id']} {drill['started_at']} ({drill['mode']}):"
                f" {drill['verified']:,}/{drill['checked']:,} verified, {verdict},"
                f" RPO {duration(drill['rpo_seconds'])}, RTO {duration(drill['rto_seconds'])}"
            )
        else:
            lines.append("  last drill     never (`vna dr drill`)")
    return "\n".join(lines)


# --- drill ------------------------------------------------------------------------------------


def render_drill_text(r: DrillResult) -> str:
    verdict = "PASSED" if r.passed else "FAILED"
    lines = [
        f"DR drill #{r.id} against {r.store} ({r.storage_url}): {verdict}",
        f"  read           {r.checked:,} instances ({r.mode}), {r.verified:,} bit-exact,"
        f" {human_bytes(r.bytes_read)} in {duration(r.read_seconds)}",
        f"  RTO            {duration(r.rto_seconds)} from the start of the drill to the first"
        " verified read from the replica",
        f"  RPO            {duration(r.rpo_seconds)}"
        + (
            f" (oldest instance not on the replica received {r.oldest_unreplicated})"
            if r.oldest_unreplicated
            else " (everything is on the replica)"
        ),
        f"  would be lost  {r.lost_instances:,} instances, {human_bytes(r.lost_bytes)}",
        f"  defects        {len(r.defects):,}",
    ]
    if r.max_rpo_seconds is not None:
        lines.append(f"  RPO target     {duration(r.max_rpo_seconds)}")
    for d in r.defects[:50]:
        lines.append(f"    {d.outcome:10} {d.sop_uid} (study {d.study_uid}) {d.detail}")
    if len(r.defects) > 50:
        lines.append(f"    ... and {len(r.defects) - 50} more")
    return "\n".join(lines)


_STYLE = (
    BASE_STYLE
    + """
.verdict { padding: .8em 1.2em; border-radius: 6px; font-size: 1.2em; font-weight: bold; }
.pass { background: #e6f4ea; color: #14532d; } .fail { background: #fde8e8; color: #7f1d1d; }
.defect { background: #fde8e8; }
code { background: #f3f3f3; padding: 0 .3em; word-break: break-all; }
"""
)


def render_drill_html(r: DrillResult) -> str:
    e = html.escape
    verdict = "PASSED" if r.passed else "FAILED"
    reasons = []
    if r.defects:
        reasons.append(
            f"{len(r.defects)} instance(s) the replica should hold were not served intact"
        )
    if r.max_rpo_seconds is not None and r.rpo_seconds > r.max_rpo_seconds:
        reasons.append(
            f"RPO {duration(r.rpo_seconds)} exceeds the target {duration(r.max_rpo_seconds)}"
        )
    tracking = (
        "Copies are made and verified by the archive's own replication; the catalogue records"
        " each verified copy, so what the replica lacks is known exactly."
        if r.tracking == "archive"
        else "The copy is kept by the storage's own replication (no [[replicas]] declared);"
        " an instance received less than the replication grace period ago may be missing"
        " without being a defect, and the RPO is measured on the instances read."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>DR drill {r.id}: {e(r.store)} {e(r.started_at)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Disaster-recovery drill {r.id}: serving from {e(r.store)} without the primary"
        " store</h1>",
        f'<p class="verdict {"pass" if r.passed else "fail"}">{verdict}'
        + (f": {e('; '.join(reasons))}" if reasons else "")
        + "</p>",
        "<p>The drill acted as if the primary object store were lost: a reader that uses only"
        f" the replica <code>{e(r.storage_url)}</code> served the instances listed in the"
        " catalogue, and every byte served was compared with the SHA-256 and size the archive"
        " recorded when it received the instance. Nothing was written to the primary store or"
        " to the replica, and no production data was changed.</p>",
        '<div class="figures">',
        _figure("RTO: time to the first verified read", duration(r.rto_seconds)),
        _figure("RPO: age of the oldest instance not on the replica", duration(r.rpo_seconds)),
        _figure("instances read bit-exact", f"{r.verified:,} of {r.checked:,}"),
        _figure("replica defects", f"{len(r.defects):,}"),
        _figure("would be lost now", f"{r.lost_instances:,} ({human_bytes(r.lost_bytes)})"),
        "</div>",
        "<h2>How the drill ran</h2>",
        "<table>",
        _row("replica", r.store),
        _row("replica storage", r.storage_url),
        _row(
            "instances read",
            f"{r.mode}: {r.checked:,} of {r.catalogue_instances:,} in the catalogue",
        ),
        _row("started", r.started_at),
        _row("finished", r.finished_at),
        _row("run by", r.actor),
        _row("bytes read", f"{human_bytes(r.bytes_read)} in {duration(r.read_seconds)}"),
        _row(
            "RTO",
            f"{duration(r.rto_seconds)} from the start of the drill (opening the"
            " replica included) to the first instance served bit-exact",
        ),
        _row(
            "RPO",
            f"{duration(r.rpo_seconds)}"
            + (
                f": the oldest instance the replica does not hold was received"
                f" {r.oldest_unreplicated}"
                if r.oldest_unreplicated
                else ": the replica holds every instance"
            ),
        ),
        _row(
            "RPO target",
            duration(r.max_rpo_seconds) if r.max_rpo_seconds is not None else "none given",
        ),
        _row("replication", tracking),
        "</table>",
        "<h2>Replica defects</h2>",
    ]
    if r.defects:
        parts.append(
            "<p>Instances the replica should hold (a verified copy was recorded, or they are"
            " old enough) but did not serve intact. Each must be repaired before the replica"
            " can be relied on: <code>vna lifecycle run</code> copies them again once their"
            " records are cleared, and <code>vna verify --store NAME</code> checks them.</p>"
        )
        parts.append(_reads_table(r.defects, css="defect"))
    else:
        parts.append("<p>None: every instance the replica should hold was served bit-exact.</p>")
    parts.append("<h2>What a loss of the primary now would lose</h2>")
    if r.lost:
        listed = len(r.lost)
        parts.append(
            f"<p>{r.lost_instances:,} instance(s), {e(human_bytes(r.lost_bytes))}, are not on"
            " the replica yet (received recently, or waiting for replication)"
            + (f"; the oldest {listed:,} are listed" if listed < r.lost_instances else "")
            + ".</p>"
        )
        parts.append(_lost_table(r.lost))
    else:
        parts.append("<p>Nothing: every instance in the catalogue is on the replica.</p>")
    if r.not_yet_replicated and r.tracking == "archive":
        parts.append(
            f"<p class=muted>{len(r.not_yet_replicated):,} of the instances read were not on"
            " the replica and are counted above (not yet replicated, not a defect).</p>"
        )
    parts.append(
        "<h2>Method</h2><ul>"
        "<li>Instances are read through the archive's own retrieval code (the path WADO-RS,"
        " C-MOVE and C-GET use), decompressing what the lifecycle engine compressed, so what"
        " is checked is what a client would receive.</li>"
        "<li>A read is bit-exact when the SHA-256 and size of the bytes served equal those the"
        " catalogue recorded at ingest.</li>"
        "<li>The catalogue itself is protected separately (PostgreSQL backups with point-in-time"
        " recovery, replicated to the DR region); this drill checks the objects.</li>"
        "</ul>"
    )
    parts.append(
        f'<p class="muted">Drill {r.id}, recorded in the catalogue (table dr_drills)'
        " and the audit trail.</p></body></html>"
    )
    return "\n".join(parts)


def _figure(label: str, value: str) -> str:
    return f'<div class="figure"><b>{html.escape(value)}</b>{html.escape(label)}</div>'


def _row(label: str, value: str) -> str:
    return f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"


def _reads_table(reads: list[DrillRead], css: str) -> str:
    e = html.escape
    head = (
        "<tr><th>outcome</th><th>study UID</th><th>SOP instance UID</th><th>received</th>"
        "<th class=n>size</th><th>detail</th></tr>"
    )
    rows = "".join(
        f'<tr class="{css}"><td>{e(d.outcome)}</td><td>{e(d.study_uid)}</td>'
        f"<td>{e(d.sop_uid)}</td><td>{e(d.received_at)}</td>"
        f"<td class=n>{e(human_bytes(d.size))}</td><td>{e(d.detail)}</td></tr>"
        for d in reads
    )
    return f"<table>{head}{rows}</table>"


def _lost_table(lost: list[dict[str, Any]]) -> str:
    e = html.escape
    head = (
        "<tr><th>received</th><th>study UID</th><th>accession</th><th>SOP instance UID</th>"
        "<th class=n>size</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{e(str(i['received_at']))}</td><td>{e(i['study_uid'])}</td>"
        f"<td>{e(i['accession_number'] or '')}</td><td>{e(i['sop_uid'])}</td>"
        f"<td class=n>{e(human_bytes(i['bytes']))}</td></tr>"
        for i in lost
    )
    return f"<table>{head}{rows}</table>"


# --- failover / failback --------------------------------------------------------------------


def render_failover(r: FailoverReport) -> str:
    lines = [
        f"active store is now {r.to_store} (was {r.from_store})",
        f"  copied before switching  {r.copied:,} instances"
        + (f"; {r.not_copied:,} could not be copied" if r.not_copied else ""),
    ]
    if r.missing_instances:
        lines.append(
            f"  NOT ON {r.to_store}: {r.missing_instances:,} instances"
            f" ({human_bytes(r.missing_bytes)}), oldest received {r.oldest_missing}; they are"
            f" served again once {r.from_store} answers (reads fall back to it), and"
            " `vna dr failback` keeps them"
        )
    else:
        lines.append(f"  every instance is on {r.to_store}")
    lines.extend(f"  {e}" for e in r.errors[:10])
    lines.append(
        "  restart every `vna serve` and `vna lifecycle run` process: each reads the active"
        " store when it starts"
    )
    return "\n".join(lines)


def render_failback(r: FailbackReport) -> str:
    lines = [
        f"resynchronised the primary from {r.from_store}: {r.checked:,} instances checked,"
        f" {r.present:,} present, {r.copied:,} copied ({human_bytes(r.copied_bytes)}),"
        f" {r.deletions:,} deletions carried out, {r.passes} pass(es)",
    ]
    for uid, reason in r.lost[:20]:
        lines.append(f"  NO GOOD COPY  {uid}: {reason}")
    for uid, reason in r.failed[:20]:
        lines.append(f"  FAILED        {uid}: {reason}")
    if r.switched:
        lines.append(
            "active store is now primary"
            + (" (forced: the instances above are not on it)" if r.forced else "")
        )
        lines.append(
            "  restart every `vna serve` and `vna lifecycle run` process: each reads the active"
            " store when it starts"
        )
    else:
        lines.append(
            f"NOT switched back: {len(r.lost) + len(r.failed)} instance(s) are not on the"
            " primary (run again, or give --force to switch anyway)"
        )
    return "\n".join(lines)
