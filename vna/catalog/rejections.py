"""IOCM rejection notes in the catalogue (migration 0160, ``sql/rejections.sql``).

Repository functions: each takes a connection and runs in the caller's transaction.  The
engine around them (audit, building notes, undo) is ``vna.admin.rejections``; the ingest
pipeline files the notes it receives through ``record_note``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from vna.catalog import changes
from vna.catalog.queries import q
from vna.dicom.iocm import Reference, RejectionNote


@dataclass(frozen=True)
class Recorded:
    """What filing a note did: its row, how many of its instances the archive holds (each
    now withdrawn), and how many it names that are not held yet (withdrawn on arrival)."""

    note_id: int
    held: int
    newly_rejected: int
    not_held: int
    #: References outside the note's study: not applied (``RejectionNote.own_study``).
    ignored: int


async def record_note(conn: asyncpg.Connection, note: RejectionNote, actor: str) -> Recorded | None:
    """Record ``note`` and withdraw the instances of its study it names; None when the note
    was recorded before (a resend changes nothing, and a note undone stays undone)."""
    note_id = await conn.fetchval(
        q("rejection_note_insert"),
        note.sop_uid,
        note.study_uid,
        note.series_uid,
        note.code,
        note.meaning,
        actor,
    )
    if note_id is None:
        return None
    own = note.own_study
    await conn.fetchval(q("rejection_lock_uids"), [r.sop_uid for r in own])
    await conn.execute(
        q("rejected_instances_insert"),
        note_id,
        note.study_uid,
        [r.sop_uid for r in own],
        [r.series_uid for r in own],
    )
    applied = await conn.fetchrow(q("rejection_apply"), note_id)
    # The change feed tells downstream catalogues the instances are withdrawn (issue 20).
    await changes.record_instances(conn, "reject", list(applied["marked_ids"]))
    return Recorded(
        note_id=int(note_id),
        held=int(applied["held"]),
        newly_rejected=int(applied["marked"]),
        not_held=len(own) - int(applied["held"]),
        ignored=len(note.references) - len(own),
    )


async def note_by_uid(conn: asyncpg.Connection, note_sop_uid: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(q("rejection_note_by_uid"), note_sop_uid)
    return dict(row) if row is not None else None


async def undo_note(
    conn: asyncpg.Connection, note_sop_uid: str, actor: str, reason: str
) -> tuple[dict[str, Any], list[str]] | None:
    """Mark the note undone and show its instances again (those no other active note
    rejects); the note's row and the SOP Instance UIDs visible again.  None when the note is
    not active (unknown or undone already)."""
    row = await conn.fetchrow(q("rejection_undo"), note_sop_uid, actor, reason)
    if row is None:
        return None
    back = await conn.fetch(q("rejection_unapply"), row["id"])
    # Served again: an update in the change feed, whose state reads current once more.
    await changes.record_instances(conn, "update", [r["id"] for r in back if r["visible"]])
    return dict(row), [r["sop_uid"] for r in back if r["visible"]]


async def list_notes(conn: asyncpg.Connection, *, include_undone: bool) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q("rejection_notes_list"), include_undone)]


async def list_rejected(
    conn: asyncpg.Connection, study_uid: str | None = None
) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q("rejected_instances_list"), study_uid)]


async def study_of_note(conn: asyncpg.Connection, study_uid: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(q("rejection_study"), study_uid)
    return dict(row) if row is not None else None


async def candidates(
    conn: asyncpg.Connection, study_uid: str, series_uid: str | None
) -> list[Reference]:
    """The visible instances of a study (or one of its series) that a new note would name."""
    rows = await conn.fetch(q("rejection_candidates"), study_uid, series_uid)
    return [
        Reference(study_uid, r["series_uid"], r["sop_uid"], r["sop_class_uid"], r["has_pixel_data"])
        for r in rows
    ]
