"""The report on a new association (PS3.4 J.3.3): the archive, still the Storage Commitment
SCP, opens an association to the requester and sends N-EVENT-REPORT.

Being the association requester but not the SOP class's SCU, the archive proposes the Push
Model context with SCP/SCU Role Selection (PS3.7 D.3.3.4): SCP role yes, SCU role no, so
that the requester (now the acceptor) knows the archive keeps the SCP role of PS3.4 Annex J
on this association (Orthanc and dcm4chee propose the same when they report).  Blocking
pynetdicom calls: run it in a thread.
"""

from __future__ import annotations

import logging

from pynetdicom import AE, build_role

from vna.commitment.model import PUSH_MODEL, WELL_KNOWN_INSTANCE, Outcome, event_information
from vna.errors import UnavailableError

log = logging.getLogger(__name__)
#: Explicit then implicit VR little endian: every Storage Commitment SCU takes one
#: (PS3.5 10.1).
_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
#: Success statuses of N-EVENT-REPORT (PS3.7 10.1.1.1.8): 0x0000 only.
_SUCCESS = 0x0000


class ReportNotDelivered(UnavailableError):
    """The requester could not be reached, refused the association or the report; retried
    by the ``commitment-report`` job with back-off."""


def send_report(
    *,
    ae_title: str,
    called_ae: str,
    host: str,
    port: int,
    transaction_uid: str,
    outcome: Outcome,
    timeout: float,
) -> None:
    """Send the report; ReportNotDelivered when the requester did not accept it."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.add_requested_context(PUSH_MODEL, list(_SYNTAXES))
    role = build_role(PUSH_MODEL, scu_role=False, scp_role=True)
    assoc = ae.associate(host, port, ae_title=called_ae, ext_neg=[role])
    if not assoc.is_established:
        raise ReportNotDelivered(
            f"association to {called_ae} at {host}:{port} for the storage commitment report"
            " was not established (rejected, aborted or unreachable)"
        )
    try:
        accepted = [cx for cx in assoc.accepted_contexts if str(cx.abstract_syntax) == PUSH_MODEL]
        if not accepted:
            raise ReportNotDelivered(f"{called_ae} did not accept the Storage Commitment context")
        status, _reply = assoc.send_n_event_report(
            event_information(transaction_uid, outcome),
            outcome.event_type,
            PUSH_MODEL,
            WELL_KNOWN_INSTANCE,
        )
        code = int(getattr(status, "Status", -1)) if status is not None else -1
        if code != _SUCCESS:
            raise ReportNotDelivered(
                f"{called_ae} answered the storage commitment report with"
                f" {'no response' if code < 0 else f'0x{code:04X}'}"
            )
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    log.info(
        "storage commitment %s reported to %s at %s:%d (%d committed, %d failed)",
        transaction_uid,
        called_ae,
        host,
        port,
        len(outcome.committed),
        len(outcome.failed),
    )
