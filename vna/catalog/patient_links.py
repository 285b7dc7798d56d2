"""Patient identity in the catalogue: (PatientID, Issuer of Patient ID), and the links an
administrator declared between identities of one person at several hospitals.

Repository functions: each takes a connection, so the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from vna.catalog.queries import q


async def linked_patient_ids(
    conn: asyncpg.Connection, patient_id: str, issuer: str
) -> list[tuple[str, str]]:
    """Every (PatientID, issuer) declared the same person as this one, itself included,
    following links transitively (A-B and B-C link A to C).  Without links: just itself.

    Searches that follow links (QIDO-RS, C-FIND, when asked) match any of these identities.
    """
    rows = await conn.fetch(q("linked_identities"), patient_id, issuer)
    return [(r["patient_id"], r["issuer"]) for r in rows]


@dataclass(frozen=True)
class PatientScope:
    """The patient identities a caller's query or retrieve may match (decided by
    :func:`vna.security.query_scope.patient_scope`)."""

    #: The caller's own issuer: its identities are in scope.
    issuer: str
    #: Identities linked to one of the issuer's are in scope too.
    follow_links: bool = False
    #: Set when the query names one PatientID of the caller's own and links are followed: the
    #: identities linked to (patient_id, issuer), itself included, replace the PatientID and
    #: IssuerOfPatientID matching (they are one person under several IDs).
    patient_id: str | None = None


@dataclass(frozen=True)
class ScopedIdentities:
    """A :class:`PatientScope` resolved against the catalogue: a
    patient is in scope when its issuer is one of ``issuers`` or its identity one of
    ``identities``."""

    issuers: tuple[str, ...]
    identities: tuple[tuple[str, str], ...]
    #: The identities stand for the query's PatientID (and IssuerOfPatientID): those keys are
    #: not matched as well (the linked identities have other PatientIDs).
    replaces_patient_keys: bool = False

    def admits(self, patient_id: str, issuer: str) -> bool:
        return issuer in self.issuers or (patient_id, issuer) in self.identities


async def scope_identities(conn: asyncpg.Connection, scope: PatientScope) -> ScopedIdentities:
    """The issuers and identities ``scope`` reaches, links followed as they stand now."""
    if scope.patient_id is not None:
        linked = await linked_patient_ids(conn, scope.patient_id, scope.issuer)
        return ScopedIdentities((), tuple(linked), replaces_patient_keys=True)
    if scope.follow_links:
        rows = await conn.fetch(q("scope_linked_identities"), scope.issuer)
        linked = [(r["patient_id"], r["issuer"]) for r in rows]
        return ScopedIdentities((scope.issuer,), tuple(linked))
    return ScopedIdentities((scope.issuer,), ())


# --- pending links: identities found holding the same instances ---------------------------------


@dataclass(frozen=True)
class FiledIdentity:
    """The patient, study and series an archived instance is filed under."""

    patient_id: str
    issuer: str
    study_uid: str
    series_uid: str


async def filed_identity(conn: asyncpg.Connection, sop_uid: str) -> FiledIdentity | None:
    row = await conn.fetchrow(q("filed_identity"), sop_uid)
    if row is None:
        return None
    return FiledIdentity(row["patient_id"], row["issuer"], row["study_uid"], row["series_uid"])


async def record_pending_link(
    conn: asyncpg.Connection,
    a: tuple[str, str],
    b: tuple[str, str],
    *,
    sop_uid: str,
    study_uid: str,
    source: str,
) -> int | None:
    """Propose that identities ``a`` and ``b`` are one person, on the evidence of an instance
    both sent; the pending link's id, or None when they are linked already or the proposal
    was rejected before."""
    first, second = sorted((a, b))
    link_id = await conn.fetchval(
        q("record_pending_link"), *first, *second, sop_uid, study_uid, source
    )
    return None if link_id is None else int(link_id)
