"""File an instance version in the catalogue: the patient/study/series hierarchy, a new
instance, a version replacing the current one, or a quarantined conflict.

Repository functions: each takes a connection and runs inside the caller's transaction.  The
ingest pipeline and the administration of conflicts (``vna.admin.conflicts``) share them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog import changes
from vna.catalog.queries import q
from vna.dicom.parse import InstanceHeader
from vna.errors import InstanceConflict, PatientMismatch

#: SQLSTATE raised by vna_file_new_instance when the instance is not the plain new case.
_NOT_PLAIN = "VN409"


@dataclass(frozen=True)
class Version:
    """One version of an instance: its catalogue facts and its stored object."""

    header: InstanceHeader
    #: The issuer the patient is filed under (identity is PatientID + issuer).
    issuer: str
    source: str
    #: Of the stored Part 10 file (its content address).
    sha256: str
    #: Of the data set as the source sent it (resends are recognised by it).
    received_sha256: str
    #: Of the data set as stored (equal to received_sha256 when nothing was normalised).
    data_set_sha256: str
    size: int
    object_key: str
    metadata: dict[str, Any]


async def file_hierarchy(conn: asyncpg.Connection, v: Version) -> int:
    """Upsert the patient, study and series of ``v``; return the series row id.

    Raises PatientMismatch when the study is archived under another patient, InstanceConflict
    when the series belongs to another study.
    """
    h = v.header
    row = await conn.fetchrow(q("file_hierarchy"), *_hierarchy_values(v))
    if row["study_patient_fk"] != row["patient_fk"]:
        owner = await conn.fetchrow(q("patient_identity"), row["study_patient_fk"])
        raise PatientMismatch(
            f"study {h.study_uid} is archived under patient"
            f" {who(owner['patient_id'], owner['issuer'])}, not {who(h.patient_id, v.issuer)}"
        )
    if row["series_study_fk"] != row["study_id"]:
        raise InstanceConflict(f"series {h.series_uid} belongs to another study than {h.study_uid}")
    return int(row["series_id"])


@dataclass(frozen=True)
class NewFiling:
    """One instance for ``file_new_instances``: its version and its audit record's facts."""

    version: Version
    actor: str
    origin: str
    detail: dict[str, Any]


async def file_new_instance(
    conn: asyncpg.Connection, v: Version, *, actor: str, origin: str, detail: dict[str, Any]
) -> int | None:
    """File a new instance in one statement: hierarchy, instance row, instance-stored job and
    audit record.  Outside a transaction that is one round trip and one commit, the cost of
    ingest's common case.  None, with nothing written, when the general path must decide: the
    study is under another patient, the series under another study, or the SOP Instance UID
    was filed meanwhile."""
    try:
        inserted = await conn.fetchval(
            q("file_new_instance"), *_new_instance_values(NewFiling(v, actor, origin, detail))
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == _NOT_PLAIN:
            return None
        raise
    return int(inserted)


async def file_new_instances(
    conn: asyncpg.Connection, filings: list[NewFiling]
) -> list[int | None]:
    """``file_new_instance`` for several instances in one statement and one commit (migration
    0090): each one's row id, or None for each that is not the plain case (nothing of it
    written).  Any other failure fails them all and writes nothing."""
    batch = [_filing_object(f) for f in filings]
    ids = await conn.fetchval(q("file_new_instances"), batch)
    return [int(i) if i is not None else None for i in ids]


def _filing_object(f: NewFiling) -> dict[str, Any]:
    """A JSON object of ``vna_file_new_instances``: the parameters by name."""
    out = dict(zip(_NEW_INSTANCE_PARAMETERS, _new_instance_values(f), strict=True))
    day = f.version.header.study_date
    out["study_date"] = day.isoformat() if day else None
    return out


#: vna_file_new_instance's parameters in order, without their ``p_`` (migration 0070); also
#: the keys of vna_file_new_instances' objects (migration 0090).
_NEW_INSTANCE_PARAMETERS = (
    "patient_id", "issuer", "patient_name", "birth_date", "sex", "study_uid", "study_date",
    "study_time", "accession_number", "study_id", "study_description", "referring_physician",
    "source", "series_uid", "modality", "series_number", "series_description", "body_part",
    "sop_uid", "sop_class_uid", "instance_number", "transfer_syntax", "rows", "columns",
    "number_of_frames", "has_pixel_data", "sha256", "received_sha256", "size", "object_key",
    "metadata", "data_set_sha256", "actor", "origin", "audit_detail",
)  # fmt: skip


def _new_instance_values(f: NewFiling) -> tuple[Any, ...]:
    """The values of ``_NEW_INSTANCE_PARAMETERS``, in their order."""
    v, h = f.version, f.version.header
    return (
        *_hierarchy_values(v),
        h.sop_instance_uid,
        h.sop_class_uid,
        h.instance_number,
        h.transfer_syntax,
        h.rows,
        h.columns,
        h.number_of_frames,
        h.has_pixel_data,
        v.sha256,
        v.received_sha256,
        v.size,
        v.object_key,
        v.metadata,
        v.data_set_sha256,
        f.actor,
        f.origin,
        f.detail,
    )


def _hierarchy_values(v: Version) -> tuple[Any, ...]:
    """Patient, study and series values, in the parameter order of vna_file_hierarchy and
    of the first parameters of vna_file_new_instance (migration 0070)."""
    h = v.header
    return (
        h.patient_id,
        v.issuer,
        h.patient_name,
        h.patient_birth_date,
        h.patient_sex,
        h.study_uid,
        h.study_date,
        h.study_time,
        h.accession_number,
        h.study_id,
        h.study_description,
        h.referring_physician,
        v.source,
        h.series_uid,
        h.modality,
        h.series_number,
        h.series_description,
        h.body_part,
    )


async def insert_instance(conn: asyncpg.Connection, v: Version, series_fk: int) -> int | None:
    """The new instance's row id; None when another sender committed the UID first."""
    h = v.header
    inserted = await conn.fetchval(
        q("insert_instance"),
        h.sop_instance_uid,
        series_fk,
        h.sop_class_uid,
        h.instance_number,
        h.transfer_syntax,
        h.rows,
        h.columns,
        h.number_of_frames,
        h.has_pixel_data,
        v.sha256,
        v.received_sha256,
        v.size,
        v.object_key,
        v.size,
        v.source,
        v.metadata,
        v.data_set_sha256,
    )
    return int(inserted) if inserted is not None else None


async def replace_instance(
    conn: asyncpg.Connection,
    instance_id: int,
    v: Version,
    series_fk: int,
    *,
    reason: str,
    actor: str,
) -> int:
    """Keep the current version of the instance, then make ``v`` current; return the id of
    the kept version."""
    kept = await conn.fetchval(q("supersede_instance"), instance_id, reason, None, v.sha256, actor)
    h = v.header
    await conn.execute(
        q("replace_instance"),
        instance_id,
        series_fk,
        h.sop_class_uid,
        h.instance_number,
        h.transfer_syntax,
        h.rows,
        h.columns,
        h.number_of_frames,
        h.has_pixel_data,
        v.sha256,
        v.received_sha256,
        v.data_set_sha256,
        v.size,
        v.object_key,
        v.source,
        v.metadata,
    )
    await changes.record_instances(conn, "update", [instance_id])
    return int(kept)


async def quarantine(conn: asyncpg.Connection, v: Version, actor: str) -> int | None:
    """Record ``v`` as a conflict; None when this very version is already quarantined."""
    h = v.header
    cid = await conn.fetchval(
        q("insert_conflict"),
        h.sop_instance_uid,
        h.study_uid,
        h.series_uid,
        v.source,
        actor,
        v.sha256,
        v.received_sha256,
        v.data_set_sha256,
        v.size,
        v.object_key,
        h.transfer_syntax,
        header_to_json(h),
        v.issuer,
        v.metadata,
    )
    return int(cid) if cid is not None else None


async def enqueue_stored(conn: asyncpg.Connection, instance_id: int, v: Version) -> None:
    """Outbox row for the lifecycle engine (compression, replication) of a new object."""
    await conn.execute(
        q("enqueue_job"),
        "instance-stored",
        {
            "instance_id": instance_id,
            "object_key": v.object_key,
            "sop_uid": v.header.sop_instance_uid,
        },
    )


def header_to_json(h: InstanceHeader) -> dict[str, Any]:
    out = dataclasses.asdict(h)
    out["study_date"] = h.study_date.isoformat() if h.study_date else None
    return out


def header_from_json(data: dict[str, Any]) -> InstanceHeader:
    # Fields added to InstanceHeader after the row was written read as None.
    values: dict[str, Any] = {f.name: data.get(f.name) for f in dataclasses.fields(InstanceHeader)}
    day = data.get("study_date")
    values["study_date"] = dt.date.fromisoformat(day) if day else None
    return InstanceHeader(**values)


def who(patient_id: str, issuer: str) -> str:
    return f"{patient_id!r} (issuer {issuer!r})" if issuer else repr(patient_id)
