"""Notifications (``[[notifications]]``): each change a subscription asks for is POSTed to its
URL as a CloudEvents 1.0 JSON envelope (structured mode), signed with HMAC-SHA256, delivered
at least once and in feed order per study, retried with back-off until it is delivered or
``dead_after_seconds`` old.

Fed by the change feed like forwarding: the scheduler step (:func:`queue_from_feed`) turns
the entries after each subscription's cursor into ``notifications`` rows, in one transaction
with the cursor, and queues one ``notify`` job per study with pending events (dedup key: one at
a time per study, which is what keeps a study's events in order).  A study with a create event
and none for ``stable_seconds`` gets a ``study-stable`` event: what an AI service waits for
before reading a whole study.

The receiver checks ``X-VNA-Signature: sha256=<hex>``, the HMAC-SHA256 of the request body
under the shared secret, and recognises a repeated delivery by the event's ``id`` (an event
is sent again when the archive stopped before recording the receiver's answer).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
from typing import Any

import aiohttp

from lifecycle import queue
from lifecycle.engine import Engine, Reschedule
from lifecycle.queue import Job
from vna.catalog import changes
from vna.catalog.queries import q
from vna.config import NotificationSettings
from vna.errors import InvalidRequest
from vna.security.tls import client_context

log = logging.getLogger(__name__)

NOTIFY = "notify"
BATCH = 500
SIGNATURE_HEADER = "X-VNA-Signature"
_EVENT_TYPES = {
    "create": "org.vna.instance.created",
    "update": "org.vna.instance.updated",
    "delete": "org.vna.instance.deleted",
    "reject": "org.vna.instance.rejected",
    "tier": "org.vna.instance.tier-changed",
    "study-stable": "org.vna.study.stable",
}


def wanted(n: NotificationSettings, action: str, r: Any) -> bool:
    """Whether subscription ``n`` asks for this feed entry (``r``: its facts)."""
    return action in n.events and watched(n, action, r)


def watched(n: NotificationSettings, action: str, r: Any) -> bool:
    """Whether the entry passes the subscription's filters.  Modality and description
    filters apply while the instance is held: a deletion matches on source."""
    if n.sources and r["source"] not in n.sources:
        return False
    held = r["modality"] is not None or r["study_description"] is not None
    if (
        n.modalities
        and held
        and (r["modality"] or "").upper() not in {m.upper() for m in n.modalities}
    ):
        return False
    if n.modalities and not held and action not in ("delete", "reject"):
        return False
    return not (
        n.study_description
        and held
        and not fnmatch.fnmatchcase(
            (r["study_description"] or "").upper(), n.study_description.upper()
        )
    )


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def queue_from_feed(engine: Engine) -> int:
    """Make the subscriptions' events from the feed's new entries, study-stable events, and
    a delivery job for every study with events pending; how many events were made."""
    archive = engine.archive
    subs = engine.settings.notifications
    if not subs:
        return 0
    async with archive.db.acquire() as conn:
        await changes.sequence(conn)
    made = 0
    for n in subs:
        key = f"notify_cursor:{n.name}"
        stable = "study-stable" in n.events
        while True:
            async with archive.db.transaction() as conn:
                known = await conn.fetchrow(q("lifecycle_state_get"), key)
                cursor = int(known["value"]) if known is not None else 0
                rows = await conn.fetch(q("notify_candidates"), cursor, BATCH)
                for r in rows:
                    if (
                        stable
                        and r["action"] == "create"
                        and r["study_uid"]
                        and watched(n, "create", r)
                    ):
                        await conn.execute(
                            q("notify_study_arrived"),
                            n.name,
                            r["study_uid"],
                            r["sequence"],
                            r["logged_at"],
                        )
                    if not wanted(n, r["action"], r):
                        continue
                    data = {
                        "Sequence": r["sequence"],
                        "Action": r["action"],
                        "StudyInstanceUid": r["study_uid"],
                        "SeriesInstanceUid": r["series_uid"],
                        "SopInstanceUid": r["sop_uid"],
                        "Source": r["source"],
                    }
                    if await conn.fetchval(
                        q("notify_insert"),
                        n.name,
                        r["sequence"],
                        r["action"],
                        r["study_uid"],
                        data,
                        r["logged_at"],
                    ):
                        made += 1
                if rows:
                    await conn.execute(q("lifecycle_state_set"), key, str(rows[-1]["sequence"]))
            if len(rows) < BATCH:
                break
        if stable:
            made += await _stable_studies(engine, n)
    async with archive.db.transaction() as conn:
        for p in await conn.fetch(q("notify_pending_studies")):
            await queue.enqueue(
                conn,
                NOTIFY,
                {"target": p["target"], "study_uid": p["study_uid"]},
                dedup_key=f"notify:{p['target']}:{p['study_uid']}",
            )
    return made


async def _stable_studies(engine: Engine, n: NotificationSettings) -> int:
    """A study-stable event for each study of the subscription that no instance has reached
    for ``stable_seconds`` since its last one (a study that receives more and settles again
    is stable again, with a new id)."""
    made = 0
    async with engine.archive.db.transaction() as conn:
        for s in await conn.fetch(q("notify_settled_studies"), n.name, float(n.stable_seconds)):
            data = {"StudyInstanceUid": s["study_uid"], "Sequence": s["last_sequence"]}
            if await conn.fetchval(
                q("notify_insert"),
                n.name,
                s["last_sequence"],
                "study-stable",
                s["study_uid"],
                data,
                s["last_change"],
            ):
                made += 1
            await conn.execute(
                q("notify_study_settled"), n.name, s["study_uid"], s["last_sequence"]
            )
    return made


def envelope(engine: Engine, target: str, e: Any) -> dict[str, Any]:
    """The CloudEvents 1.0 envelope of one event; its id is the same on every delivery."""
    node = engine.settings.node_name or "vna"
    return {
        "specversion": "1.0",
        "id": f"{target}-{e['change_sequence']}-{e['event_type']}",
        "source": f"/vna/{node}",
        "type": _EVENT_TYPES[e["event_type"]],
        "subject": e["study_uid"],
        "time": e["event_time"].isoformat(),
        "datacontenttype": "application/json",
        "data": e["data"],
    }


async def notify_job(engine: Engine, job: Job) -> None:
    try:
        target = str(job.payload["target"])
        study_uid = str(job.payload["study_uid"])
    except KeyError:
        raise InvalidRequest(f"job {job.id} ({job.kind}) lacks target or study_uid") from None
    sub = next((n for n in engine.settings.notifications if n.name == target), None)
    db = engine.archive.db
    lc = engine.settings.lifecycle
    # The receiver's certificate is verified, against ``ca_file`` when the subscription names
    # one; an unverified receiver would get the events (and the secret's signatures) of
    # whoever answers on its address.
    tls = client_context(f"notifications.{target}.ca_file", sub.ca_file) if sub else None
    connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), connector=connector
    ) as http:
        while True:
            async with db.acquire() as conn:
                events = await conn.fetch(q("notify_next"), target, study_uid, 50)
            if not events:
                return
            for e in events:
                if sub is None or float(e["age_seconds"]) > sub.dead_after_seconds:
                    reason = "subscription removed" if sub is None else "too old to deliver"
                    async with db.acquire() as conn:
                        await conn.execute(q("notify_attempted"), e["id"], "dead", reason)
                    continue
                body = json.dumps(envelope(engine, target, e)).encode()
                headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
                if sub.secret:
                    headers[SIGNATURE_HEADER] = signature(sub.secret, body)
                error = None
                try:
                    async with http.post(sub.url, data=body, headers=headers) as resp:
                        if not 200 <= resp.status < 300:
                            error = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                async with db.acquire() as conn:
                    await conn.execute(
                        q("notify_attempted"), e["id"], "pending" if error else "delivered", error
                    )
                if error:
                    # The rest of the study waits behind it: order per study.
                    delay = min(
                        lc.retry_base_seconds * 2 ** min(int(e["attempts"]), 20),
                        lc.retry_max_seconds,
                    )
                    raise Reschedule(delay, f"{target}: {error}")


async def prune(conn: Any, before: Any) -> None:
    """Forget events delivered before ``before`` (the scheduler, with the change feed)."""
    await conn.execute(q("notify_prune"), before)


async def status(engine: Engine, dead: int = 20) -> dict[str, Any]:
    async with engine.archive.db.acquire() as conn:
        rows = await conn.fetch(q("notify_status"))
        dead_rows = await conn.fetch(q("notify_dead"), dead)
    targets: dict[str, dict[str, Any]] = {
        n.name: {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending": None}
        for n in engine.settings.notifications
    }
    for r in rows:
        t = targets.setdefault(
            r["target"], {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending": None}
        )
        t[r["state"]] = int(r["events"])
        if r["state"] == "pending":
            t["oldest_pending"] = r["oldest"].isoformat()
    return {
        "targets": targets,
        "dead": [
            {
                "target": r["target"],
                "event": r["event_type"],
                "study_uid": r["study_uid"],
                "sequence": r["change_sequence"],
                "attempts": r["attempts"],
                "error": r["last_error"],
                "at": r["updated_at"].isoformat(),
            }
            for r in dead_rows
        ],
    }
