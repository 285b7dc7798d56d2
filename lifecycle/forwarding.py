"""Forwarding rules (``[[forward]]``): every stored, replaced or corrected instance that a rule
matches is sent to the rule's destination by C-STORE or STOW-RS, with retries, its outcome
recorded per destination (``vna forward status``, ``vna_forward_instances`` in /metrics) and
audited as a disclosure.

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
which is recorded as failed with that status and not sent again.  A STOW-RS destination gets
the same in DICOMweb terms: the stored Part 10 file, the Store Instances Response read as
C-STORE statuses (:func:`stow_outcomes`).

A rule with ``delay_seconds`` holds a study until it is quiet and sends it together
(:func:`forward_study_job`): on one association, or in one STOW-RS request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from lifecycle import queue
from lifecycle.engine import Engine, Reschedule
from lifecycle.policy.forwarding import InstanceFacts, matching_rules
from lifecycle.queue import Job
from vna.catalog import audit, changes
from vna.catalog.queries import q
from vna.config import ForwardRuleSettings
from vna.dicom import sending
from vna.errors import InvalidRequest, OfflineError
from vna.retrieve import StoredInstance
from vna.security.tls import client_context

log = logging.getLogger(__name__)

FORWARD = "forward"
#: A study's instances held by a rule with ``delay_seconds``, sent together.
FORWARD_STUDY = "forward-study"
#: Bytes of instances read into memory and sent on one association (or in one STOW-RS
#: request) by a study's batch; a larger study goes in more than one, one after the other.
BATCH_BYTES = 256 * 1024**2
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
                    if forward_id is None:
                        continue
                    queued += 1
                    if not rule.delay_seconds:
                        await queue.enqueue(conn, FORWARD, {"forward_id": forward_id})
            if rows:
                await conn.execute(q("lifecycle_state_set"), CURSOR, str(rows[-1]["sequence"]))
        if len(rows) < BATCH:
            break
    await _queue_held_studies(engine)
    return queued


async def _queue_held_studies(engine: Engine) -> None:
    """A ``forward-study`` job for every study with instances waiting under a rule with a
    delay (or under a rule since removed from the configuration).  Every step, not only when
    an instance is queued: the job is deduplicated while queued or running, so an instance
    queued while its study's job was sending is picked up by the next step's job."""
    rules = engine.settings.forward
    immediate = sorted(r.name for r in rules if not r.delay_seconds)
    delays = [r.delay_seconds for r in rules if r.delay_seconds]
    async with engine.archive.db.transaction() as conn:
        for h in await conn.fetch(q("forward_held_studies"), immediate):
            await queue.enqueue(
                conn,
                FORWARD_STUDY,
                {"destination": h["destination"], "study_uid": h["study_uid"]},
                dedup_key=f"forward-study:{h['destination']}:{h['study_uid']}",
                delay_seconds=min(delays, default=0),
            )


async def forward_job(engine: Engine, job: Job) -> None:
    """One instance change for one destination (a rule without ``delay_seconds``)."""
    try:
        forward_id = int(job.payload["forward_id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest(f"job {job.id} ({job.kind}) has no forward_id") from None
    async with engine.archive.db.acquire() as conn:
        f = await conn.fetchrow(q("forward_get"), forward_id)
    if f is None or f["state"] != "queued":
        return  # done by an earlier run of this job
    await _deliver(engine, [f])


async def forward_study_job(engine: Engine, job: Job) -> None:
    """A study's waiting instances for one destination (rules with ``delay_seconds``): once
    no change of the study has entered the feed for the delay, all of them on one association
    or in one STOW-RS request (one per :data:`BATCH_BYTES`), in feed order.  Until then it
    waits, without using up an attempt; an instance arriving meanwhile joins the batch and
    restarts the wait."""
    try:
        destination = str(job.payload["destination"])
        study_uid = str(job.payload["study_uid"])
    except KeyError:
        raise InvalidRequest(f"job {job.id} ({job.kind}) lacks destination or study_uid") from None
    async with engine.archive.db.acquire() as conn:
        rows = await conn.fetch(q("forward_study_queued"), destination, study_uid)
    if not rows:
        return
    rules = {r.name: r for r in engine.settings.forward}
    delay = max((rules[r["rule"]].delay_seconds for r in rows if r["rule"] in rules), default=0)
    quiet = min(float(r["quiet_seconds"]) for r in rows)
    if quiet < delay:
        raise Reschedule(delay - quiet, f"study {study_uid} quiet for {quiet:.0f}s of {delay}s")
    await _deliver(engine, list(rows))


async def _deliver(engine: Engine, rows: list[Any]) -> None:
    """Send the instances of ``rows`` (forwards of one destination, in order) and record each
    outcome: sent, refused (failed with the destination's status, not sent again), or, when
    the destination does not answer, left queued and the job rescheduled with back-off."""
    archive = engine.archive
    settings = engine.settings
    rules = {r.name: r for r in settings.forward}
    destinations = {d.name: d for d in settings.destinations}
    ready: list[tuple[Any, ForwardRuleSettings, StoredInstance]] = []
    for f in rows:
        rule = rules.get(f["rule"])
        if (
            rule is None
            or rule.target != f["destination"]
            or (rule.destination and rule.destination not in destinations)
        ):
            await _finish(engine, f, "failed", None, "its rule or destination is not declared")
            continue
        found = await archive.retriever.find_by_uids([f["sop_uid"]])
        if not found:
            await _finish(engine, f, "failed", None, "the instance is no longer held")
            continue
        ready.append((f, rule, found[0]))
    chunks: list[list[tuple[Any, ForwardRuleSettings, StoredInstance]]] = []
    size = BATCH_BYTES
    for item in ready:
        # A new chunk past the batch's bytes, or where the way of sending changes (rules
        # naming one STOW-RS URL with different tokens or CA files).
        if (size + item[2].size > BATCH_BYTES and (not chunks or chunks[-1])) or (
            chunks and chunks[-1] and _sent_by(chunks[-1][0][1]) != _sent_by(item[1])
        ):
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item[2].size
    for chunk in chunks:
        try:
            data = [await archive.retriever.read(instance) for _, _, instance in chunk]
        except OfflineError as exc:
            raise Reschedule(exc.retry_after_seconds, str(exc)) from exc
        rule = chunk[0][1]
        dest = destinations.get(rule.destination)
        if dest is not None:
            outgoing = [
                sending.Outgoing(i.sop_uid, i.sop_class_uid, i.transfer_syntax, d)
                for (_, _, i), d in zip(chunk, data, strict=True)
            ]
            results = await asyncio.to_thread(
                sending.send,
                outgoing,
                calling_ae=settings.dimse.ae_title,
                called_ae=dest.ae_title,
                host=dest.host,
                port=dest.port,
                # [[destinations]] transfer_syntax: decoded and encoded in this worker thread.
                transfer_syntax=dest.transfer_syntax,
            )
        else:
            # A study's batch in one STOW-RS request, as a PACS sends one (PS3.18 10.5): the
            # answer names each instance's outcome.
            uids = [i.sop_uid for _, _, i in chunk]
            results = await _post_stow(
                rule.stow_url,
                rule.stow_token,
                list(zip(uids, data, strict=True)),
                rule.stow_ca_file,
            )
        unreachable: sending.Sent | None = None
        for (f, _, _), sent in itertools.zip_longest(chunk, results):
            if sent is None or sent.status == sending.NO_RESPONSE:
                # Not the instance's fault: keep trying, backing off, for as long as it takes.
                error = sent.error if sent is not None else "not tried: the destination is away"
                if unreachable is None:
                    unreachable = sent or sending.Sent(f["sop_uid"], sending.NO_RESPONSE, error)
                async with archive.db.acquire() as conn:
                    await conn.execute(q("forward_attempted"), f["id"], "queued", None, error)
            elif sent.delivered:
                await _finish(engine, f, "sent", sent.status, sent.error or None)
            else:
                log.warning(
                    "forward of %s to %s refused with 0x%04X %s",
                    f["sop_uid"],
                    rule.target,
                    sent.status,
                    sent.error,
                )
                await _finish(engine, f, "failed", sent.status, sent.error or None)
        if unreachable is not None:
            lc = settings.lifecycle
            attempts = min(int(f["attempts"]) for f, _, _ in chunk)
            delay = min(lc.retry_base_seconds * 2 ** min(attempts, 20), lc.retry_max_seconds)
            log.warning("forward to %s: %s; again in %ds", rule.target, unreachable.error, delay)
            raise Reschedule(delay, f"destination {rule.target} unreachable: {unreachable.error}")


#: PS3.18 10.5.3: FailedSOPSequence (0008,1198), its FailureReason (0008,1197).
_FAILED_SOP_SEQUENCE = "00081198"
_FAILURE_REASON = "00081197"


def _sent_by(rule: ForwardRuleSettings) -> tuple[str, str, str, Path | None]:
    return (rule.destination, rule.stow_url, rule.stow_token, rule.stow_ca_file)


async def _post_stow(
    url: str, token: str, instances: list[tuple[str, bytes]], ca_file: Path | None = None
) -> list[sending.Sent]:
    """STOW-RS (PS3.18 10.5) of Part 10 files, as archived, in one request; an outcome per
    instance, in order (see :func:`stow_outcomes`).  A request the endpoint finds too large
    (413) is sent again in halves, down to one instance per request."""
    boundary = f"vna-forward-{uuid.uuid4().hex}"
    # The writer refers to the instances' bytes rather than copying them into one body, and
    # knows its length: a Content-Length, not chunked transfer, which some servers refuse.
    body = aiohttp.MultipartWriter("related", boundary=boundary)
    for _, data in instances:
        body.append(data, {"Content-Type": "application/dicom"})
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    uids = [uid for uid, _ in instances]
    connector = aiohttp.TCPConnector(ssl=client_context("forward.stow_ca_file", ca_file))
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=300 + 60 * len(instances)),
                connector=connector,
            ) as http,
            http.post(url, data=body, headers=headers) as resp,
        ):
            text = await resp.text()
            code = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [sending.Sent(uid, sending.NO_RESPONSE, f"{url}: {exc}") for uid in uids]
    if code == 413 and len(instances) > 1:
        half = len(instances) // 2
        first = await _post_stow(url, token, instances[:half], ca_file)
        if any(s.status == sending.NO_RESPONSE for s in first):
            rest = [sending.Sent(u, sending.NO_RESPONSE, first[0].error) for u in uids[half:]]
            return first + rest
        return first + await _post_stow(url, token, instances[half:], ca_file)
    if code >= 500:
        return [sending.Sent(uid, sending.NO_RESPONSE, f"{url}: HTTP {code}") for uid in uids]
    return stow_outcomes(code, text, uids)


#: PS3.18 10.5.3: FailedSOPSequence (0008,1198), ReferencedSOPSequence (0008,1199), and in
#: their items Referenced SOP Instance UID (0008,1155), FailureReason (0008,1197) and
#: WarningReason (0008,1196).
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"


def stow_outcomes(code: int, text: str, uids: list[str]) -> list[sending.Sent]:
    """Each sent instance's outcome from a Store Instances Response (PS3.18 10.5.3), in the
    terms of a C-STORE status: in the ReferencedSOPSequence, stored (with its WarningReason,
    if any); in the FailedSOPSequence, refused with its FailureReason (the C-STORE failure
    codes, PS3.18 Table 10.5.3-1).  An instance the answer does not name was stored if the
    answer is 200 (all stored, 10.5.3), refused with the HTTP status otherwise."""
    referenced: dict[str, int] = {}
    failed: dict[str, int | None] = {}
    anonymous: list[int | None] = []  # failures naming no instance (a part it could not read)
    try:
        answer = json.loads(text) if text.strip() else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict):
        for item in _items(answer, _REFERENCED_SOP_SEQUENCE):
            uid = _value(item, _REFERENCED_SOP_INSTANCE)
            if isinstance(uid, str):
                warning = _value(item, _WARNING_REASON)
                referenced[uid] = warning if isinstance(warning, int) else 0
        for item in _items(answer, _FAILED_SOP_SEQUENCE):
            reason = _value(item, _FAILURE_REASON)
            code_of = reason if isinstance(reason, int) else None
            uid = _value(item, _REFERENCED_SOP_INSTANCE)
            if isinstance(uid, str):
                failed[uid] = code_of
            else:
                anonymous.append(code_of)
    out = []
    for uid in uids:
        if uid in failed:
            reason = failed[uid]
            out.append(sending.Sent(uid, reason if reason is not None else code, f"HTTP {code}"))
        elif uid in referenced:
            warning = referenced[uid]  # 0: stored as sent (a 202 may be about the others)
            out.append(sending.Sent(uid, warning, f"HTTP {code}" if warning else ""))
        elif code == 200:
            out.append(sending.Sent(uid, 0))
        else:
            reason = anonymous.pop(0) if anonymous else None
            if reason is None and code == 202:
                # A 202 that names neither this instance nor a failure: stored with warnings.
                out.append(sending.Sent(uid, 0xB000, f"HTTP {code}"))
                continue
            out.append(sending.Sent(uid, reason if reason is not None else code, f"HTTP {code}"))
    return out


def _items(answer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = answer.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _value(item: dict[str, Any], tag: str) -> Any:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


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


async def prune(conn: Any, before: Any) -> None:
    """Forget instances sent before ``before`` (the scheduler, with the change feed)."""
    await conn.execute(q("forward_prune"), before)


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
