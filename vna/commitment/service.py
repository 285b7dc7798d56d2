"""Storage Commitment requests and reports, recorded and audited: what the DIMSE handler
(``vna.gateway.dimse.commitment``) and the ``commitment-report`` job (lifecycle/handlers.py)
both call.

A request is recorded with its report job in one transaction (the outbox of the design
notes), so that a report is never lost: the handler answers on the requester's association
when it stays open (PS3.4 J.3.3: "may be sent on the same association"), and otherwise the
job sends it on a new one, retried with back-off by the lifecycle workers, after a restart
too.  Whoever records the report first wins; the other finds it reported and stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vna.catalog import audit, commitments
from vna.commitment.check import Verdict, check
from vna.commitment.model import Outcome, Reference, Request
from vna.commitment.sender import ReportNotDelivered, send_report

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)
REQUESTED = "storage-commitment-request"
REPORTED = "storage-commitment-report"
SAME_ASSOCIATION = "same-association"
NEW_ASSOCIATION = "new-association"
#: The job's first run comes this long after the report's deadline: by then the handler has
#: reported on the requester's association, or given up and made the job due at once.
JOB_SAFETY_SECONDS = 30.0
#: Seconds one run of the job waits for replication before giving its worker back
#: (rescheduled, not failed, while the deadline is ahead).
JOB_WAIT_SLICE = 20.0
RECHECK_SECONDS = 2.0


async def accept(
    archive: Archive, request: Request, *, source: str, calling_ae: str, origin: str
) -> int:
    """Record a request, its report job and its audit row (one transaction); its id."""
    dimse = archive.settings.dimse
    async with archive.db.transaction() as conn:
        commitment_id = await commitments.record_request(
            conn,
            transaction_uid=request.transaction_uid,
            source=source,
            calling_ae=calling_ae,
            origin=origin,
            required_replicas=dimse.commit_requires_replicas,
            refs=[(r.sop_class_uid, r.sop_instance_uid) for r in request.references],
            job_delay_seconds=dimse.commit_timeout_seconds + JOB_SAFETY_SECONDS,
        )
        await audit.record(
            conn,
            actor=calling_ae,
            origin=origin,
            action=REQUESTED,
            detail={
                "protocol": "dimse",
                "source": source,
                "commitment": commitment_id,
                "transaction_uid": request.transaction_uid,
                "instances": len(request.references),
            },
        )
    return commitment_id


async def evaluate(
    archive: Archive,
    references: tuple[Reference, ...] | list[Reference],
    *,
    required_replicas: int,
    wait_seconds: float,
    give_up: Callable[[], bool] | None = None,
) -> Verdict:
    return await check(
        archive,
        references,
        required_replicas=required_replicas,
        wait_seconds=wait_seconds,
        give_up=give_up,
    )


async def record_report(
    archive: Archive,
    commitment_id: int,
    *,
    transaction_uid: str,
    calling_ae: str,
    outcome: Outcome,
    via: str,
    study_uids: Sequence[str] = (),
) -> bool:
    """Record a report as sent, with its audit row (naming the studies and patients the
    archive took responsibility for); False when it had been already."""
    async with archive.db.transaction() as conn:
        first = await commitments.mark_reported(
            conn,
            commitment_id,
            committed=len(outcome.committed),
            failed=outcome.failed_rows(),
            via=via,
        )
        if first:
            await audit.record_access(
                conn,
                actor=archive.settings.dimse.ae_title,
                origin=calling_ae,
                action=REPORTED,
                outcome="success" if not outcome.failed else "partial",
                detail={
                    "protocol": "dimse",
                    "commitment": commitment_id,
                    "transaction_uid": transaction_uid,
                    "committed": len(outcome.committed),
                    "failed": len(outcome.failed),
                    "via": via,
                },
                study_uids=study_uids,
                patients=[],
                series_uid=None,
                sop_uid=None,
            )
    return first


async def report_now(archive: Archive, commitment_id: int) -> None:
    """The requester's association is gone: the job reports on a new one from now on."""
    async with archive.db.acquire() as conn:
        await commitments.report_now(conn, commitment_id)


async def abandon(archive: Archive, commitment_id: int, error: str) -> None:
    """The job's attempts are used up: record the report as undeliverable (counted failed
    in /metrics, shown by `vna commitments list`), audited."""
    async with archive.db.transaction() as conn:
        await commitments.mark_undeliverable(
            conn, commitment_id, committed=None, failed=None, error=error
        )
        await audit.record(
            conn,
            actor=archive.settings.dimse.ae_title,
            action=REPORTED,
            outcome="failure",
            detail={"commitment": commitment_id, "reason": error[:500]},
        )


async def deliver(archive: Archive, commitment_id: int) -> float | None:
    """The job's part: send a pending report on a new association.  Seconds after which to
    look again when it still waits for replication; None when there is nothing more to do
    (reported, by this call or before; or undeliverable).  ReportNotDelivered (retriable)
    when the requester could not be given the report."""
    async with archive.db.acquire() as conn:
        row = await commitments.get(conn, commitment_id)
    if row is None or row["state"] == "reported":
        return None  # sent already (an undeliverable one is tried again on `retry`)
    refs = [Reference(r["class"], r["instance"]) for r in _json(row["refs"])]
    remaining = archive.settings.dimse.commit_timeout_seconds - float(row["age_seconds"])
    verdict = await evaluate(
        archive,
        refs,
        required_replicas=int(row["required_replicas"]),
        wait_seconds=min(max(remaining, 0.0), JOB_WAIT_SLICE),
    )
    if verdict.short_of_replicas and remaining > JOB_WAIT_SLICE:
        return RECHECK_SECONDS
    calling_ae = str(row["calling_ae"])
    address = archive.settings.move_destination(calling_ae)
    if address is None:
        # PS3.4 J.3.3 needs the requester's address for a new association; a source without
        # host and port can only be answered on its own association.
        error = f"no host/port configured for {calling_ae!r}: report not deliverable"
        log.error("storage commitment %s: %s", row["transaction_uid"], error)
        async with archive.db.transaction() as conn:
            await commitments.mark_undeliverable(
                conn,
                commitment_id,
                committed=len(verdict.outcome.committed),
                failed=verdict.outcome.failed_rows(),
                error=error,
            )
            await audit.record(
                conn,
                actor=archive.settings.dimse.ae_title,
                origin=calling_ae,
                action=REPORTED,
                outcome="failure",
                detail={"commitment": commitment_id, "reason": error},
            )
        return None
    host, port = address
    try:
        await asyncio.to_thread(
            send_report,
            ae_title=archive.settings.dimse.ae_title,
            called_ae=calling_ae,
            host=host,
            port=port,
            transaction_uid=str(row["transaction_uid"]),
            outcome=verdict.outcome,
            timeout=float(archive.settings.dimse.network_timeout),
        )
    except ReportNotDelivered as exc:
        async with archive.db.acquire() as conn:
            await commitments.attempt_failed(conn, commitment_id, str(exc))
        raise
    await record_report(
        archive,
        commitment_id,
        transaction_uid=str(row["transaction_uid"]),
        calling_ae=calling_ae,
        outcome=verdict.outcome,
        via=NEW_ASSOCIATION,
        study_uids=verdict.study_uids,
    )
    return None


def _json(value: Any) -> list[dict[str, str]]:
    # The pool decodes jsonb; a bare connection hands back text.
    if isinstance(value, str):
        decoded: list[dict[str, str]] = json.loads(value)
        return decoded
    return list(value)
