"""The one writer of audit rows: every part of the archive that records who did what to which
study calls in here, inside the transaction that does it (the caller owns the connection).

The rows are written by the named blocks of ``sql/audit.sql`` only.  One exception, kept for
ingest's cost: the filing functions of migrations 0070 and 0090 (``vna_file_new_instance``,
``vna_file_new_instances``) write the audit row of a plainly new instance in the same statement
as the instance, so a store stays one round trip and a batch of stores one commit.

The policy around reads (refuse the read when its row cannot be written, count the failures) is
``vna.security.audit``'s; this module only writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from vna.catalog.queries import q


async def record(
    conn: asyncpg.Connection,
    *,
    actor: str,
    origin: str = "",
    action: str,
    outcome: str = "success",
    patient_id: str | None = None,
    issuer: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row about at most one patient, study, series and instance."""
    await conn.execute(
        q("record_audit"),
        actor,
        origin,
        action,
        outcome,
        patient_id,
        issuer,
        study_uid,
        series_uid,
        sop_uid,
        detail or {},
    )


async def record_access(
    conn: asyncpg.Connection,
    *,
    actor: str,
    origin: str,
    action: str,
    outcome: str,
    detail: dict[str, Any],
    study_uids: Sequence[str],
    patients: Sequence[tuple[str, str]],
    series_uid: str | None,
    sop_uid: str | None,
) -> None:
    """One row for one request that disclosed patient data (a query or a retrieve), naming
    every study and patient it touched; the patients of the studies are resolved in SQL."""
    await conn.execute(
        q("record_access"),
        actor,
        origin,
        action,
        outcome,
        detail,
        list(study_uids),
        [p for p, _ in patients],
        [i for _, i in patients],
        series_uid,
        sop_uid,
    )


async def record_security_event(
    conn: asyncpg.Connection,
    *,
    actor: str,
    origin: str,
    action: str,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    """A row about no study: an authentication failure, a refusal."""
    await conn.execute(q("record_security_event"), actor, origin, action, outcome, detail)
