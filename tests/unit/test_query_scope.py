"""The one rule deciding which patients a caller's query or retrieve reaches
(vna.security.query_scope), as a table."""

from __future__ import annotations

import pytest

from vna.config import DEFAULT_SOURCE, SourceSettings
from vna.dicom.qido_params import parse_qido
from vna.security.query_scope import PatientScope, patient_scope, query_patient_scope


def source(scope: str, issuer: str = "HOSP2") -> SourceSettings:
    return SourceSettings(name="HOSP2", issuer_of_patient_id=issuer, query_scope=scope)


@pytest.mark.parametrize(
    ("caller", "patient_id", "issuer", "expected"),
    [
        # Not a source: a reader, an admin, a C-MOVE destination, an archive without sources.
        (None, "P1", None, None),
        (DEFAULT_SOURCE, "P1", None, None),
        # A source without an issuer has no identities of its own to be scoped to.
        (source("own", issuer=""), "P1", None, None),
        (source("all"), "P1", None, None),
        # own: its issuer, whatever the query names (an issuer narrows, never widens).
        (source("own"), "P1", None, PatientScope("HOSP2")),
        (source("own"), None, None, PatientScope("HOSP2")),
        (source("own"), "P1", "HOSP1", PatientScope("HOSP2")),
        # linked, one PatientID of its own: that patient and the identities linked to it.
        (source("linked"), "P1", None, PatientScope("HOSP2", True, "P1")),
        (source("linked"), "P1", "HOSP2", PatientScope("HOSP2", True, "P1")),
        # linked, no single PatientID of its own: its issuer and what is linked to it.
        (source("linked"), None, None, PatientScope("HOSP2", True)),
        (source("linked"), "P1", "HOSP1", PatientScope("HOSP2", True)),
    ],
)
def test_patient_scope(
    caller: SourceSettings | None,
    patient_id: str | None,
    issuer: str | None,
    expected: PatientScope | None,
) -> None:
    assert patient_scope(caller, patient_id=patient_id, issuer=issuer) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("PatientID", "P1")], PatientScope("HOSP2", True, "P1")),
        # A wildcard or an empty issuer is not one value.
        ([("PatientID", "P*")], PatientScope("HOSP2", True)),
        ([("PatientID", "P1"), ("IssuerOfPatientID", "")], PatientScope("HOSP2", True, "P1")),
        ([("PatientID", "P1"), ("IssuerOfPatientID", "HOSP1")], PatientScope("HOSP2", True)),
        ([("StudyDate", "20240101-")], PatientScope("HOSP2", True)),
    ],
)
def test_query_patient_scope_reads_the_patient_keys(
    params: list[tuple[str, str]], expected: PatientScope
) -> None:
    assert query_patient_scope(source("linked"), parse_qido("study", params)) == expected
