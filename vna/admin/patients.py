"""Patient administration: find, link identities across hospitals, correct demographics, merge
two patients, and undo a correction or merge (or a study correction or move, which
``vna.admin.studies`` applies through the same machinery).

A correction or merge rewrites every stored object of the patient's studies into a new object
whose header holds the corrected values and, in Original Attributes Sequence (0400,0561), the
previous ones with Reason for the Attribute Modification CORRECT (PS3.3 C.12.1.1.9.2); the
catalogue then swaps each instance's object key in one transaction.  Retrieval stays simple
(it streams the current object), the previous objects are kept as earlier versions
(``instance_versions``), and ``undo_change`` swaps them back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vna.catalog import audit
from vna.catalog import changes as change_log  # `changes` names a correction's values here
from vna.catalog.patient_links import linked_patient_ids
from vna.catalog.queries import q
from vna.dicom.normalise import correct
from vna.dicom.parse import dicom_json, read_dataset
from vna.dicom.rewrite import write_with_header
from vna.errors import InvalidRequest, NotFound
from vna.storage.base import content_key

if TYPE_CHECKING:
    import asyncpg

    from vna.archive import Archive
    from vna.catalog.database import Database

#: Attributes a correction may set, and the patients column that mirrors each.
UPDATABLE = {
    "PatientName": "patient_name",
    "PatientBirthDate": "birth_date",
    "PatientSex": "sex",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer",
}


@dataclass(frozen=True, order=True)
class Identity:
    """A patient in the archive: PatientID and Issuer of Patient ID."""

    patient_id: str
    issuer: str = ""

    @classmethod
    def parse(cls, text: str) -> Identity:
        """``ID^^^ISSUER`` (HL7 v2 CX order: ID, check digit, scheme, assigning authority) or a
        bare ``ID`` (no issuer)."""
        patient_id, sep, issuer = text.partition("^^^")
        if not patient_id.strip():
            raise InvalidRequest(f"not a patient identity (ID^^^ISSUER): {text!r}")
        return cls(patient_id.strip(), issuer.strip() if sep else "")

    @classmethod
    def from_json(cls, value: Any, what: str) -> Identity:
        if not isinstance(value, dict) or not isinstance(value.get("PatientID"), str):
            raise InvalidRequest(f"{what} must be an object with PatientID (and IssuerOfPatientID)")
        issuer = value.get("IssuerOfPatientID", "")
        if not isinstance(issuer, str):
            raise InvalidRequest(f"{what}.IssuerOfPatientID must be a string")
        return cls(value["PatientID"], issuer)

    def __str__(self) -> str:
        return f"{self.patient_id}^^^{self.issuer}" if self.issuer else self.patient_id


def link_identities(row: Any) -> tuple[Identity, Identity]:
    """The two identities of a patient link or pending link row."""
    return (
        Identity(row["patient_id_a"], row["issuer_a"]),
        Identity(row["patient_id_b"], row["issuer_b"]),
    )


# --- finding and linking ------------------------------------------------------------------------


async def patient_row(conn: asyncpg.Connection, identity: Identity) -> Any:
    """The patients row of ``identity``; NotFound when the archive does not hold it."""
    row = await conn.fetchrow(q("find_patient_row"), identity.patient_id, identity.issuer)
    if row is None:
        raise NotFound(f"patient {identity} is not in the archive")
    return row


async def find_patients(
    db: Database,
    identity: Identity | None = None,
    limit: int = 1000,
    *,
    any_issuer: bool = False,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Patients, with the identities linked to each: all of them, or ``identity``'s (with
    ``any_issuer``, its PatientID under every issuer); ``limit`` of them from ``offset``."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            q("search_patients"),
            identity.patient_id if identity else None,
            identity.issuer if identity and not any_issuer else None,
            limit,
            offset,
        )
        out = []
        for r in rows:
            item = dict(r)
            linked = await linked_patient_ids(conn, r["patient_id"], r["issuer"])
            item["linked"] = [
                str(Identity(*i)) for i in linked if i != (r["patient_id"], r["issuer"])
            ]
            out.append(item)
    return out


async def link(
    db: Database, a: Identity, b: Identity, *, reason: str, actor: str, origin: str = ""
) -> int:
    """Declare two identities the same person; returns the link id (existing or new)."""
    if a == b:
        raise InvalidRequest("a patient cannot be linked to itself")
    first, second = sorted((a, b))
    async with db.transaction() as conn:
        for who in (first, second):
            await patient_row(conn, who)
        link_id = await conn.fetchval(
            q("insert_link"),
            first.patient_id,
            first.issuer,
            second.patient_id,
            second.issuer,
            reason,
            actor,
        )
        if link_id is None:
            return int(
                await conn.fetchval(
                    q("find_active_link"),
                    first.patient_id,
                    first.issuer,
                    second.patient_id,
                    second.issuer,
                )
            )
        await _audit_both(
            conn,
            first,
            second,
            actor=actor,
            origin=origin,
            action="patient-link",
            detail={"link": link_id, "reason": reason},
        )
    return int(link_id)


async def unlink(db: Database, link_id: int, *, actor: str, origin: str = "") -> None:
    async with db.transaction() as conn:
        row = await conn.fetchrow(q("remove_link"), link_id, actor)
        if row is None:
            raise NotFound(f"no active patient link {link_id}")
        await _audit_both(
            conn,
            *link_identities(row),
            actor=actor,
            origin=origin,
            action="patient-unlink",
            detail={"link": link_id},
        )


async def links_of(db: Database, identity: Identity) -> dict[str, Any]:
    async with db.acquire() as conn:
        direct = await conn.fetch(q("links_of"), identity.patient_id, identity.issuer)
        linked = await linked_patient_ids(conn, identity.patient_id, identity.issuer)
    return {
        "patient": str(identity),
        "links": [dict(r) for r in direct],
        "same_person": [str(Identity(*i)) for i in linked],
    }


# --- pending links: found by the archive, decided by an administrator ---------------------------

#: States of a pending link (``vna patients links --pending``).
PENDING_STATES = ("pending", "accepted", "rejected")


async def pending_links(
    db: Database, state: str | None = "pending", limit: int = 1000
) -> list[dict[str, Any]]:
    """Links the archive proposes between identities that hold the same instances (a second
    source sent an instance identical to one filed under another identity), in one state or
    all (None)."""
    if state is not None and state not in PENDING_STATES:
        raise InvalidRequest(
            f"a pending link's state is one of {', '.join(PENDING_STATES)}, not {state!r}"
        )
    async with db.acquire() as conn:
        rows = await conn.fetch(q("list_pending_links"), state, limit)
    return [dict(r) for r in rows]


async def accept_pending_link(
    db: Database, pending_id: int, *, actor: str, reason: str = "", origin: str = ""
) -> int:
    """Accept a pending link: the two identities become linked (a patient link, as
    ``vna patients link`` makes, found by queries with ``query_scope = "linked"`` and
    ``includelinked``); returns the patient link's id.  Nothing is re-filed."""
    async with db.transaction() as conn:
        row = await _open_pending(conn, pending_id)
        a, b = link_identities(row)
        why = reason or (
            f"accepted pending link {pending_id}: source {row['source']} sent instance"
            f" {row['sop_uid']} identical to one filed under the other identity"
        )
        link_id = await conn.fetchval(
            q("insert_link"), a.patient_id, a.issuer, b.patient_id, b.issuer, why, actor
        )
        if link_id is None:  # linked meanwhile by an administrator
            link_id = await conn.fetchval(
                q("find_active_link"), a.patient_id, a.issuer, b.patient_id, b.issuer
            )
        await _decide_pending(conn, row, "accepted", link_id, actor=actor, origin=origin)
    return int(link_id)


async def reject_pending_link(
    db: Database, pending_id: int, *, actor: str, origin: str = ""
) -> None:
    """Reject a pending link: the identities stay apart, and the same evidence does not
    propose them again."""
    async with db.transaction() as conn:
        row = await _open_pending(conn, pending_id)
        await _decide_pending(conn, row, "rejected", None, actor=actor, origin=origin)


async def _open_pending(conn: asyncpg.Connection, pending_id: int) -> Any:
    row = await conn.fetchrow(q("lock_pending_link"), pending_id)
    if row is None:
        raise NotFound(f"no pending link {pending_id}")
    if row["state"] != "pending":
        raise InvalidRequest(f"pending link {pending_id} was {row['state']} already")
    return row


async def _decide_pending(
    conn: asyncpg.Connection,
    row: Any,
    state: str,
    link_id: int | None,
    *,
    actor: str,
    origin: str,
) -> None:
    """Record an administrator's decision on a pending link (``row``, locked by
    ``_open_pending``), with an audit row for each of its two identities."""
    pending_id = row["id"]
    await conn.execute(q("decide_pending_link"), pending_id, state, actor, link_id)
    detail = {"pending_link": pending_id}
    if state == "accepted":
        detail["link"] = link_id
    await _audit_both(
        conn,
        *link_identities(row),
        actor=actor,
        origin=origin,
        action={"accepted": "patient-link-accept", "rejected": "patient-link-reject"}[state],
        study_uid=row["study_uid"],
        detail=detail,
    )


async def _audit_both(
    conn: asyncpg.Connection,
    a: Identity,
    b: Identity,
    *,
    actor: str,
    origin: str,
    action: str,
    detail: dict[str, Any],
    study_uid: str | None = None,
) -> None:
    """One audit row for each of the two identities a link decision is about, each naming
    the other (``with``): either patient's trail shows the decision."""
    for who, other in ((a, b), (b, a)):
        await audit.record(
            conn,
            actor=actor,
            origin=origin,
            action=action,
            patient_id=who.patient_id,
            issuer=who.issuer,
            study_uid=study_uid,
            detail={**detail, "with": str(other)},
        )


# --- corrections and merges ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Rewritten:
    instance_id: int
    sop_uid: str
    study_uid: str
    series_uid: str
    previous_sha256: str
    object_key: str
    sha256: str
    data_set_sha256: str
    size: int
    metadata: dict[str, Any]


async def update_patient(
    archive: Archive,
    identity: Identity,
    values: Mapping[str, str],
    *,
    actor: str,
    origin: str = "",
) -> int:
    """Correct a patient's demographics (or identity) in the catalogue and in every stored
    object of the patient; returns the change id (for ``undo_change``)."""
    unknown = sorted(set(values) - set(UPDATABLE))
    if unknown:
        raise InvalidRequest(
            f"cannot update {', '.join(unknown)}; updatable: {', '.join(UPDATABLE)}"
        )
    if not values:
        raise InvalidRequest("nothing to update")
    async with archive.db.acquire() as conn:
        patient = await patient_row(conn, identity)
        target = Identity(
            values.get("PatientID", patient["patient_id"]),
            values.get("IssuerOfPatientID", patient["issuer"]),
        )
        if target != identity:
            other = await conn.fetchrow(q("find_patient_row"), target.patient_id, target.issuer)
            if other is not None:
                raise InvalidRequest(
                    f"patient {target} already exists: merge {identity} into it instead"
                )
    header_values = _header_values(values)
    previous = {"patient": patient_json(patient)}

    async def catalogue(conn: asyncpg.Connection) -> None:
        await conn.execute(
            q("update_patient_row"),
            patient["id"],
            target.patient_id,
            target.issuer,
            _new(header_values, "PatientName", patient["patient_name"]),
            _new(header_values, "PatientBirthDate", patient["birth_date"]),
            _new(header_values, "PatientSex", patient["sex"]),
        )

    async with archive.db.acquire() as conn:
        studies = await conn.fetch(q("studies_of_patient"), patient["id"])
        instances = await conn.fetch(q("instances_of_studies"), [s["id"] for s in studies])
    return await apply_change(
        archive,
        kind="update",
        instances=instances,
        source=identity,
        target=target,
        header_values=header_values,
        previous=previous,
        changes=dict(values),
        catalogue=catalogue,
        actor=actor,
        origin=origin,
    )


async def merge_patients(
    archive: Archive, source: Identity, target: Identity, *, actor: str, origin: str = ""
) -> int:
    """Move every study of ``source`` to ``target``, rewriting their objects with the target's
    identity and demographics; returns the change id (for ``undo_change``)."""
    if source == target:
        raise InvalidRequest("a patient cannot be merged into itself")
    async with archive.db.acquire() as conn:
        src = await patient_row(conn, source)
        dst = await patient_row(conn, target)
        studies = await conn.fetch(q("studies_of_patient"), src["id"])
        study_ids = [s["id"] for s in studies]
        instances = await conn.fetch(q("instances_of_studies"), study_ids)
    if not studies:
        raise InvalidRequest(f"patient {source} has no studies to merge")

    async def catalogue(conn: asyncpg.Connection) -> None:
        await conn.execute(q("move_studies"), study_ids, dst["id"])

    return await apply_change(
        archive,
        kind="merge",
        instances=instances,
        source=source,
        target=target,
        header_values=identity_values(dst),
        previous={"patient": patient_json(src), "target_fk": dst["id"], "studies": study_ids},
        changes={"into": str(target), "studies": [s["study_uid"] for s in studies]},
        catalogue=catalogue,
        actor=actor,
        origin=origin,
    )


def identity_values(patient: Any) -> dict[str, str | None]:
    """The header values that file an object under ``patient`` (a patients row): its
    identity and demographics."""
    return _header_values(
        {
            "PatientID": patient["patient_id"],
            "IssuerOfPatientID": patient["issuer"],
            "PatientName": patient["patient_name"],
            "PatientBirthDate": patient["birth_date"],
            "PatientSex": patient["sex"],
        }
    )


async def apply_change(
    archive: Archive,
    *,
    kind: str,
    instances: Sequence[Any],
    source: Identity,
    target: Identity,
    header_values: Mapping[str, str | None],
    previous: dict[str, Any],
    changes: dict[str, Any],
    catalogue: Callable[[asyncpg.Connection], Awaitable[None]],
    actor: str,
    origin: str,
    study_uid: str | None = None,
) -> int:
    """Rewrite ``instances`` (rows with id, sop_uid, study_uid, series_uid) with
    ``header_values``, then, in one transaction, record the change, swap every instance to its
    new object (keeping the previous one as a version), run ``catalogue`` (the change's own
    catalogue update) and audit; returns the change id (for ``undo_change``).

    ``previous`` holds what ``undo_change`` needs to put the catalogue back for this ``kind``.
    """
    # The new objects first (durable before the catalogue points at them), a few at a time.
    slots = asyncio.Semaphore(4)

    async def one(row: Any) -> _Rewritten:
        async with slots:
            return await _rewrite(archive, row, dict(header_values), str(source))

    rewritten = await asyncio.gather(*(one(r) for r in instances))
    async with archive.db.transaction() as conn:
        change_id = int(
            await conn.fetchval(
                q("insert_patient_change"),
                kind,
                source.patient_id,
                source.issuer,
                target.patient_id,
                target.issuer,
                previous,
                changes,
                actor,
                study_uid,
            )
        )
        for r in rewritten:
            await conn.fetchval(
                q("supersede_instance"), r.instance_id, "correct", change_id, r.sha256, actor
            )
            swapped = await conn.fetchval(
                q("swap_instance_object"),
                r.instance_id,
                r.previous_sha256,
                r.object_key,
                r.sha256,
                r.size,
                r.data_set_sha256,
                r.metadata,
            )
            if swapped is None:
                raise InvalidRequest(
                    f"instance {r.sop_uid} changed while the {kind} ran; run it again"
                )
            await conn.execute(
                q("enqueue_job"),
                "instance-stored",
                {"instance_id": r.instance_id, "object_key": r.object_key, "sop_uid": r.sop_uid},
            )
        await catalogue(conn)
        # The change feed's update entries: the study's every instance for a study change
        # (set-source changes a study without rewriting objects), else those rewritten.
        if study_uid is not None:
            await change_log.record_study(conn, "update", study_uid)
        else:
            await change_log.record_instances(conn, "update", [r.instance_id for r in rewritten])
        study_uids: list[str | None] = [*sorted({r.study_uid for r in rewritten})]
        if study_uid is not None:
            study_uids = [study_uid]
        for audited in study_uids or [None]:
            await audit.record(
                conn,
                actor=actor,
                origin=origin,
                action=change_action(kind),
                patient_id=source.patient_id,
                issuer=source.issuer,
                study_uid=audited,
                detail={"change": change_id, "into": str(target), "changes": changes},
            )
    return change_id


def change_action(kind: str) -> str:
    """The audit action of a change of this kind (study-update, study-move, patient-update,
    patient-merge)."""
    return kind if kind.startswith("study-") else f"patient-{kind}"


async def undo_change(archive: Archive, change_id: int, *, actor: str, origin: str = "") -> None:
    """Put back what a correction, merge or study move changed: the previous objects, the
    patient's demographics or the study's attributes, the studies' patient.  Refused when an
    instance changed since (a later correction or replacement: undo that first)."""
    async with archive.db.transaction() as conn:
        change = await conn.fetchrow(q("lock_patient_change"), change_id)
        if change is None:
            raise NotFound(f"patient change {change_id} does not exist")
        if change["state"] != "applied":
            raise InvalidRequest(f"patient change {change_id} is already undone")
        if change["study_uid"] is not None:
            # Instances of the study filed after the change carry its values (they were filed
            # as it did the earlier ones) and have no version to go back to: undoing would
            # leave them disagreeing with the rest of the study.
            late = await conn.fetchval(q("instances_filed_since_change"), change_id)
            if late:
                again = {"study-move": "move", "study-set-source": "set-source"}.get(
                    change["kind"], "update"
                )
                raise InvalidRequest(
                    f"{late} instance(s) of study {change['study_uid']} arrived after change"
                    f" {change_id} and were filed as it said; change the study again instead"
                    f" (vna studies {again})"
                )
        restored: list[int] = []
        for v in await conn.fetch(q("versions_of_change"), change_id):
            restored.append(v["instance_fk"])
            if await conn.fetchval(q("restore_version"), v["id"]) is None:
                raise InvalidRequest(
                    f"instance {v['sop_uid']} changed after change {change_id}:"
                    " undo the later change first"
                )
            await conn.execute(
                q("enqueue_job"),
                "instance-stored",
                {
                    "instance_id": v["instance_fk"],
                    "object_key": v["object_key"],
                    "sop_uid": v["sop_uid"],
                },
            )
        previous = change["previous"]
        p = previous["patient"]
        if change["kind"] == "study-update":
            st = previous["study"]
            day = st["study_date"]
            await conn.execute(
                q("update_study_row"),
                st["id"],
                dt.date.fromisoformat(day) if day else None,
                st["study_time"],
                st["accession_number"],
                st["study_id"],
                st["study_description"],
                st["referring_physician"],
            )
        elif change["kind"] == "update":
            await conn.execute(
                q("update_patient_row"),
                p["id"],
                p["patient_id"],
                p["issuer"],
                p["patient_name"],
                p["birth_date"],
                p["sex"],
            )
        else:
            # The merged-away patient's row may have been removed since (no studies left).
            source_fk = await conn.fetchval(
                q("upsert_patient"),
                p["patient_id"],
                p["issuer"],
                p["patient_name"],
                p["birth_date"],
                p["sex"],
            )
            await conn.execute(q("move_studies"), previous["studies"], source_fk)
            if change["kind"] == "study-set-source":
                # Each instance back to the source it was filed as (vna.admin.studies).
                await conn.execute(
                    q("restore_instance_sources"),
                    previous["studies"][0],
                    previous["instance_ids"],
                    previous["instance_sources"],
                    previous["study_source"],
                )
        if change["study_uid"] is not None:
            await change_log.record_study(conn, "update", change["study_uid"])
        else:
            await change_log.record_instances(conn, "update", restored)
        await conn.execute(q("mark_change_undone"), change_id, actor)
        await audit.record(
            conn,
            actor=actor,
            origin=origin,
            action=f"{change_action(change['kind'])}-undo",
            patient_id=change["patient_id"],
            issuer=change["issuer"],
            study_uid=change["study_uid"],
            detail={"change": change_id},
        )


async def list_changes(db: Database, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(q("list_patient_changes"), limit, offset)]


async def _rewrite(
    archive: Archive, row: Any, values: dict[str, str | None], previous_source: str
) -> _Rewritten:
    """A new object of one instance with corrected header values (Reason CORRECT)."""
    found = await archive.retriever.find_by_uids([row["sop_uid"]])
    if not found:
        raise NotFound(f"instance {row['sop_uid']} is no longer in the archive")
    stored = found[0]
    scratch = archive.incoming
    received = scratch / f"{uuid.uuid4().hex}.current"
    corrected = scratch / f"{uuid.uuid4().hex}.corrected"
    try:
        # One chunk at a time: memory stays bounded whatever the instance size.
        with open(received, "wb") as f:  # noqa: ASYNC230 - local page-cache writes
            async for chunk in await archive.retriever.open(stored):
                f.write(chunk)

        def rewrite() -> tuple[Any, dict[str, Any]]:
            ds = read_dataset(received)
            correct(
                ds,
                values,
                now=dt.datetime.now(dt.UTC),
                modifying_system=archive.settings.dimse.ae_title,
                previous_source=previous_source,
            )
            return write_with_header(received, corrected, ds), dicom_json(ds)

        written, metadata = await asyncio.to_thread(rewrite)
        key = content_key(written.sha256)
        await archive.store.put_file(key, corrected, sha256=written.sha256, consume=True)
    finally:
        _remove(received)
        _remove(corrected)
    return _Rewritten(
        instance_id=row["id"],
        sop_uid=row["sop_uid"],
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
        previous_sha256=stored.sha256,
        object_key=key,
        sha256=written.sha256,
        data_set_sha256=written.data_set_sha256,
        size=written.size,
        metadata=metadata,
    )


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _header_values(values: Mapping[str, str]) -> dict[str, str | None]:
    """Header values to write: Type 2 patient attributes stay present (empty when unknown);
    Issuer of Patient ID, Type 3, is removed when empty (PS3.3 C.7.1.1)."""
    out: dict[str, str | None] = {}
    for keyword, value in values.items():
        out[keyword] = None if keyword == "IssuerOfPatientID" and not value else value
    return out


def _new(values: Mapping[str, str | None], keyword: str, old: str) -> str:
    return (values[keyword] or "") if keyword in values else old


def patient_json(row: Any, *, pk: str = "id") -> dict[str, Any]:
    """A patient as a change's ``previous`` keeps it for ``undo_change``, from a row with the
    patients columns and the patient's row id in column ``pk`` (a study row joined to its
    patient has it as ``patient_row``)."""
    return {
        "id": row[pk],
        "patient_id": row["patient_id"],
        "issuer": row["issuer"],
        "patient_name": row["patient_name"],
        "birth_date": row["birth_date"],
        "sex": row["sex"],
    }
