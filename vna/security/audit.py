"""The audit trail of reads and security events, and its search (``vna audit``).

Stores, updates, merges and deletions are audited where they happen, in the transaction that
does them (the ingest pipeline, ``vna.admin``, the lifecycle engine); every row, those and
these, is written by :mod:`vna.catalog.audit`.  Reads are audited here,
one row per request however many studies it disclosed, written *before* the answer goes out:
if the row cannot be written the read is refused (:class:`~vna.errors.AuditUnavailable`, which
the gateways answer with 503 or A700) and ``vna_audit_write_failures`` counts it.  An access
the archive cannot account for does not happen.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from vna.catalog import audit as audit_rows
from vna.catalog.database import Database
from vna.catalog.queries import q
from vna.errors import AuditUnavailable
from vna.metrics import Metrics

log = logging.getLogger(__name__)

#: Longest query text kept in a row (the QIDO-RS query string, the C-FIND identifier).
MAX_QUERY_TEXT = 4096

# Actions this module records (the others are the pipeline's, vna.admin's, the lifecycle's).
QUERY = "query"  # QIDO-RS, C-FIND
RETRIEVE = "retrieve"  # WADO-RS instances, C-MOVE, C-GET
METADATA = "metadata"  # WADO-RS metadata
AUTHENTICATION_FAILED = "authentication-failed"  # a bearer token that is nobody's
ACCESS_DENIED = "access-denied"  # a valid credential asking for what its role does not allow
ASSOCIATION_REJECTED = "association-rejected"  # DIMSE: calling AE title not recognised


@dataclass(frozen=True)
class Access:
    """One request that disclosed (or was refused) patient data."""

    actor: str
    origin: str
    action: str
    study_uids: Sequence[str] = ()
    #: Patient identities (PatientID, IssuerOfPatientID) disclosed without a study.
    patients: Sequence[tuple[str, str]] = ()
    series_uid: str | None = None
    sop_uid: str | None = None
    outcome: str = "success"
    detail: Mapping[str, Any] = field(default_factory=dict)


class AuditTrail:
    def __init__(self, db: Database, metrics: Metrics) -> None:
        self.db = db
        self.metrics = metrics

    async def record(self, access: Access) -> None:
        """Write the row; AuditUnavailable when it cannot be written."""
        studies = list(dict.fromkeys(access.study_uids))
        try:
            async with self.db.acquire() as conn:
                await audit_rows.record_access(
                    conn,
                    actor=access.actor,
                    origin=access.origin,
                    action=access.action,
                    outcome=access.outcome,
                    detail=dict(access.detail),
                    study_uids=studies,
                    patients=access.patients,
                    series_uid=access.series_uid,
                    sop_uid=access.sop_uid,
                )
        except Exception as exc:  # any failure: the driver's, a trigger's, a full disk
            raise self._failed(access, exc) from exc

    async def security_event(
        self,
        actor: str,
        origin: str,
        action: str,
        detail: Mapping[str, Any],
        *,
        outcome: str = "failure",
    ) -> None:
        """Record a refusal or alert.  The refusal stands whatever happens to its record, so a
        failure here is counted and logged, not raised."""
        try:
            async with self.db.acquire() as conn:
                await audit_rows.record_security_event(
                    conn,
                    actor=actor,
                    origin=origin,
                    action=action,
                    outcome=outcome,
                    detail=dict(detail),
                )
        except Exception as exc:
            self._failed(Access(actor, origin, action, outcome=outcome), exc)

    def _failed(self, access: Access, exc: BaseException) -> AuditUnavailable:
        self.metrics.audit_failures.inc()
        log.error(
            "audit record of %s by %s from %s could not be written: %s",
            access.action,
            access.actor,
            access.origin or "-",
            exc,
        )
        return AuditUnavailable(
            f"the audit trail cannot be written ({type(exc).__name__}); the request is refused"
        )


def query_text(text: str) -> str:
    return text if len(text) <= MAX_QUERY_TEXT else text[: MAX_QUERY_TEXT - 3] + "..."


@dataclass(frozen=True)
class AuditFilter:
    patient_id: str | None = None
    issuer: str | None = None
    study_uid: str | None = None
    actor: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 100_000


async def search(conn: asyncpg.Connection, f: AuditFilter) -> list[dict[str, Any]]:
    """Audit rows matching every given criterion, oldest first."""
    rows = await conn.fetch(
        q("audit_search"),
        f.patient_id,
        f.issuer,
        f.study_uid,
        f.actor,
        f.action,
        f.since,
        f.until,
        f.limit,
    )
    return [dict(r) for r in rows]


async def search_newest(
    conn: asyncpg.Connection, f: AuditFilter, offset: int = 0
) -> list[dict[str, Any]]:
    """A page of the audit rows matching ``f`` (``f.limit`` rows from ``offset``), newest
    first: the console's audit search."""
    rows = await conn.fetch(
        q("audit_search_newest"),
        f.patient_id,
        f.issuer,
        f.study_uid,
        f.actor,
        f.action,
        f.since,
        f.until,
        f.limit,
        offset,
    )
    return [dict(r) for r in rows]
