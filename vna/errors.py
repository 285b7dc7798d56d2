"""The one root error type and its family.

Adapters (storage back ends, the catalogue, protocol layers) translate driver errors into these
with ``raise ... from exc`` so that the protocol layers can map them to an HTTP or DIMSE status
through one table each (``vna/gateway/status.py``).  A dedup hit is not an error: it is a
return value of the ingest pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceRef:
    """Which instance an error is about, when the header was readable (for per-instance
    failure reports: STOW-RS FailedSOPSequence, C-STORE responses)."""

    sop_class_uid: str
    sop_instance_uid: str


class VnaError(Exception):
    """Root of every error the archive raises on purpose."""

    #: Whether the same request may succeed later (storage or database briefly unavailable).
    retriable: bool = False
    #: Set by the ingest pipeline once the instance's identity is known.
    instance: InstanceRef | None = None


class ConfigError(VnaError):
    """The configuration is invalid; the message names the key."""


class InvalidRequest(VnaError):
    """A request parameter is malformed; the message names the parameter."""


class MissingAttribute(InvalidRequest):
    """A request lacks an attribute the service requires (N-ACTION: 0x0115)."""


class UnsupportedAction(InvalidRequest):
    """An N-ACTION with an Action Type ID the SOP class does not define (0x0123)."""


class RequestTooLarge(InvalidRequest):
    """A request names more items than the archive handles in one (DIMSE 0x0213, resource
    limitation); the message says the limit."""


class NotFound(VnaError):
    """The requested study, series, instance or object does not exist."""


class InvalidInstance(VnaError):
    """The DICOM data cannot be understood (truncated, bad VR, missing required attributes)."""


class SopClassMismatch(InvalidInstance):
    """The data set does not match the SOP class it claims or was negotiated for."""


class StudyMismatch(VnaError):
    """The instance belongs to another study than the one the request names (STOW-RS path)."""


class InstanceConflict(VnaError):
    """Same SOP Instance UID as a stored instance, but different content."""


class PatientMismatch(VnaError):
    """The instance names a study that the catalogue holds under another patient."""


class InstanceTooLarge(VnaError):
    """The instance exceeds the configured size limit."""


class CannotRender(VnaError):
    """The instance cannot be rendered as asked (PS3.18 8.3.5): its pixel data cannot be
    decoded here, or it holds nothing to render as that media type; the message says why."""


class CannotTranscode(VnaError):
    """The archive cannot produce the transfer syntax asked for from this instance (no
    encoder, lossy output not allowed, pixel data an encoder does not take); the message
    names the syntax and the reason (WADO-RS: 406)."""


class TranscodeFailed(VnaError):
    """The stored pixel data could not be decoded (a corrupt frame): nothing is sent in its
    place; the message names the reason (WADO-RS: 500, DIMSE: a failed sub-operation)."""


class Unauthorized(VnaError):
    """No valid credential was presented."""


class SignInRefused(Unauthorized):
    """An OpenID Connect sign-in did not prove who the user is (bad or expired ID token,
    unknown state, provider error); the message says why, for the page and the audit row."""


class Forbidden(VnaError):
    """The credential is valid but does not allow this action."""


class UnavailableError(VnaError):
    """A backing service (object store, database) failed; the request may be retried."""

    retriable = True


class StorageError(UnavailableError):
    """The object store failed to read or write."""


class DamagedObject(StorageError):
    """A stored copy is not the catalogued content (other SHA-256 or size, or a compressed
    form that does not decompress).  Not retriable on the same store: the same bytes fail the
    same way; a verified replica may serve the instance (vna.retrieve).  ``outcome`` is
    ``corrupt`` or ``missing`` (vna.recovery.policy.Outcome)."""

    retriable = False

    def __init__(self, message: str, outcome: str = "corrupt") -> None:
        super().__init__(message)
        self.outcome = outcome


class IdentityProviderUnavailable(UnavailableError):
    """The OpenID Connect provider could not be reached or answered nonsense (discovery, keys,
    token endpoint)."""


class CatalogError(UnavailableError):
    """The catalogue database failed."""


class AuditUnavailable(UnavailableError):
    """The audit trail could not be written: the access it would record is refused (503,
    A700), since an unaudited read of patient data must not happen."""


class OfflineError(VnaError):
    """The object is in an offline tier; a restore has been requested."""

    retriable = True

    def __init__(self, message: str, retry_after_seconds: int = 3600) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
