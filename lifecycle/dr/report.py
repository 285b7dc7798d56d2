"""Disaster recovery for people: ``vna dr status`` as text, a drill's outcome as text and as a
self-contained HTML page for an auditor (no script, no external file: it prints, and it opens
from an e-mail attachment)."""

from __future__ import annotations

from typing import Any

from lifecycle.dr.drill import DrillResult
from lifecycle.dr.failover import FailbackReport, FailoverReport
from lifecycle.html_pages import duration, render_page
from lifecycle.status import human_bytes

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
            damaged = r["unrepaired_defects"]
            if oldest:
                why = f"oldest unreplicated instance received {oldest}"
            elif damaged:
                why = (
                    f"every instance has a recorded copy, but {len(damaged):,} of them failed"
                    " the last drill"
                )
            else:
                why = "every instance has a verified copy"
            lines.append(f"  RPO now        {rpo} ({why})")
            lines.append(f"  last verified  {r['last_verified'] or 'never'}")
            if damaged:
                first = damaged[0]
                lines.append(
                    f"  DEFECTS        {len(damaged):,} {'copy' if len(damaged) == 1 else 'copies'}"
                    f" on {r['name']} failed drill"
                    f" #{first['drill']} ({first['drill_finished_at']}) and not been"
                    " verified again since:"
                )
                for d in damaged[:10]:
                    lines.append(
                        f"                 {d['outcome']} {d['sop_uid']} (study {d['study_uid']})"
                        + (f": {d['detail']}" if d["detail"] else "")
                    )
                if len(damaged) > 10:
                    lines.append(f"                 ... and {len(damaged) - 10:,} more")
                lines.append(
                    f"                 repair: `vna verify --store {r['name']} --all` forgets the"
                    " damaged copies, then `vna lifecycle run` copies them again"
                )
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
    lines.extend(_read_repair_lines(data))
    return "\n".join(lines)


def _read_repair_lines(data: dict[str, Any]) -> list[str]:
    """Copies that reads found missing or damaged, served from a replica and repaired."""
    rows = data.get("read_repairs") or []
    jobs = data.get("repair_jobs") or {}
    if not rows:
        return ["", "read repairs   no damaged copy found by a read"]
    lines = [""]
    for r in rows:
        lines.append(
            f"read repairs   store {r['store']}: {r['open']:,} damaged copies awaiting repair,"
            f" {r['repaired']:,} repaired from a replica, {r['intact']:,} found intact on"
            f" reading back; last found {r['last_detected']}"
        )
    if any(r["open"] for r in rows):
        waiting = sum(v for k, v in jobs.items() if k != "dead")
        lines.append(
            f"               repair jobs: {waiting:,} waiting or running, {jobs.get('dead', 0):,}"
            " dead (no store holds a good copy: `vna lifecycle jobs`)"
        )
    return lines


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


def render_drill_html(r: DrillResult) -> str:
    """The page for an auditor (``templates/dr_drill.html``)."""
    return render_page("dr_drill.html", r=r, reasons=drill_reasons(r))


def drill_reasons(r: DrillResult) -> list[str]:
    """Why a drill failed, in words (none: it passed)."""
    reasons = []
    if r.defects:
        reasons.append(
            f"{len(r.defects)} instance(s) the replica should hold were not served intact"
        )
    if r.max_rpo_seconds is not None and r.rpo_seconds > r.max_rpo_seconds:
        reasons.append(
            f"RPO {duration(r.rpo_seconds)} exceeds the target {duration(r.max_rpo_seconds)}"
        )
    return reasons


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
