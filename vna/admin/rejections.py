"""IOCM rejection: withdraw instances by a rejection note, list what is withdrawn, undo.

A note received from a PACS is applied by the ingest pipeline (``vna.ingest.pipeline``).  An
operator rejects through ``POST /dicom-web/studies/{s}[/series/{se}]/reject/{code}^DCM``
(dcm4chee's endpoint, which OHIF calls): ``reject`` builds the Key Object Selection Document
a PACS would have sent (``vna.dicom.iocm``) and stores it through the same pipeline, so the
note is an ordinary instance of the study, served to whoever queries it, and the withdrawal is
filed and audited exactly as for a received note.  ``undo`` shows the instances again (an
administrator's correction of a mistaken rejection), audited; the note stays stored.

Withdrawn instances are deleted only through a retention review (``lifecycle.rejections``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from vna.catalog import audit, rejections
from vna.config import DEFAULT_SOURCE
from vna.dicom.iocm import STUDY_KEYWORDS, build_rejection_note, parse_code
from vna.dicom.uids import is_valid_uid
from vna.errors import InvalidRequest, NotFound
from vna.ingest.pipeline import Sender

if TYPE_CHECKING:
    from vna.archive import Archive
    from vna.catalog.database import Database


async def reject(
    archive: Archive,
    study_uid: str,
    series_uid: str | None,
    code_text: str,
    *,
    actor: str,
    origin: str = "",
) -> dict[str, Any]:
    """Reject the visible instances of a study (or one series) for ``code_text``
    (``113001^DCM`` ...): a note is built and stored through the ingest pipeline."""
    code = parse_code(code_text)
    for name, uid in (("study", study_uid), ("series", series_uid)):
        if uid is not None and not is_valid_uid(uid):
            raise InvalidRequest(f"{uid!r} is not a valid {name} UID")
    async with archive.db.acquire() as conn:
        study = await rejections.study_of_note(conn, study_uid)
        refs = await rejections.candidates(conn, study_uid, series_uid) if study else []
    if study is None:
        raise NotFound(f"study {study_uid} is not in the archive")
    if not refs:
        where = f"series {series_uid} of study {study_uid}" if series_uid else f"study {study_uid}"
        raise NotFound(f"{where} has no instances to reject (none, or all rejected already)")
    ds = build_rejection_note(_study_values(study), refs, code, now=dt.datetime.now(dt.UTC))
    path = archive.incoming / f"{uuid.uuid4().hex}.reject.dcm"
    ds.save_as(path, enforce_file_format=True)
    # The note is filed as the study's own source sent it, so the source's normalisation
    # (issuer of patient ID, coercions) leaves it in the study and under the patient it names.
    source = archive.settings.source_named(study["source"]) or DEFAULT_SOURCE
    await archive.ingester.ingest_file(path, Sender(source, "reject", actor, origin))
    return {
        "rejectionNote": str(ds.SOPInstanceUID),
        "studyInstanceUID": study_uid,
        "seriesInstanceUID": series_uid,
        "code": f"{code}^DCM",
        "rejected": len(refs),
    }


def _study_values(study: dict[str, Any]) -> dict[str, str]:
    day = study["study_date"]
    columns = {
        "PatientName": study["patient_name"],
        "PatientID": study["patient_id"],
        "IssuerOfPatientID": study["issuer"],
        "PatientBirthDate": study["birth_date"],
        "PatientSex": study["sex"],
        "StudyInstanceUID": study["study_uid"],
        "StudyDate": f"{day:%Y%m%d}" if day else "",
        "StudyTime": study["study_time"],
        "ReferringPhysicianName": study["referring_physician"],
        "StudyID": study["study_id"],
        "AccessionNumber": study["accession_number"],
    }
    assert set(columns) == set(STUDY_KEYWORDS)
    return {k: v or "" for k, v in columns.items()}


async def undo(
    db: Database, note_sop_uid: str, *, actor: str, origin: str = "", reason: str = ""
) -> dict[str, Any]:
    """Undo the rejection of a note: its instances are visible again (unless another note
    rejects them too), audited.  The note itself stays stored; sent again, it changes
    nothing (an undo is not overturned by a resend)."""
    async with db.transaction() as conn:
        done = await rejections.undo_note(conn, note_sop_uid, actor, reason)
        if done is None:
            existing = await rejections.note_by_uid(conn, note_sop_uid)
            if existing is None:
                raise NotFound(f"no rejection note {note_sop_uid}")
            raise InvalidRequest(
                f"the rejection of note {note_sop_uid} was undone already"
                f" ({existing['undone_by']}, {existing['undone_at']:%Y-%m-%d %H:%M})"
            )
        note, visible = done
        await audit.record(
            conn,
            actor=actor,
            origin=origin,
            action="reject-undo",
            study_uid=note["study_uid"],
            series_uid=note["series_uid"],
            sop_uid=note_sop_uid,
            detail={
                "code": f"{note['code']}^DCM",
                "meaning": note["meaning"],
                "visible_again": len(visible),
                "reason": reason,
            },
        )
    return {"rejectionNote": note_sop_uid, "visibleAgain": visible}


async def list_notes(db: Database, *, include_undone: bool = False) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        return await rejections.list_notes(conn, include_undone=include_undone)


async def list_rejected(db: Database, study_uid: str | None = None) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        return await rejections.list_rejected(conn, study_uid)
