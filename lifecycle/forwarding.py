"""Forwarding rules (``[[forward]]``): every stored, replaced or corrected instance that a rule
matches is sent to the rule's destination by C-STORE, with retries, its outcome recorded per
destination (``vna forward status``, ``vna_forward_instances`` in /metrics) and audited as a
disclosure.

Fed by the change feed, not by ingest: the scheduler's step (:func:`queue_from_feed`) reads
the feed after its cursor, matches each instance against the rules
(``lifecycle.policy.forwarding``), and in one transaction records a ``forwards`` row and
queues a ``forward`` job per match and moves the cursor.  Ingest does no more work with rules
than without.  The feed is in commit order, so one cursor never passes a change that commits
later, and the unique (destination, change) key makes a repeated step harmless.

The job (:func:`forward_job`) sends the instance as a C-MOVE would (``vna.dicom.sending``):
the stored Part 10 file, digest verified as it is read, its data set in the stored transfer
syntax where the destination accepts it.  A destination that does not answer is tried again
with back-off for as long as it takes (a destination down for a day catches up; the job is
rescheduled, not failed); one that answers with a failure status has refused the instance,
which is recorded as failed with that status and not sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import aiohttp

from lifecycle import queue
from lifecycle.engine import Engine, Reschedule
from lifecycle.policy.forwarding import InstanceFacts, matching_rules
from lifecycle.queue import Job
from vna.catalog import audit, changes
from vna.catalog.queries import q
from vna.dicom import sending
from vna.errors import InvalidRequest, OfflineError

log = logging.getLogger(__name__)

FORWARD = "forward"
#: lifecycle_state key: the last change feed sequence the rules were applied to.
CURSOR = "forward_cursor"
BATCH = 500
ACTOR = "lifecycle"


async def queue_from_feed(engine: Engine) -> int:
    """Apply the forward rules to the feed's new entries; how many forwards were queued.
    Without rules the cursor follows the feed, so that a rule added later forwards what
    arrives from then on, not the feed's whole history."""
    archive = engine.archive
    rules = engine.settings.forward
    async with archive.db.acquire() as conn:
        await changes.sequence(conn)
    queued = 0
    while True:
        async with archive.db.transaction() as conn:
            known = await conn.fetchrow(q("lifecycle_state_get"), CURSOR)
            cursor = int(known["value"]) if known is not None else 0
            if not rules:
                latest = int(await conn.fetchval(q("forward_latest_sequence")))
                if latest != cursor:
                    await conn.execute(q("lifecycle_state_set"), CURSOR, str(latest))
                return 0
            rows = await conn.fetch(q("forward_candidates"), cursor, BATCH)
            for r in rows:
                if r["instance_id"] is None:
                    continue  # not a create or update, or no longer held
                facts = InstanceFacts(
                    source=r["source"],
                    modality=r["modality"],
                    sop_class_uid=r["sop_class_uid"],
                    study_description=r["study_description"],
                    calling_ae_title=r["calling_ae_title"],
                )
                for rule in matching_rules(rules, facts):
                    forward_id = await conn.fetchval(
                        q("forward_insert"),
                        rule.target,
                        rule.name,
                        r["sequence"],
                        r["study_uid"],
                        r["sop_uid"],
                    )
                    if forward_id is not None:
                        await queue.enqueue(
                            conn,
                            FORWARD,
                            {"forward_id": forward_id},
                            delay_seconds=rule.delay_seconds,
                        )
                        queued += 1
            if rows:
                await conn.execute(q("lifecycle_state_set"), CURSOR, str(rows[-1]["sequence"]))
        if len(rows) < BATCH:
            return queued


async def forward_job(engine: Engine, job: Job) -> None:
    try:
        forward_id = int(job.payload["forward_id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(f"job {job.id} ({job.kind}) has no forward_id") from None
    archive = engine.archive
    settings = engine.settings
    async with archive.db.acquire() as conn:
        f = await conn.fetchrow(q("forward_get"), forward_id)
    if f is None or f["state"] != "queued":
        return  # done by an earlier run of this job
    rule = next((r for r in settings.forward if r.name == f["rule"]), None)
    dest = next((d for d in settings.destinations if d.name == f["destination"]), None)
    if rule is None or rule.target != f["destination"] or (rule.destination and dest is None):
        await _finish(engine, f, "failed", None, "the rule or destination is no longer declared")
        return
    found = await archive.retriever.find_by_uids([f["sop_uid"]])
    if not found:
        await _finish(engine, f, "failed", None, "the instance is no longer held")
        return
    instance = found[0]
    try:
        data = await archive.retriever.read(instance)
    except OfflineError as exc:
        raise Reschedule(exc.retry_after_seconds, str(exc)) from exc
    if dest is not None:
        outgoing = sending.Outgoing(
            instance.sop_uid, instance.sop_class_uid, instance.transfer_syntax, data
        )
        (sent,) = await asyncio.to_thread(
            sending.send,
            [outgoing],
            calling_ae=settings.dimse.ae_title,
            called_ae=dest.ae_title,
            host=dest.host,
            port=dest.port,
            # [[destinations]] transfer_syntax: decoded and encoded in this worker thread.
            transfer_syntax=dest.transfer_syntax,
        )
    else:
        sent = await _post_stow(rule.stow_url, rule.stow_token, instance.sop_uid, data)
    if sent.delivered:
        await _finish(engine, f, "sent", sent.status, sent.error or None)
        return
    if sent.status == sending.NO_RESPONSE:
        # Not the instance's fault: keep trying, backing off, for as long as it takes.
        async with archive.db.acquire() as conn:
            await conn.execute(q("forward_attempted"), forward_id, "queued", None, sent.error)
        lc = settings.lifecycle
        delay = min(lc.retry_base_seconds * 2 ** min(int(f["attempts"]), 20), lc.retry_max_seconds)
        log.warning("forward to %s: %s; again in %ds", rule.target, sent.error, delay)
        raise Reschedule(delay, f"destination {rule.target} unreachable: {sent.error}")
    log.warning(
        "forward of %s to %s refused with %s %s",
        f["sop_uid"],
        rule.target,
        f"0x{sent.status:04X}" if sent.status is not None else "no status",
        sent.error,
    )
    await _finish(engine, f, "failed", sent.status, sent.error or None)


#: PS3.18 10.5.3: FailedSOPSequence (0008,1198), its FailureReason (0008,1197).
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"


async def _post_stow(url: str, token: str, sop_uid: str, data: bytes) -> sending.Sent:
    """STOW-RS (PS3.18 10.5) of one Part 10 file, as archived.  200: stored; a 4xx answer or
    a FailedSOPSequence: refused, with the FailureReason when given (the C-STORE status
    codes, PS3.18 Table 10.5.3-1); no answer or a 5xx: the caller retries."""
    boundary = f"vna-forward-{uuid.uuid4().hex}"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http,
            http.post(url, data=body, headers=headers) as resp,
        ):
            text = await resp.text()
            code = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return sending.Sent(sop_uid, sending.NO_RESPONSE, f"{url}: {exc}")
    if code >= 500:
        return sending.Sent(sop_uid, sending.NO_RESPONSE, f"{url}: HTTP {code}")
    reason = _failure_reason(text)
    if code == 200 and reason is None:
        return sending.Sent(sop_uid, 0)
    if code in (200, 202) and reason is None:
        return sending.Sent(sop_uid, 0xB000, f"HTTP {code}")  # stored with warnings
    return sending.Sent(sop_uid, reason if reason is not None else code, f"HTTP {code}")


def _failure_reason(text: str) -> int | None:
    try:
        answer = json.loads(text) if text.strip() else {}
        failed = answer.get(_FAILED_SOP_SEQUENCE, {}).get("Value") or []
        if not failed:
            return None
        return int(failed[0][_FAILURE_REASON]["Value"][0])
    except (ValueError, AttributeError, KeyError, IndexError, TypeError):
        return None


async def _finish(
    engine: Engine, f: Any, state: str, status: int | None, error: str | None
) -> None:
    """Record the outcome and audit it, in one transaction: a sent instance is a disclosure
    of patient data to the destination (PS3.15 A.5.3.1 Begin Transferring / A.5.3.3
    DICOM Instances Transferred), a refused one an attempt at one."""
    row = dict(f)
    dest = next((d for d in engine.settings.destinations if d.name == row["destination"]), None)
    address = f"{dest.host}:{dest.port}" if dest else row["destination"]
    async with engine.archive.db.transaction() as conn:
        await conn.execute(q("forward_attempted"), row["id"], state, status, error)
        await audit.record_access(
            conn,
            actor=ACTOR,
            origin="",
            action="forward",
            outcome="success" if state == "sent" else "failure",
            detail={
                "destination": row["destination"],
                "rule": row["rule"],
                "ae_title": dest.ae_title if dest else None,
                "address": address,
                "status": f"0x{status:04X}" if status is not None else None,
                "error": error,
            },
            study_uids=[row["study_uid"]],
            patients=[],
            series_uid=None,
            sop_uid=row["sop_uid"],
        )


async def status(engine: Engine, failures: int = 20) -> dict[str, Any]:
    """Per destination: instances queued, sent and failed, the last change of each, and the
    latest failures with the destination's status (``vna forward status``)."""
    async with engine.archive.db.acquire() as conn:
        rows = await conn.fetch(q("forward_status"))
        failed = await conn.fetch(q("forward_failures"), None, failures)
        cursor = await conn.fetchrow(q("lifecycle_state_get"), CURSOR)
    destinations: dict[str, dict[str, Any]] = {
        rule.target: {"queued": 0, "sent": 0, "failed": 0, "last": None}
        for rule in engine.settings.forward
    }
    for r in rows:
        d = destinations.setdefault(r["destination"], {"queued": 0, "sent": 0, "failed": 0})
        d[r["state"]] = int(r["instances"])
        last = r["last"].isoformat()
        d["last"] = max(filter(None, (d.get("last"), last)))
    return {
        "rules": [
            {"name": rule.name, "destination": rule.target} for rule in engine.settings.forward
        ],
        "destinations": destinations,
        "feed_cursor": int(cursor["value"]) if cursor is not None else 0,
        "failures": [
            {
                "destination": r["destination"],
                "sop_uid": r["sop_uid"],
                "study_uid": r["study_uid"],
                "status": f"0x{r['status']:04X}" if r["status"] is not None else None,
                "error": r["error"],
                "attempts": r["attempts"],
                "at": r["updated_at"].isoformat(),
            }
            for r in failed
        ],
    }
