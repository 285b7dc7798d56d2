"""Storage Commitment Push Model SCP (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

The handler checks the request (PS3.4 J.3.2: action 1 on the well-known instance, a
Transaction UID, at most ``MAX_REFERENCES`` references) and that the caller is a source (the
calling-AE rules of the listener: the default source when none are declared), records it with
its report job and answers the N-ACTION at once.  The report comes after the N-ACTION
response (PS3.4 J.3.3), from a thread of its own: the instances are read back and, when
``[dimse] commit_requires_replicas`` asks, replication is waited for, up to
``commit_timeout_seconds``.  If the requester still holds the association, the report goes
on it; otherwise (or if sending fails) the ``commitment-report`` job is made due and sends it
on a new association to the source's host and port.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.pdu_primitives import A_RELEASE

from vna.commitment import service
from vna.commitment.model import (
    PUSH_MODEL,
    WELL_KNOWN_INSTANCE,
    Request,
    check_addressing,
    event_information,
    parse_request,
)
from vna.errors import InvalidRequest, Unauthorized, VnaError
from vna.gateway.dimse.bridge import Gateway
from vna.gateway.status import PROCESSING_FAILURE, SUCCESS, action_failure_status
from vna.security.audit import ACCESS_DENIED, AuditTrail

log = logging.getLogger(__name__)
#: Seconds to wait for the association's reactor to pause before sending on it.
_PAUSE_SECONDS = 5.0


def handle_n_action(event: Any, gateway: Gateway) -> tuple[int, Dataset | None]:
    """``evt.EVT_N_ACTION``: the N-ACTION status (PS3.4 J.3.2.1.2; PS3.7 10.1.4.1.10)."""
    archive = gateway.archive
    calling_ae = event.assoc.requestor.ae_title.strip()
    peer = str(event.assoc.requestor.address)
    try:
        req = event.request
        check_addressing(
            int(req.ActionTypeID),
            str(req.RequestedSOPClassUID),
            str(req.RequestedSOPInstanceUID),
        )
        source = archive.settings.source_for_ae(calling_ae)
        if source is None:
            # Only a source stores here, so only a source can ask what is stored (a C-MOVE
            # destination may be allowed to associate, PS3.4 J.3.2 leaves who to the SCP).
            _refused(gateway, calling_ae, peer)
            raise Unauthorized(f"calling AE title {calling_ae!r} is not a declared source")
        try:
            info = event.action_information
        except Exception as exc:  # pydicom raises many types on a malformed data set
            raise InvalidRequest(f"cannot decode the Action Information: {exc}") from exc
        request = parse_request(info)
        commitment_id = gateway.run(
            service.accept(archive, request, source=source.name, calling_ae=calling_ae, origin=peer)
        )
    except VnaError as exc:
        status = action_failure_status(exc)
        log.warning(
            "storage commitment request from %s (%s) refused with 0x%04X: %s",
            calling_ae,
            peer,
            status,
            exc,
        )
        return status, None
    except Exception:
        log.exception("storage commitment request from %s (%s) failed", calling_ae, peer)
        return PROCESSING_FAILURE, None
    log.info(
        "storage commitment %s from %s: %d instance(s)",
        request.transaction_uid,
        calling_ae,
        len(request.references),
    )
    threading.Thread(
        target=_report,
        args=(event.assoc, gateway, commitment_id, request),
        name=f"commitment-{commitment_id}",
        daemon=True,
    ).start()
    return SUCCESS, None


def _report(assoc: Any, gateway: Gateway, commitment_id: int, request: Request) -> None:
    """Check the instances and report on the requester's association if it is still open;
    otherwise hand the report to the job (new association)."""
    archive = gateway.archive
    try:
        verdict = gateway.run(
            service.evaluate(
                archive,
                request.references,
                required_replicas=archive.settings.dimse.commit_requires_replicas,
                wait_seconds=archive.settings.dimse.commit_timeout_seconds,
                give_up=lambda: not assoc.is_established,
            )
        )
        if verdict.short_of_replicas and not assoc.is_established:
            # Released while replication was awaited: the job waits out the rest of the
            # timeout and reports on a new association.
            gateway.run(service.report_now(archive, commitment_id))
            return
        if _send_on(assoc, request, verdict.outcome):
            gateway.run(
                service.record_report(
                    archive,
                    commitment_id,
                    transaction_uid=request.transaction_uid,
                    calling_ae=assoc.requestor.ae_title.strip(),
                    outcome=verdict.outcome,
                    via=service.SAME_ASSOCIATION,
                    study_uids=verdict.study_uids,
                )
            )
            return
        gateway.run(service.report_now(archive, commitment_id))
    except Exception:
        # The job (queued with the request) still reports, after its safety delay.
        log.exception("storage commitment %s: report not sent", request.transaction_uid)
        with contextlib.suppress(Exception):
            gateway.run(service.report_now(archive, commitment_id))


def _send_on(assoc: Any, request: Request, outcome: Any) -> bool:
    """Send the report on the requester's association; False when it is gone or the send
    failed.

    pynetdicom's reactor thread reads every incoming message of an acceptor's association;
    another thread sending a request must pause it first (as ``Association.send_c_echo`` and
    ``release`` do), or the reactor could take the N-EVENT-REPORT response off the queue.  The
    reactor pauses only between messages, so once paused the N-ACTION response has been sent
    and the report follows it (PS3.4 J.3.3).
    """
    if not assoc.is_established:
        return False
    assoc._reactor_checkpoint.clear()
    try:
        deadline = time.monotonic() + _PAUSE_SECONDS
        while not assoc._is_paused:
            if not assoc.is_established or time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
        if not assoc.is_established or _release_requested(assoc):
            # The requester asked to release as the N-ACTION response reached it: a report
            # now would arrive during the release and be dropped; the job sends it.
            return False
        status, _reply = assoc.send_n_event_report(
            event_information(request.transaction_uid, outcome),
            outcome.event_type,
            PUSH_MODEL,
            WELL_KNOWN_INSTANCE,
        )
    except Exception as exc:
        log.warning(
            "storage commitment %s: report on the same association failed: %s",
            request.transaction_uid,
            exc,
        )
        return False
    finally:
        assoc._reactor_checkpoint.set()
    code = getattr(status, "Status", None) if status is not None else None
    if code is None or int(code) != SUCCESS:
        log.warning(
            "storage commitment %s: the requester answered the report with %s",
            request.transaction_uid,
            "nothing" if code is None else f"0x{int(code):04X}",
        )
        return False
    log.info(
        "storage commitment %s reported on the same association (%d committed, %d failed)",
        request.transaction_uid,
        len(outcome.committed),
        len(outcome.failed),
    )
    return True


def _release_requested(assoc: Any) -> bool:
    """Whether an A-RELEASE-RQ waits in the association's queue (looked at, not taken: the
    reactor answers it once resumed)."""
    primitive = assoc.dul.peek_next_pdu()
    return isinstance(primitive, A_RELEASE) and primitive.result is None


def _refused(gateway: Gateway, calling_ae: str, peer: str) -> None:
    archive = gateway.archive
    with contextlib.suppress(VnaError):  # the trail counts and logs its own failures
        gateway.run(
            AuditTrail(archive.db, archive.metrics).security_event(
                calling_ae,
                peer,
                ACCESS_DENIED,
                {"reason": "not a declared source", "protocol": "dimse", "operation": "N-ACTION"},
            )
        )
