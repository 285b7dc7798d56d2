"""C-STORE SCP (PS3.4 Annex B): hand each received instance to the one ingest pipeline.

pynetdicom writes the data set to a Part 10 file as it arrives (``STORE_RECV_CHUNKED_DATASET``)
with the negotiated transfer syntax in its File Meta Information, so no instance is held in
memory whatever its size.  That file is moved into the archive's incoming directory (a rename
when the temporary directory is on the data volume) and ingested with ``consume=True``; the
answer goes back only after the catalogue commit, like STOW-RS.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from vna.errors import StorageError, Unauthorized, VnaError
from vna.gateway.dimse.bridge import Gateway
from vna.gateway.status import (
    COERCED,
    PROCESSING_FAILURE,
    SUCCESS,
    error_comment,
    store_failure_status,
)
from vna.ingest.pipeline import Outcome, Sender
from vna.security.audit import ACCESS_DENIED, AuditTrail

log = logging.getLogger(__name__)


def handle_store(event: Any, gateway: Gateway) -> Dataset:
    """``evt.EVT_C_STORE``: the status of one C-STORE request (PS3.4 B.2.3)."""
    archive = gateway.archive
    calling_ae = event.assoc.requestor.ae_title.strip()
    peer = event.assoc.requestor.address
    sop_uid = str(event.request.AffectedSOPInstanceUID or "")
    source = archive.settings.source_for_ae(calling_ae)
    if source is None:
        # A C-MOVE destination may query and retrieve, but only sources store.
        log.warning("C-STORE from %s (%s) refused: not a declared source", calling_ae, peer)
        refusal = Unauthorized(f"calling AE title {calling_ae!r} is not a declared source")
        with contextlib.suppress(VnaError):  # the trail counts and logs its own failures
            gateway.run(
                AuditTrail(archive.db, archive.metrics).security_event(
                    calling_ae,
                    str(peer),
                    ACCESS_DENIED,
                    {"reason": str(refusal), "protocol": "dimse", "operation": "C-STORE"},
                )
            )
        return _status(refusal)

    target = archive.incoming / f"dimse-{uuid.uuid4().hex}.dcm"
    try:
        _take_over(Path(event.dataset_path), target)
        sender = Sender(source=source, protocol="dimse", actor=calling_ae, origin=peer)
        result = gateway.run(archive.ingester.ingest_file(target, sender, consume=True))
    except VnaError as exc:
        status = store_failure_status(exc)
        log.warning(
            "C-STORE of %s from %s (%s) refused with 0x%04X: %s",
            sop_uid,
            calling_ae,
            peer,
            status,
            exc,
        )
        return _status(exc)
    except Exception:
        log.exception("C-STORE of %s from %s (%s) failed", sop_uid, calling_ae, peer)
        return _dataset(PROCESSING_FAILURE, "internal error; see the archive's log")
    finally:
        # The pipeline consumes the file; this only matters when it never got to run.
        target.unlink(missing_ok=True)

    if result.warnings:
        return _dataset(COERCED, "; ".join(result.warnings))
    if result.outcome is Outcome.DUPLICATE:
        # PS3.4 B.2.3 has no duplicate status for an identical resend: it is a success.
        log.debug("C-STORE of %s from %s: already archived", sop_uid, calling_ae)
    return _dataset(SUCCESS)


def _take_over(received: Path, target: Path) -> None:
    """Move pynetdicom's temporary file into the incoming directory (pynetdicom tolerates its
    disappearance when it cleans up after the handler)."""
    try:
        shutil.move(received, target)
    except OSError as exc:
        # Most likely a full disk: PS3.4 B.2.3 "Refused: Out of resources", which senders retry.
        raise StorageError(f"cannot keep the received instance: {exc.strerror}") from exc


def _status(exc: VnaError) -> Dataset:
    return _dataset(store_failure_status(exc), str(exc))


def _dataset(status: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds
