"""Which patients a caller's query or retrieve may reach: the one rule C-FIND, C-MOVE, C-GET,
QIDO-RS and WADO-RS share.

Patient identity is (PatientID, IssuerOfPatientID), and hospitals reuse each other's
PatientIDs.  A PACS rarely sends IssuerOfPatientID in a query (it is an optional key, PS3.4
C.6.1.1.2 and Table C.6-1), so a query from a source for ``PatientID=P00001`` would otherwise
match every hospital's P00001.  A caller that is a declared source (by calling AE title or by
source token) is therefore answered within its scope, ``[[sources]] query_scope``:

``own`` (the default)
    the identities of the source's own issuer (``issuer_of_patient_id``);
``linked``
    those, and every identity an administrator linked to one of them (``vna patients link``,
    or an accepted pending link).  A query for one PatientID of the source's own matches
    that patient and the identities linked to it, whatever their PatientIDs;
``all``
    every issuer's, as for a reader.

A query key IssuerOfPatientID narrows the scope; it never widens it.  Callers that are not
sources (readers, admins, C-MOVE destinations, an archive without sources) are not scoped.
A source without an issuer has no identities of its own to be scoped to, so it is not scoped
either.

Pure: no I/O.  The catalogue turns the :class:`PatientScope` into identities
(:func:`vna.catalog.patient_links.scope_identities`).
"""

from __future__ import annotations

from vna.catalog.patient_links import PatientScope
from vna.config import DEFAULT_SOURCE, SourceSettings
from vna.dicom.qido_params import ISSUER_OF_PATIENT_ID, PATIENT_ID, MatchKind, Query

__all__ = ["PatientScope", "patient_scope", "query_patient_scope"]


def patient_scope(
    caller: SourceSettings | None,
    *,
    patient_id: str | None = None,
    issuer: str | None = None,
) -> PatientScope | None:
    """The scope of a query or retrieve by ``caller`` (None: not a source), which names
    ``patient_id`` (one value, no wildcard; None otherwise) and ``issuer`` (the
    IssuerOfPatientID key, None when absent or empty).  None: no restriction."""
    if caller is None or caller.name == DEFAULT_SOURCE.name:
        return None
    own = caller.issuer_of_patient_id
    if caller.query_scope == "all" or not own:
        return None
    if caller.query_scope == "own":
        return PatientScope(own)
    if caller.query_scope != "linked":
        raise ValueError(f"unknown query_scope {caller.query_scope!r}")
    if patient_id and issuer in (None, own):
        return PatientScope(own, follow_links=True, patient_id=patient_id)
    return PatientScope(own, follow_links=True)


def query_patient_scope(caller: SourceSettings | None, query: Query) -> PatientScope | None:
    """:func:`patient_scope` of a QIDO-RS or C-FIND query."""
    return patient_scope(
        caller, patient_id=_single(query, PATIENT_ID), issuer=_single(query, ISSUER_OF_PATIENT_ID)
    )


def _single(query: Query, tag: str) -> str | None:
    match = query.match(tag)
    if match is None or match.kind is not MatchKind.SINGLE or not match.value:
        return None
    return match.value
