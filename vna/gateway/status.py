"""The tables that turn archive errors into protocol statuses (HTTP and DICOM).

DICOM status codes: PS3.4 Annex B.2.3 (Storage Service Class statuses), PS3.4 C.4.1.1.4,
C.4.2.1.5 and C.4.3.1.4 (C-FIND, C-MOVE and C-GET statuses), PS3.7 Annex C (general
statuses).  STOW-RS reuses the storage ones as FailureReason (PS3.18 10.5.3).
"""

from __future__ import annotations

from vna.errors import (
    CannotRender,
    CannotTranscode,
    ConfigError,
    DamagedObject,
    Forbidden,
    InstanceConflict,
    InstanceTooLarge,
    InvalidInstance,
    InvalidRequest,
    MissingAttribute,
    NotFound,
    OfflineError,
    PatientMismatch,
    RequestTooLarge,
    SopClassMismatch,
    StudyMismatch,
    TranscodeFailed,
    Unauthorized,
    UnavailableError,
    UnsupportedAction,
    VnaError,
)

# Most specific first: lookups walk the error's MRO.
_HTTP: dict[type[VnaError], int] = {
    InvalidRequest: 400,
    InvalidInstance: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    # Rendered media a stored instance cannot yield (PS3.18 8.3.5: Not Acceptable).
    CannotRender: 406,
    # A transfer syntax the archive cannot make from the instance (PS3.18 8.7.3.5).
    CannotTranscode: 406,
    # Stored pixel data that does not decode: the archive's fault, said, never other bytes.
    TranscodeFailed: 500,
    InstanceConflict: 409,
    StudyMismatch: 409,
    PatientMismatch: 409,
    InstanceTooLarge: 413,
    OfflineError: 503,
    # The stored copy is damaged and no replica served it: retrying will not help (the
    # message says which instance; the damage is audited and a repair queued if possible).
    DamagedObject: 500,
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

#: C-FIND failures (PS3.4 C.4.1.1.4, Table C.4-1).
_FIND: dict[type[VnaError], int] = {
    InvalidRequest: 0xA900,  # Identifier does not match SOP Class
    UnavailableError: 0xA700,  # Refused: Out of resources
}

#: C-MOVE and C-GET failures before any sub-operation (PS3.4 C.4.2.1.5, C.4.3.1.4).
_RETRIEVE: dict[type[VnaError], int] = {
    InvalidRequest: 0xA900,  # Identifier does not match SOP Class
    # Refused: Out of resources - Unable to calculate number of matches
    UnavailableError: 0xA701,
    # Refused: Out of resources - Unable to perform sub-operations (restore requested)
    OfflineError: 0xA702,
}

#: N-ACTION failures (PS3.7 10.1.4.1.10 and Annex C.5; the Storage Commitment request,
#: PS3.4 J.3.2.1.2).
_ACTION: dict[type[VnaError], int] = {
    # PS3.7 10.1.4.1.10 has no "missing attribute" for N-ACTION: a request without its
    # Transaction UID or references has an invalid argument (the Action Information).
    MissingAttribute: 0x0115,  # Failure: Invalid argument value
    UnsupportedAction: 0x0123,  # Failure: No such action
    RequestTooLarge: 0x0213,  # Failure: Resource limitation
    InvalidRequest: 0x0115,  # Failure: Invalid argument value
    NotFound: 0x0112,  # Failure: No such SOP Instance (not the well-known instance)
    Unauthorized: 0x0124,  # Failure: Refused: not authorized
    Forbidden: 0x0124,
    UnavailableError: 0x0110,  # Failure: Processing failure
}

#: Failed: Unable to process (the C000-CFFF range of C-FIND, C-MOVE and C-GET).
UNABLE_TO_PROCESS = 0xC000

# Statuses that are not failures (PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5; PS3.7 C.1.2).
SUCCESS = 0x0000
#: Warning: Coercion of Data Elements (C-STORE).
COERCED = 0xB000
PENDING = 0xFF00
CANCEL = 0xFE00
#: Refused: Move Destination unknown (C-MOVE).
MOVE_DESTINATION_UNKNOWN = 0xA801


#: ErrorComment (0000,0902) is LO: at most 64 characters (PS3.7 C.4, PS3.5 6.2).
_ERROR_COMMENT_LENGTH = 64


def error_comment(text: str) -> str:
    """``text`` fit for a DIMSE ErrorComment: ASCII (a command set has no character set), no
    backslash (the value delimiter) and at most 64 characters."""
    plain = text.encode("ascii", "replace").decode().replace("\\", "/").replace("\n", " ")
    if len(plain) <= _ERROR_COMMENT_LENGTH:
        return plain
    return plain[: _ERROR_COMMENT_LENGTH - 3] + "..."


def _lookup(table: dict[type[VnaError], int], exc: BaseException, default: int) -> int:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default


def http_status(exc: BaseException) -> int:
    return _lookup(_HTTP, exc, 500)


def store_failure_status(exc: BaseException) -> int:
    return _lookup(_STORE, exc, PROCESSING_FAILURE)


def find_failure_status(exc: BaseException) -> int:
    return _lookup(_FIND, exc, UNABLE_TO_PROCESS)


def retrieve_failure_status(exc: BaseException) -> int:
    return _lookup(_RETRIEVE, exc, UNABLE_TO_PROCESS)


def action_failure_status(exc: BaseException) -> int:
    return _lookup(_ACTION, exc, PROCESSING_FAILURE)
