"""Disaster recovery status (``vna dr status``): per replica, what is verified on it, the
backlog, the age of its oldest unreplicated instance (the RPO as it stands), the last
verification and the last drill."""

from __future__ import annotations

from typing import Any

from lifecycle.dr import replication
from lifecycle.dr.json_form import iso as _iso
from vna.archive import Archive
from vna.catalog.queries import q
from vna.recovery.policy import PRIMARY
from vna.recovery.replicas import replica_lag


async def collect_status(archive: Archive) -> dict[str, Any]:
    sites = replication.sites_of(archive)
    settings = archive.settings
    async with archive.db.acquire() as conn:
        state = await conn.fetchrow(q("dr_state_get"))
        totals = await conn.fetchrow(q("catalogue_totals"))
        now = await conn.fetchval(q("database_now"))
        jobs: dict[str, dict[str, int]] = {}
        for r in await conn.fetch(q("replication_jobs_by_store")):
            counts = jobs.setdefault(r["store"] or "?", {})
            name = "deletions" if r["kind"] == replication.REPLICA_DELETE else "copies"
            counts[f"{name}_{r['state']}"] = counts.get(f"{name}_{r['state']}", 0) + r["jobs"]
        replicas = []
        for replica in settings.replicas:
            entry: dict[str, Any] = {
                "name": replica.name,
                "storage_url": replica.storage_url,
                "role": "active" if replica.name == sites.active else "replica",
                "available": replica.name not in sites.unavailable,
            }
            if replica.name in sites.unavailable:
                entry["error"] = sites.unavailable[replica.name]
            if replica.name != sites.active:
                entry |= (await replica_lag(conn, replica.name, now)).as_dict()
            entry["jobs"] = jobs.get(replica.name, {})
            drill = await conn.fetchrow(q("drill_last"), replica.name)
            entry["last_drill"] = _drill_summary(drill) if drill else None
            # A drill that found a copy damaged outweighs the copy's record of being verified
            # until it is verified again.
            entry["unrepaired_defects"] = [
                {
                    "drill": r["drill"],
                    "drill_finished_at": _iso(r["finished_at"]),
                    "sop_uid": r["sop_uid"],
                    "study_uid": r["study_uid"],
                    "object_key": r["object_key"],
                    "outcome": r["outcome"],
                    "detail": r["detail"],
                }
                for r in await conn.fetch(q("drill_open_defects"), replica.name)
            ]
            replicas.append(entry)
        # Copies reads found damaged (vna.retrieve) and their repairs (lifecycle.dr.read_repair).
        read_repairs = [
            {
                "store": r["store"],
                "open": r["open"],
                "repaired": r["repaired"],
                "intact": r["intact"],
                "gone": r["gone"],
                "detections": r["detections"],
                "last_detected": _iso(r["last_detected"]),
            }
            for r in await conn.fetch(q("read_repair_counts"))
        ]
        repair_jobs = {
            r["state"]: r["jobs"]
            for r in await conn.fetch(q("lifecycle_queue_depth"))
            if r["kind"] == "repair-object"
        }
        failover = None
        if sites.active != PRIMARY:
            since = await conn.fetchrow(q("received_since"), state["changed_at"])
            failover = {
                "since": _iso(state["changed_at"]),
                "by": state["changed_by"],
                "received_since_instances": since["instances"],
                "received_since_bytes": since["bytes"],
                "primary_jobs": jobs.get(PRIMARY, {}),
            }
    return {
        "at": _iso(now),
        "active_store": sites.active,
        "active_storage_url": sites.url_of(sites.active),
        "changed_at": _iso(state["changed_at"]),
        "changed_by": state["changed_by"],
        "catalogue_instances": totals["instances"],
        "catalogue_bytes": totals["bytes"],
        "catalogue_stored_bytes": totals["stored_bytes"],
        "replicas": replicas,
        "read_repairs": read_repairs,
        "repair_jobs": repair_jobs,
        "failover": failover,
    }


def _drill_summary(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "started_at": _iso(row["started_at"]),
        "mode": row["mode"],
        "checked": row["checked"],
        "verified": row["verified"],
        "defects": row["defects"],
        "rpo_seconds": row["rpo_seconds"],
        "rto_seconds": row["rto_seconds"],
        "lost_instances": row["lost_instances"],
    }
