"""C-FIND SCP (PS3.4 C.4.1): Patient Root and Study Root queries, answered from the catalogue.

STUDY, SERIES and IMAGE queries go through the same parser and search as QIDO-RS
(:func:`vna.dicom.qido_params.query_from_identifier`, :func:`vna.catalog.search.search_page`),
so the matching rules are the same whichever protocol asks.  A PATIENT level query is a study level
search on the patient keys, one answer per patient identity (PatientID and issuer).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from vna.catalog.search import patient_counts, search_page
from vna.config import SourceSettings
from vna.dicom.qido_params import Query, query_from_identifier
from vna.errors import InvalidRequest, VnaError
from vna.gateway.dimse.bridge import Gateway
from vna.gateway.dimse.identifier import (
    PATIENT_COUNT_TAGS,
    find_response,
    patient_search_identifier,
    query_level,
)
from vna.gateway.status import CANCEL, PENDING, error_comment, find_failure_status
from vna.security.audit import QUERY, Access, AuditTrail, query_text
from vna.security.query_scope import query_patient_scope

if TYPE_CHECKING:
    from vna.archive import Archive

log = logging.getLogger(__name__)

_PATIENT_ID = "00100020"
_ISSUER = "00100021"


def handle_find(event: Any, gateway: Gateway) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """``evt.EVT_C_FIND``: pending responses, one per match, then pynetdicom's final Success."""
    archive = gateway.archive
    calling_ae = event.assoc.requestor.ae_title.strip()
    try:
        try:
            request = event.identifier
        except Exception as exc:  # pydicom raises many types on a malformed identifier
            raise InvalidRequest(f"cannot decode the identifier: {exc}") from exc
        model = str(event.request.AffectedSOPClassUID)
        level = query_level(model, request)
        asker = Access(
            actor=calling_ae,
            origin=event.assoc.requestor.address,
            action=QUERY,
            detail={
                "protocol": "dimse",
                "operation": "C-FIND",
                "level": level,
                "model": model,
                "query": query_text(_identifier_text(request)),
            },
        )
        caller = archive.settings.source_for_ae(calling_ae)
        matches = gateway.run(_audited_matches(archive, level, request, asker, caller))
    except VnaError as exc:
        status = find_failure_status(exc)
        log.warning("C-FIND from %s refused with 0x%04X: %s", calling_ae, status, exc)
        yield _failure(status, exc), None
        return

    ae_title = archive.settings.dimse.ae_title
    for match in matches:
        # PS3.4 C.4.1.2.1: a C-CANCEL ends the matching with status Cancel.
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, find_response(request, match, level, ae_title)


async def _audited_matches(
    archive: Archive,
    level: str,
    request: Dataset,
    asker: Access,
    caller: SourceSettings | None = None,
) -> list[dict[str, Any]]:
    """The matches, audited before any is sent (PS3.15 A.5.3.10 Query): no audit row, no
    answer (the failure is A700, Out of resources)."""
    matches = await _matches(archive, level, request, caller)
    if level == "PATIENT":
        disclosed = dataclasses.replace(
            asker, patients=[(_first(m, _PATIENT_ID), _first(m, _ISSUER)) for m in matches]
        )
    else:
        disclosed = dataclasses.replace(asker, study_uids=[_first(m, "0020000D") for m in matches])
    await AuditTrail(archive.db, archive.metrics).record(
        dataclasses.replace(disclosed, detail={**asker.detail, "matches": len(matches)})
    )
    return matches


def _identifier_text(identifier: Dataset) -> str:
    try:
        return identifier.to_json()
    except Exception:  # a value pydicom cannot put in JSON: the keys at least
        return ", ".join(elem.keyword or str(elem.tag) for elem in identifier)


async def _matches(
    archive: Archive, level: str, request: Dataset, caller: SourceSettings | None
) -> list[dict[str, Any]]:
    if level == "PATIENT":
        return await _patients(archive, request, caller)
    return await _search(archive, query_from_identifier(level, request), caller)


async def _search(
    archive: Archive, query: Query, caller: SourceSettings | None
) -> list[dict[str, Any]]:
    # C-FIND has no paging (PS3.4 C.4.1): every match up to the configured bound.
    limit = archive.settings.query.max_results
    async with archive.db.acquire() as conn:
        page = await search_page(
            conn,
            dataclasses.replace(query, limit=limit, offset=0),
            max_results=limit,
            default_limit=limit,
            offline_tiers=archive.store.offline_tiers,
            # A source's calling AE title is answered within its patients ([[sources]]
            # query_scope): a PACS rarely sends IssuerOfPatientID (an optional key, PS3.4
            # C.6.1.1.2), and another hospital's patient may carry the PatientID it asks for.
            scope=query_patient_scope(caller, query),
        )
    if page.more:
        log.warning(
            "C-FIND at %s level matched more than %d entries (query.max_results);"
            " the first %d were returned",
            query.level,
            limit,
            limit,
        )
    return page.results


async def _patients(
    archive: Archive, request: Dataset, caller: SourceSettings | None
) -> list[dict[str, Any]]:
    """One match per patient identity among the matching studies, with the patient counts of
    PS3.4 Table C.6-1 when they are asked for."""
    studies = await _search(
        archive, query_from_identifier("study", patient_search_identifier(request)), caller
    )
    patients: dict[tuple[str, str], dict[str, Any]] = {}
    for study in studies:
        identity = (_first(study, _PATIENT_ID), _first(study, _ISSUER))
        if identity not in patients:
            patients[identity] = {k: v for k, v in study.items() if k.startswith("0010")}
    wanted = {f"{int(elem.tag):08X}" for elem in request} & PATIENT_COUNT_TAGS
    if wanted and patients:
        async with archive.db.acquire() as conn:
            counts = await patient_counts(conn, list(patients))
        for identity, count in counts.items():
            match = patients[identity]
            match["00201200"] = {"vr": "IS", "Value": [count.studies]}
            match["00201202"] = {"vr": "IS", "Value": [count.series]}
            match["00201204"] = {"vr": "IS", "Value": [count.instances]}
    return list(patients.values())


def _first(match: dict[str, Any], tag: str) -> str:
    values = match.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _failure(status: int, exc: VnaError) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = error_comment(str(exc))
    return ds
