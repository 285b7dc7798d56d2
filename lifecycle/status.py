"""``vna lifecycle status``: the queue, the dead letters, bytes per tier, compression savings,
what falls due next; notifications and forwards per target (details in their own commands)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from lifecycle import viewer_upkeep
from lifecycle.policy.retention import rules_fingerprint
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.config import Settings
from vna.tiers import TIERS


async def collect(db: Database, settings: Settings, today: dt.date) -> dict[str, Any]:
    """Everything the status shows, as plain data (also the JSON output)."""
    async with db.acquire() as conn:
        jobs = [dict(r) for r in await conn.fetch(q("status_jobs"))]
        dead = [dict(r) for r in await conn.fetch(q("status_dead"), 10)]
        tiers = {r["tier"]: dict(r) for r in await conn.fetch(q("status_tiers"))}
        compression = {r["compression"]: dict(r) for r in await conn.fetch(q("status_compression"))}
        fallbacks = [dict(r) for r in await conn.fetch(q("status_compression_fallbacks"))]
        retention = dict(
            await conn.fetchrow(
                q("status_retention"), today, rules_fingerprint(settings.retention_rules)
            )
        )
        next_dates = [dict(r) for r in await conn.fetch(q("status_next_dates"), today, 10)]
        holds = dict(await conn.fetchrow(q("status_holds")))
        reviews = [dict(r) for r in await conn.fetch(q("status_reviews"), 5)]
        notified = await conn.fetch(q("notification_totals"))
        forwarded = await conn.fetch(q("forward_totals"))
        upkeep = await viewer_upkeep.status(conn)
    by_state: dict[str, int] = {}
    for row in jobs:
        by_state[row["state"]] = by_state.get(row["state"], 0) + row["jobs"]
    empty = {"instances": 0, "bytes": 0, "stored_bytes": 0}
    packed = [k for k in compression if k != "none"]
    zstd = {
        key: sum(compression[k][key] for k in packed)
        for key in ("instances", "bytes", "stored_bytes")
    }
    by_codec = {
        k: compression.get(k, empty) for k in sorted(set(packed) | {settings.compression.codec})
    }
    notifications: dict[str, dict[str, int]] = {
        n.name: {"pending": 0, "delivered": 0, "dead": 0} for n in settings.notifications
    }
    for r in notified:
        notifications.setdefault(r["target"], {"pending": 0, "delivered": 0, "dead": 0})[
            r["state"]
        ] = int(r["events"])
    forwards: dict[str, dict[str, int]] = {
        f.target: {"queued": 0, "sent": 0, "failed": 0} for f in settings.forward
    }
    for r in forwarded:
        forwards.setdefault(r["destination"], {"queued": 0, "sent": 0, "failed": 0})[r["state"]] = (
            int(r["instances"])
        )
    return {
        "as_of": today.isoformat(),
        "notifications": notifications,
        "forwards": forwards,
        "queue": {
            "ready": sum(r["ready"] for r in jobs),
            "queued": by_state.get("queued", 0),
            "running": by_state.get("running", 0),
            "done": by_state.get("done", 0),
            "dead": by_state.get("dead", 0),
            "by_kind": jobs,
        },
        "dead_jobs": dead,
        "tiers": {t: tiers.get(t, {"instances": 0, "bytes": 0, "stored_bytes": 0}) for t in TIERS}
        | {t: v for t, v in tiers.items() if t not in TIERS},
        "compression": {
            "compressed_instances": zstd["instances"],
            "original_bytes": zstd["bytes"],
            "stored_bytes": zstd["stored_bytes"],
            "saved_bytes": zstd["bytes"] - zstd["stored_bytes"],
            "uncompressed_instances": compression.get("none", empty)["instances"],
            "codec": settings.compression.codec,
            "by_codec": by_codec,
            #: Instances the image codec could not rebuild byte for byte (zstd instead).
            "fallbacks": fallbacks,
        },
        "retention": retention,
        "next_due": next_dates,
        "holds": holds,
        "reviews": reviews,
        "viewer_upkeep": upkeep,
    }


def render_text(status: dict[str, Any]) -> str:
    out: list[str] = []
    qu = status["queue"]
    out.append(f"lifecycle status as of {status['as_of']}")
    out.append("")
    out.append(
        f"queue       {qu['queued']} queued ({qu['ready']} ready), {qu['running']} running,"
        f" {qu['done']} done (recent), {qu['dead']} dead"
    )
    for row in qu["by_kind"]:
        extra = f", next {row['next_run']:%Y-%m-%d %H:%M}" if row["next_run"] else ""
        out.append(f"  {row['kind']:<16} {row['state']:<8} {row['jobs']:>9}{extra}")
    if status["dead_jobs"]:
        out.append("dead jobs (newest first; `vna lifecycle retry JOB_ID` queues one again):")
        for job in status["dead_jobs"]:
            error = (job["last_error"] or "").splitlines()[0][:100] if job["last_error"] else ""
            out.append(
                f"  {job['id']:>8} {job['kind']:<16} after {_n(job['attempts'], 'attempt')}:"
                f" {error}"
            )
    out.append("")
    out.append("tier        instances     stored bytes")
    for tier, row in status["tiers"].items():
        out.append(f"  {tier:<8} {row['instances']:>11} {human_bytes(row['stored_bytes']):>16}")
    c = status["compression"]
    if c["original_bytes"]:
        share = 100 * c["saved_bytes"] / c["original_bytes"]
        out.append(
            f"compression {_n(c['compressed_instances'], 'instance')} compressed:"
            f" {human_bytes(c['original_bytes'])} -> {human_bytes(c['stored_bytes'])}"
            f" (saved {human_bytes(c['saved_bytes'])}, {share:.1f}%);"
            f" {c['uncompressed_instances']} stored as received"
        )
    else:
        out.append(f"compression none yet; {c['uncompressed_instances']} stored as received")
    for codec, row in c["by_codec"].items():
        if row["instances"]:
            out.append(
                f"  {codec:<9} {_n(row['instances'], 'instance')}:"
                f" {human_bytes(row['bytes'])} -> {human_bytes(row['stored_bytes'])}"
            )
    for row in c["fallbacks"]:
        out.append(
            f"  not {row['codec']} ({_n(row['instances'], 'instance')}, kept in zstd or as"
            f" received): {row['reason']}"
        )
    u = status["viewer_upkeep"]
    out.append(
        f"viewer upkeep {_n(u['single_frame_objects'], 'object')} compressed before the seekable"
        f" form; {_n(u['layouts_missing'], 'instance')} without a layout"
        f" ({u['layouts_queued']} queued)"
    )
    r = status["retention"]
    out.append("")
    out.append(
        f"retention   {_n(r['studies'], 'study')}: {r['due']} due now, {r['due_30']} in 30 days,"
        f" {r['due_90']} in 90 days, {r['due_365']} in a year; {r['indefinite']} kept"
        f" indefinitely; {r['stale']} awaiting computation"
    )
    for row in status["next_due"]:
        rules = ", ".join(x for x in row["rules"] if x)
        out.append(f"  due on {row['due_on']}: {_n(row['studies'], 'study')} ({rules})")
    h = status["holds"]
    out.append(f"legal holds {_n(h['patients'], 'patient')}, {_n(h['studies'], 'study')}")
    if status["reviews"]:
        out.append("reviews")
        for rv in status["reviews"]:
            out.append(
                f"  {rv['id']:>6} as of {rv['as_of']} {rv['state']:<9} due {rv['due']},"
                f" held {rv['held']}, pending {rv['pending']}, deleted {rv['deleted']},"
                f" skipped {rv['skipped']}"
            )
    if status["notifications"] or status["forwards"]:
        out.append("")
    for name, n in sorted(status["notifications"].items()):
        out.append(
            f"notifications {name}: {n['pending']} pending, {n['delivered']} delivered,"
            f" {n['dead']} dead (`vna notifications status`)"
        )
    for name, f in sorted(status["forwards"].items()):
        out.append(
            f"forwarding  {name}: {f['queued']} queued, {f['sent']} sent, {f['failed']} failed"
            " (`vna forward status`)"
        )
    return "\n".join(out)


def _n(count: int, noun: str) -> str:
    """``1 study``, ``2 studies``: a count with its noun in the right number."""
    many = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{count} {noun if count == 1 else many}"


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"
