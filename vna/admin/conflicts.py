"""Quarantined conflicts: versions of archived instances with other content, from sources whose
policy is "keep-both".  List them, inspect one (what differs from the archived version), and
resolve it: accept (it replaces the archived version, which is kept as an earlier version) or
discard (it stays recorded; its object is no longer protected from the lifecycle engine's
clean-up of unreferenced objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vna.catalog import audit
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.errors import InvalidRequest, NotFound
from vna.ingest import filing

ACTIONS = ("accept", "discard")
STATES = ("open", "accepted", "discarded")
#: Original Attributes Sequence: differs between any two normalised versions (its timestamps).
_NOT_COMPARED = {"04000561"}


@dataclass(frozen=True)
class Difference:
    tag: str
    keyword: str
    archived: Any
    quarantined: Any


def header_differences(archived: dict[str, Any], quarantined: dict[str, Any]) -> list[Difference]:
    """Top-level attributes whose values differ between two DICOM JSON headers (PS3.18 F.2)."""
    from pydicom.datadict import keyword_for_tag

    out = []
    for tag in sorted(set(archived) | set(quarantined)):
        if tag in _NOT_COMPARED:
            continue
        a, b = archived.get(tag), quarantined.get(tag)
        if _value(a) == _value(b):
            continue
        keyword = keyword_for_tag(int(tag, 16)) or f"({tag[:4]},{tag[4:]})"
        out.append(Difference(tag, keyword, _value(a), _value(b)))
    return out


def _value(element: dict[str, Any] | None) -> Any:
    if element is None:
        return None
    for key in ("Value", "InlineBinary", "BulkDataURI"):
        if key in element:
            return element[key]
    return []


async def list_conflicts(
    db: Database, state: str | None = "open", limit: int = 1000, offset: int = 0
) -> list[dict[str, Any]]:
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)}, not {state!r}")
    async with db.acquire() as conn:
        rows = await conn.fetch(q("list_conflicts"), state, limit, offset)
    return [dict(r) for r in rows]


async def show_conflict(
    db: Database, conflict_id: int, *, with_headers: bool = False
) -> dict[str, Any]:
    """The conflict, the archived version it conflicts with, and how their headers differ;
    ``with_headers`` adds both headers whole (DICOM JSON: ``quarantined_header``,
    ``archived_header``), for the web console's side-by-side view."""
    async with db.acquire() as conn:
        row = await conn.fetchrow(q("get_conflict"), conflict_id)
        if row is None:
            raise NotFound(f"conflict {conflict_id} does not exist")
        current = await conn.fetchrow(q("current_version"), row["sop_uid"])
    conflict = {k: row[k] for k in row.keys() if k not in ("metadata", "header")}
    out: dict[str, Any] = {"conflict": conflict, "archived": None, "differences": []}
    if current is not None:
        out["archived"] = {k: current[k] for k in current.keys() if k != "metadata"}
        diffs = header_differences(current["metadata"], row["metadata"])
        out["differences"] = [d.__dict__ for d in diffs]
        if not diffs:
            out["note"] = "the headers are the same: pixel data or other bulk data differ"
    if with_headers:
        out["quarantined_header"] = row["metadata"]
        out["archived_header"] = current["metadata"] if current is not None else None
    return out


async def resolve_conflict(
    db: Database, conflict_id: int, action: str, *, actor: str, origin: str = ""
) -> dict[str, Any]:
    """Accept or discard a quarantined version; audited."""
    if action not in ACTIONS:
        raise InvalidRequest(f"action must be accept or discard, not {action!r}")
    async with db.transaction() as conn:
        row = await conn.fetchrow(q("lock_conflict"), conflict_id)
        if row is None:
            raise NotFound(f"conflict {conflict_id} does not exist")
        if row["state"] != "open":
            raise InvalidRequest(f"conflict {conflict_id} is already {row['state']}")
        header = filing.header_from_json(row["header"])
        detail: dict[str, Any] = {"conflict": conflict_id, "source": row["source"]}
        if action == "accept":
            version = filing.Version(
                header=header,
                issuer=row["issuer"],
                source=row["source"],
                sha256=row["sha256"],
                received_sha256=row["received_sha256"],
                data_set_sha256=row["data_set_sha256"],
                size=row["size"],
                object_key=row["object_key"],
                metadata=row["metadata"],
            )
            series_fk = await filing.file_hierarchy(conn, version)
            current = await conn.fetchrow(q("lock_instance"), header.sop_instance_uid)
            if current is not None:
                kept = await filing.replace_instance(
                    conn, current["id"], version, series_fk, reason="conflict-accept", actor=actor
                )
                instance_id = current["id"]
                detail |= {"previous_sha256": current["sha256"], "version": kept}
            else:  # the archived version was deleted meanwhile
                inserted = await filing.insert_instance(conn, version, series_fk)
                if inserted is None:
                    raise InvalidRequest(
                        f"{header.sop_instance_uid} was archived again meanwhile; resolve again"
                    )
                instance_id = inserted
            await filing.enqueue_stored(conn, instance_id, version)
        await conn.execute(
            q("resolve_conflict"),
            conflict_id,
            "accepted" if action == "accept" else "discarded",
            actor,
        )
        await audit.record(
            conn,
            actor=actor,
            origin=origin,
            action=f"conflict-{action}",
            patient_id=header.patient_id,
            issuer=row["issuer"],
            study_uid=header.study_uid,
            series_uid=header.series_uid,
            sop_uid=header.sop_instance_uid,
            detail=detail,
        )
    return {"conflict": conflict_id, "state": "accepted" if action == "accept" else "discarded"}
