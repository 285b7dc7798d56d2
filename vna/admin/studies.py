"""Study administration: correct a study's attributes, or move a study filed under the wrong
patient to the right one; both undone like patient corrections (``vna patients undo``).

Both rewrite every stored object of the study, as patient corrections do
(``vna.admin.patients.apply_change``): the corrected values go into the header, the previous
ones into Original Attributes Sequence (0400,0561) with Reason for the Attribute Modification
CORRECT (PS3.3 C.12.1.1.9.2), the catalogue swaps each instance's object key in one
transaction, and the previous objects stay as earlier versions for the undo.

A study move is the IHE IOCM "patient reconciliation" of one study (the study was acquired
under the wrong patient): the objects take the target patient's identity and demographics, as
a patient merge does for all of a patient's studies.  Instances of the study that arrive later
under the old identity are filed under the new one (``vna.ingest.pipeline``).

A re-attribution (``set_source``) re-files a study under a declared source: studies received
before sources were declared are filed as ``DEFAULT`` with the issuer they arrived with (often
none).  The study takes the source's issuer of patient ID, in the catalogue and in its objects
(previous values in Original Attributes Sequence, as any correction), and its instances the
source's name; the same undo puts both back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vna.admin.patients import (
    Identity,
    apply_change,
    identity_values,
    patient_json,
    patient_row,
)
from vna.catalog.queries import q
from vna.dicom.corrections import STUDY_ATTRIBUTES, check_study_values, study_date
from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    import asyncpg

    from vna.archive import Archive
    from vna.catalog.database import Database


async def show_study(db: Database, study_uid: str) -> dict[str, Any]:
    """The study's catalogue values, its patient and its corrections and moves."""
    _check(study_uid)
    async with db.acquire() as conn:
        row = await _study_row(conn, study_uid)
        changes = await conn.fetch(q("changes_of_study"), study_uid)
    return {
        "study": _study_json(row),
        "patient": str(Identity(row["patient_id"], row["issuer"])),
        "changes": [dict(c) for c in changes],
    }


async def update_study(
    archive: Archive,
    study_uid: str,
    values: Mapping[str, str],
    *,
    actor: str,
    origin: str = "",
) -> int:
    """Correct study attributes (``STUDY_ATTRIBUTES``) in the catalogue and in every stored
    object of the study; returns the change id (for ``undo_change``)."""
    _check(study_uid)
    checked = check_study_values(values)
    async with archive.db.acquire() as conn:
        study = await _study_row(conn, study_uid)
        instances = await conn.fetch(q("instances_of_studies"), [study["id"]])
    before = _study_json(study)
    after = dict(before)
    for keyword, value in checked.items():
        column = STUDY_ATTRIBUTES[keyword][1]
        after[column] = value
    if after == before:
        raise InvalidRequest(f"study {study_uid} already has these values: nothing to change")
    patient = Identity(study["patient_id"], study["issuer"])

    async def catalogue(conn: asyncpg.Connection) -> None:
        await conn.execute(
            q("update_study_row"),
            study["id"],
            study_date(after["study_date"] or ""),
            after["study_time"],
            after["accession_number"],
            after["study_id"],
            after["study_description"],
            after["referring_physician"],
        )

    # The catalogue keeps DA as a date; the previous value goes back as ISO text.
    before["study_date"] = study["study_date"].isoformat() if study["study_date"] else None
    return await apply_change(
        archive,
        kind="study-update",
        instances=instances,
        source=patient,
        target=patient,
        header_values=dict(checked),
        previous={"patient": patient_json(study, pk="patient_row"), "study": before},
        changes=dict(checked),
        catalogue=catalogue,
        actor=actor,
        origin=origin,
        study_uid=study_uid,
    )


async def move_study(
    archive: Archive, study_uid: str, target: Identity, *, actor: str, origin: str = ""
) -> int:
    """File the study under ``target`` (a patient in the archive), rewriting its objects with
    the target's identity and demographics; returns the change id (for ``undo_change``)."""
    _check(study_uid)
    async with archive.db.acquire() as conn:
        study = await _study_row(conn, study_uid)
        source = Identity(study["patient_id"], study["issuer"])
        if source == target:
            raise InvalidRequest(f"study {study_uid} is already filed under patient {target}")
        dst = await conn.fetchrow(q("find_patient_row"), target.patient_id, target.issuer)
        if dst is None:
            raise NotFound(
                f"patient {target} is not in the archive; to give the study's patient"
                f" {source} that identity instead, use vna patients update"
            )
        instances = await conn.fetch(q("instances_of_studies"), [study["id"]])

    async def catalogue(conn: asyncpg.Connection) -> None:
        await conn.execute(q("move_studies"), [study["id"]], dst["id"])

    return await apply_change(
        archive,
        kind="study-move",
        instances=instances,
        source=source,
        target=target,
        header_values=identity_values(dst),
        previous={
            "patient": patient_json(study, pk="patient_row"),
            "target_fk": dst["id"],
            "studies": [study["id"]],
        },
        changes={"into": str(target), "studies": [study_uid]},
        catalogue=catalogue,
        actor=actor,
        origin=origin,
        study_uid=study_uid,
    )


@dataclass(frozen=True)
class SourcePlan:
    """What ``set_source`` would do to one study (``vna studies set-source --dry-run``)."""

    study_uid: str
    current: Identity
    target: Identity
    #: The sources the study's instances are filed as now.
    sources: tuple[str, ...]
    source: str
    #: Whether the target identity is a patient already in the archive (the study joins it).
    joins_patient: bool


async def plan_set_source(archive: Archive, study_uid: str, source_name: str) -> SourcePlan:
    """Check a re-attribution without changing anything; InvalidRequest or NotFound say why
    it cannot be done."""
    plan, *_ = await _plan_set_source(archive, study_uid, source_name)
    return plan


async def _plan_set_source(
    archive: Archive, study_uid: str, source_name: str
) -> tuple[SourcePlan, Any, list[Any], Any, Any]:
    _check(study_uid)
    source = archive.settings.source_named(source_name)
    if source is None:
        declared = ", ".join(s.name for s in archive.settings.sources) or "none"
        raise InvalidRequest(f"{source_name!r} is not a declared source (declared: {declared})")
    async with archive.db.acquire() as conn:
        study = await _study_row(conn, study_uid)
        current = Identity(study["patient_id"], study["issuer"])
        # A source that declares no issuer keeps the one the study has.
        target = Identity(current.patient_id, source.issuer_of_patient_id or current.issuer)
        sources = list(await conn.fetch(q("instance_sources_of_study"), study["id"]))
        study_source = await conn.fetchval(q("study_source"), study["id"])
        if target == current and all(r["source"] == source.name for r in sources):
            raise InvalidRequest(
                f"study {study_uid} is already filed as source {source.name} under {current}"
            )
        dst = await conn.fetchrow(q("find_patient_row"), target.patient_id, target.issuer)
    plan = SourcePlan(
        study_uid=study_uid,
        current=current,
        target=target,
        sources=tuple(sorted({r["source"] for r in sources})) or (study_source,),
        source=source.name,
        joins_patient=dst is not None and target != current,
    )
    return plan, study, sources, study_source, dst


async def set_source(
    archive: Archive, study_uid: str, source_name: str, *, actor: str, origin: str = ""
) -> int:
    """Re-file the study under the declared source ``source_name``: its patient becomes
    PatientID with the source's issuer of patient ID (a patient already in the archive under
    that identity, or a new one with the study's demographics), and its instances are filed as
    that source.  Returns the change id (for ``undo_change``)."""
    plan, study, sources, study_source, dst = await _plan_set_source(
        archive, study_uid, source_name
    )
    current, target = plan.current, plan.target
    instances: list[Any] = []
    if target != current:
        async with archive.db.acquire() as conn:
            instances = list(await conn.fetch(q("instances_of_studies"), [study["id"]]))
    if target == current:
        header_values: dict[str, str | None] = {}  # the objects already say it
    elif dst is not None:
        # Filed under the patient the source already has: that patient's identity and
        # demographics, as a study move writes them.
        header_values = identity_values(dst)
    else:
        header_values = {"PatientID": target.patient_id, "IssuerOfPatientID": target.issuer}

    async def catalogue(conn: asyncpg.Connection) -> None:
        if target != current:
            target_fk = await conn.fetchval(
                q("upsert_patient"),
                target.patient_id,
                target.issuer,
                study["patient_name"],
                study["birth_date"],
                study["sex"],
            )
            await conn.execute(q("move_studies"), [study["id"]], target_fk)
        await conn.execute(q("set_study_source"), study["id"], plan.source)

    return await apply_change(
        archive,
        kind="study-set-source",
        instances=instances,
        source=current,
        target=target,
        header_values=header_values,
        previous={
            "patient": patient_json(study, pk="patient_row"),
            "studies": [study["id"]],
            "study_source": study_source,
            "instance_ids": [r["id"] for r in sources],
            "instance_sources": [r["source"] for r in sources],
        },
        changes={
            "source": {"from": ", ".join(plan.sources), "to": plan.source},
            "into": str(target),
        },
        catalogue=catalogue,
        actor=actor,
        origin=origin,
        study_uid=study_uid,
    )


async def studies_of(db: Database, identity: Identity) -> list[str]:
    """The Study Instance UIDs of a patient in the archive."""
    async with db.acquire() as conn:
        patient = await patient_row(conn, identity)
        return [r["study_uid"] for r in await conn.fetch(q("studies_of_patient"), patient["id"])]


async def default_studies_from(db: Database, ae_title: str) -> list[str]:
    """Studies with instances filed as source DEFAULT that calling AE ``ae_title`` sent over
    DIMSE (by the audit trail's store records)."""
    async with db.acquire() as conn:
        return [r["study_uid"] for r in await conn.fetch(q("default_studies_from_ae"), ae_title)]


async def _study_row(conn: asyncpg.Connection, study_uid: str) -> Any:
    """The study with its patient (``find_study_row``); NotFound when the archive does not
    hold it."""
    study = await conn.fetchrow(q("find_study_row"), study_uid)
    if study is None:
        raise NotFound(f"study {study_uid} is not in the archive")
    return study


def _check(study_uid: str) -> None:
    if not is_valid_uid(study_uid):
        raise InvalidRequest(f"not a Study Instance UID: {study_uid[:80]!r}")


def _study_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "study_uid": row["study_uid"],
        "study_date": _da(row["study_date"]),
        "study_time": row["study_time"],
        "accession_number": row["accession_number"],
        "study_id": row["study_id"],
        "study_description": row["study_description"],
        "referring_physician": row["referring_physician"],
    }


def _da(day: Any) -> str:
    return f"{day:%Y%m%d}" if day is not None else ""
