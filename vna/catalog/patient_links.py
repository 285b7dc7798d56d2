"""Patient identity in the catalogue: (PatientID, Issuer of Patient ID), and the links an
administrator declared between identities of one person at several hospitals.

Repository functions: each takes a connection, so the caller owns the transaction.
"""

from __future__ import annotations

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
