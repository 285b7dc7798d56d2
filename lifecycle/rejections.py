"""Rejected instances in the retention review: the only way they are deleted.

An IOCM rejection note (``vna.admin.rejections``) withdraws instances from every reader but
deletes nothing: IHE RAD TF-1 IOCM leaves the archive to remove them "according to its
policies", and here that is the records manager's two-phase review.  ``vna retention review``
lists every withdrawn instance with the note's reason (the title of PS3.16 CID 7010) and any
legal hold on its study or patient; approval deletes each listed one that is due, in a
transaction of its own, after checking again that it is still withdrawn by an active note (an
undo in between wins) and that no legal hold covers it now (a hold wins).  Its object and the
replicas' copies go as for a deleted study; the note itself stays, an ordinary instance.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from lifecycle import queue
from vna.catalog import audit, changes
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.errors import VnaError

log = logging.getLogger(__name__)

#: Deletes an object nothing names any more from the active store and every other store
#: (lifecycle.retention.delete_everywhere, handed in by the approval); raises VnaError when
#: the active store fails, and leaves a failed replica to its deletion job.
DeleteObject = Callable[[str], Awaitable[object]]


async def fill_review(conn: asyncpg.Connection, review_id: int) -> None:
    """List the withdrawn instances in review ``review_id`` (in its transaction)."""
    await conn.execute(q("review_fill_rejected"), review_id)


async def review_items(conn: asyncpg.Connection, review_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(q("review_rejected_items"), review_id)]


async def execute_review(
    db: Database,
    review_id: int,
    actor: str,
    deleted: list[str],
    skipped: list[tuple[str, str]],
    delete_object: DeleteObject,
) -> int:
    """Delete the due instances of an approved review; their SOP Instance UIDs are added to
    ``deleted``, those left alone to ``skipped`` with the reason.  Returns the bytes freed."""
    async with db.acquire() as conn:
        rows = await conn.fetch(q("review_rejected_to_execute"), review_id)
    freed = 0
    for row in rows:
        freed += await _execute_item(
            db, review_id, row["instance_fk"], actor, (deleted, skipped), delete_object
        )
    return freed


async def _execute_item(
    db: Database,
    review_id: int,
    instance_id: int,
    actor: str,
    outcomes: tuple[list[str], list[tuple[str, str]]],
    delete_object: DeleteObject,
) -> int:
    deleted, skipped = outcomes
    jobs: list[tuple[int, str]] = []
    async with db.transaction() as conn:
        item = await conn.fetchrow(q("review_rejected_lock"), review_id, instance_id)
        if item is None or item["state"] != "due":
            return 0  # carried out (or refused) by a concurrent approval
        uid = item["sop_uid"]
        reason = await _refusal(conn, instance_id)
        if reason is not None:
            await conn.execute(
                q("review_rejected_finish"), review_id, instance_id, "skipped", reason
            )
            skipped.append((uid, reason))
            return 0
        await changes.record_instances(conn, "delete", [instance_id])  # before the row goes
        gone = await conn.fetchrow(q("rejected_instance_delete"), instance_id)
        await audit.record(
            conn,
            actor=actor,
            origin="lifecycle",
            action="rejection-delete",
            patient_id=item["patient_id"],
            issuer=item["issuer"],
            study_uid=item["study_uid"],
            series_uid=item["series_uid"],
            sop_uid=uid,
            detail={
                "review": review_id,
                "note": item["note_sop_uid"],
                "code": f"{item['code']}^DCM",
                "meaning": item["meaning"],
                "bytes": item["bytes"],
                "earlier_versions": gone["versions"],
            },
        )
        jobs = [
            (r["id"], r["object_key"])
            for r in await conn.fetch(q("enqueue_object_deletes"), list(gone["object_keys"]), 0.0)
        ]
        await conn.execute(
            q("review_rejected_finish"),
            review_id,
            instance_id,
            "deleted",
            f"deleted ({item['meaning']})",
        )
        deleted.append(uid)
    # As for a deleted study (lifecycle.retention.execute_item): the objects now, the queued
    # jobs as the safety net for a crash here; the replicas' copies follow.
    done: list[int] = []
    for job_id, key in jobs:
        try:
            await delete_object(key)
            done.append(job_id)
        except VnaError as exc:
            log.warning("object %s left to the deletion job %d: %s", key, job_id, exc)
    if done:
        async with db.acquire() as conn:
            await queue.mark_done(conn, done)
    return int(item["bytes"])


async def _refusal(conn: asyncpg.Connection, instance_id: int) -> str | None:
    """Why the instance may not be deleted now (None: it may).  Its study row is locked
    first, as a study deletion does, so a legal hold set meanwhile is seen."""
    now = await conn.fetchrow(q("rejected_instance_now"), instance_id)
    if now is None:
        return "no longer in the archive"
    if now["rejection_fk"] is None or now["undone_at"] is not None:
        return "no longer rejected (the rejection was undone)"
    study = await conn.fetchrow(q("study_lock_for_delete"), now["study_fk"])
    holds = await conn.fetch(
        q("active_holds_of_study"), study["study_uid"], study["patient_id"], study["issuer"]
    )
    if holds:
        return "; ".join(f"legal hold {h['id']} on the {h['scope']}: {h['reason']}" for h in holds)
    return None
