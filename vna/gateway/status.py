"""The two tables that turn archive errors into protocol statuses (HTTP and DICOM).

DICOM status codes: PS3.4 Annex B.2.3 (Storage Service Class statuses), PS3.7 Annex C
(general statuses).  STOW-RS reuses them as FailureReason (PS3.18 10.5.3).
"""

from __future__ import annotations

from vna.errors import (
    ConfigError,
    Forbidden,
    InstanceConflict,
    InstanceTooLarge,
    InvalidInstance,
    InvalidRequest,
    NotFound,
    OfflineError,
    PatientMismatch,
    SopClassMismatch,
    StudyMismatch,
    Unauthorized,
    UnavailableError,
    VnaError,
)

# Most specific first: lookups walk the error's MRO.
_HTTP: dict[type[VnaError], int] = {
    InvalidRequest: 400,
    InvalidInstance: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    InstanceConflict: 409,
    StudyMismatch: 409,
    PatientMismatch: 409,
    InstanceTooLarge: 413,
    OfflineError: 503,
    UnavailableError: 503,
    ConfigError: 500,
}

#: C-STORE status / STOW-RS FailureReason per refused instance.
_STORE: dict[type[VnaError], int] = {
    SopClassMismatch: 0xA900,  # Error: Data Set does not match SOP Class (PS3.4 B.2.3)
    InvalidInstance: 0xC000,  # Error: Cannot understand
    # Not the study the request path names: the data set does not match the request.
    StudyMismatch: 0xA900,
    InstanceTooLarge: 0xA700,  # Refused: Out of resources
    UnavailableError: 0xA700,  # Refused: Out of resources (a PACS retries these later)
    InstanceConflict: 0x0111,  # Failure: Duplicate SOP Instance (PS3.7 C.4), other content
    PatientMismatch: 0x0110,  # Failure: Processing failure; the reason text says which study
    Unauthorized: 0x0124,  # Failure: Not authorized
    Forbidden: 0x0124,
}

PROCESSING_FAILURE = 0x0110


def _lookup(table: dict[type[VnaError], int], exc: BaseException, default: int) -> int:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default


def http_status(exc: BaseException) -> int:
    return _lookup(_HTTP, exc, 500)


def store_failure_status(exc: BaseException) -> int:
    return _lookup(_STORE, exc, PROCESSING_FAILURE)
