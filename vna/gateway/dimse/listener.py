"""The archive's DIMSE Application Entity (PS3.7, PS3.8): the listener ``vna serve`` starts.

One pynetdicom AE accepts Verification, the storage SOP classes pynetdicom knows (with the
transfer syntaxes modalities and PACS send) and Patient Root and Study Root Query/Retrieve
(FIND, MOVE, GET).  Each association runs in its own pynetdicom thread, so a slow sender holds
only its own association; the handlers reach the archive on its asyncio loop through
:class:`~vna.gateway.dimse.bridge.Gateway`.

Calling AE titles: with no sources declared any calling AE is accepted as the default source,
and the listener then binds to loopback only unless told otherwise (closed by default,
vna.security.authn.check_dimse_exposure); once sources are declared, an association from an AE
title that neither a source nor a C-MOVE destination declares is rejected with the standard
reason "calling AE title not recognized" (PS3.8 9.3.4, A-ASSOCIATE-RJ result 1, source 1,
reason 3).  Only sources may store.  The called AE title must be the archive's own
(``dimse.ae_title``; reason 7, "called AE title not recognized") unless
``dimse.accept_any_called_ae`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from vna.errors import ConfigError
from vna.gateway.dimse.bridge import Gateway
from vna.gateway.dimse.find import handle_find
from vna.gateway.dimse.handoff_server import closed_handler, handoff_server_class
from vna.gateway.dimse.identifier import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from vna.gateway.dimse.move_get import handle_get, handle_move
from vna.gateway.dimse.store import handle_store
from vna.gateway.dimse.tcp import transport_handlers
from vna.security.audit import ASSOCIATION_REJECTED, AuditTrail
from vna.security.authn import check_dimse_exposure
from vna.security.tls import dimse_context

if TYPE_CHECKING:
    from vna.archive import Archive
    from vna.config import Settings
    from vna.metrics import Metrics

log = logging.getLogger(__name__)

#: Transfer syntaxes accepted for storage (PS3.5 Annex A), in order of preference.  The archive
#: never decodes pixel data, so it stores whatever is sent in any of these.  Senders usually
#: propose one presentation context per syntax and use the one matching each image; when one
#: context offers several, the acceptor chooses (PS3.8 9.3.3.2; pynetdicom takes the first of
#: this list that the sender offers).  Lossless compression first (values unchanged, less to
#: store; natively compressed images stay as they are), then uncompressed, and lossy syntaxes
#: last so that an image is never degraded when the sender could send it losslessly.
STORAGE_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 with RPCL Options Lossless Only
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component Lossless Only
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1 (Process 14, Selection Value 1)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian (the default, PS3.5 10.1)
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired; old modalities still send it)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.203",  # High-Throughput JPEG 2000
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level (video: endoscopy, US)
    "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
)

#: Query/Retrieve requests and their identifiers come in any of the uncompressed syntaxes.
QUERY_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
)
QUERY_RETRIEVE_MODELS = (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
)
#: Largest PDU the archive receives (PS3.8 D.1: Maximum Length).  pynetdicom's default of
#: 16 KiB makes a 500 MB study cost 30,000 PDUs; 1 MiB keeps per-PDU overhead negligible.
MAX_PDU_SIZE = 1 << 20

# A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-permanent, by the service user, because the
# calling (or the called) AE title is not recognized.
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_CALLING_AE_NOT_RECOGNIZED = 0x03
_CALLED_AE_NOT_RECOGNIZED = 0x07


def configure_pynetdicom(settings: Settings) -> None:
    """pynetdicom's process-wide options this archive depends on."""
    # Receive each C-STORE data set straight into a Part 10 file, never whole into memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    # Identifiers name patients: keep them out of the log.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    debug = settings.log_level.upper() == "DEBUG"
    if not debug:
        # pynetdicom narrates every association and message at INFO.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # Its narrating handlers run for every message and PDU whatever the log level (formatting
    # the text, copying each C-STORE data set to see whether there is one); "none" leaves
    # its warnings and errors.
    _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"


def build_ae(settings: Settings) -> AE:
    dimse = settings.dimse
    ae = AE(ae_title=dimse.ae_title)
    ae.maximum_associations = dimse.max_associations
    ae.network_timeout = dimse.network_timeout
    ae.acse_timeout = dimse.network_timeout
    ae.dimse_timeout = dimse.network_timeout
    ae.maximum_pdu_size = MAX_PDU_SIZE
    ae.add_supported_context(Verification, list(QUERY_TRANSFER_SYNTAXES))
    for cx in AllStoragePresentationContexts:
        # Both roles may be negotiated (PS3.7 D.3.3.4): a C-GET requester takes the SCP role
        # for the storage SOP classes so that the sub-operations come back to it
        # (PS3.4 C.4.3.3); a sender keeps the default SCU role.
        ae.add_supported_context(
            str(cx.abstract_syntax), list(STORAGE_TRANSFER_SYNTAXES), scu_role=True, scp_role=True
        )
    for model in QUERY_RETRIEVE_MODELS:
        ae.add_supported_context(model, list(QUERY_TRANSFER_SYNTAXES))
    return ae


class DimseListener:
    """The DIMSE gateway of one archive: start it on the archive's loop, stop it before the
    archive closes."""

    def __init__(self, archive: Archive, *, handoff_fd: int | None = None) -> None:
        self.archive = archive
        #: Under the supervisor: the Unix socket it passes accepted associations on
        #: (vna.handoff); this process then listens on no port itself.
        self.handoff_fd = handoff_fd
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._previous_tempdir: str | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one bound, when the configuration asked for port 0)."""
        assert self._server is not None, "the listener is not started"
        return int(self._server.server_address[1])

    async def start(self) -> None:
        settings = self.archive.settings
        gateway = Gateway.on_running_loop(self.archive)
        configure_pynetdicom(settings)
        ae = build_ae(settings)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, _check_ae_titles, [settings, gateway]),
            (evt.EVT_ACCEPTED, _count_association, [self.archive.metrics, "accepted"]),
            # pynetdicom's own refusals (too many associations, bad user identity); ours are
            # counted where they are made (_reject).
            (evt.EVT_REJECTED, _count_association, [self.archive.metrics, "rejected-other"]),
            (evt.EVT_DIMSE_SENT, _count_operation, [self.archive.metrics]),
            (evt.EVT_C_STORE, handle_store, [gateway]),
            (evt.EVT_C_FIND, handle_find, [gateway]),
            (evt.EVT_C_MOVE, handle_move, [gateway]),
            (evt.EVT_C_GET, handle_get, [gateway]),
            # Without Nagle and with prompt ACKs, as for C-MOVE (vna.gateway.dimse.tcp): C-GET
            # sub-operations go back over these associations.
            *transport_handlers(),
        ]
        if self.handoff_fd is not None:
            handlers.append(closed_handler(self.handoff_fd))
        address = (check_dimse_exposure(settings), settings.dimse.port)
        # DICOM TLS when configured (PS3.15 B.12): the port then speaks TLS only.
        ssl_context = dimse_context(settings)
        try:
            self._server = await asyncio.to_thread(
                _start_server, ae, address, handlers, ssl_context, self._server_class(address)
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {address[0]}:{settings.dimse.port} (dimse.port): {exc.strerror}"
            ) from exc
        self._ae = ae
        log.info(
            "DIMSE listening as AE %s on %s:%d%s",
            settings.dimse.ae_title,
            address[0],
            self.port,
            " (DICOM TLS)" if ssl_context is not None else "",
        )
        self._previous_tempdir = tempfile.tempdir
        _check_temporary_directory(self.archive.incoming)

    def _server_class(self, address: tuple[str, int]) -> type[Any] | None:
        if self.handoff_fd is not None:
            return handoff_server_class(self.handoff_fd, address)
        return None

    async def stop(self, grace_seconds: float = 15.0) -> None:
        """Refuse new associations, let those in progress finish for up to ``grace_seconds``,
        then abort the rest.  Runs in a worker thread: the associations still need the loop."""
        if self._server is None:
            return
        server, ae = self._server, self._ae
        self._server = self._ae = None
        await asyncio.to_thread(_stop, server, ae, grace_seconds)
        tempfile.tempdir = self._previous_tempdir


def _start_server(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    ssl_context: Any,
    server_class: type[Any] | None,
) -> ThreadedAssociationServer:
    """``AE.start_server(block=False)``, with another server class when given."""
    if server_class is None:
        started = ae.start_server(
            address, block=False, evt_handlers=handlers, ssl_context=ssl_context
        )
        assert started is not None  # non-blocking: the server is returned
        return started
    server = ae.make_server(
        address, evt_handlers=handlers, ssl_context=ssl_context, server_class=server_class
    )
    ae._servers.append(server)  # so that AE.shutdown() stops it, as start_server would
    threading.Thread(target=server.serve_forever, name="DimseAcceptor", daemon=True).start()
    return server


def _stop(server: ThreadedAssociationServer, ae: AE | None, grace_seconds: float) -> None:
    server.shutdown()
    deadline = time.monotonic() + grace_seconds
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    remaining = server.active_associations
    if remaining:
        log.warning("aborting %d DIMSE associations still open", len(remaining))
    if ae is not None:
        # Aborts what is left, including C-MOVE associations to destinations.
        ae.shutdown()


def _check_temporary_directory(incoming: Path) -> None:
    """Make pynetdicom receive C-STOREs on the data volume.

    pynetdicom writes each arriving data set to a ``NamedTemporaryFile`` in the process's
    temporary directory.  On the data volume, handing the file to the archive is a rename;
    elsewhere it is a copy, and on a tmpfs ``/tmp`` the instance would sit in memory while it
    arrives.  Unless ``TMPDIR`` already points at the data volume, the server process (which
    owns its temporary directory) uses its incoming directory.
    """
    temporary = Path(tempfile.gettempdir())
    try:
        same_volume = temporary.stat().st_dev == incoming.stat().st_dev
    except OSError:
        same_volume = False
    if not same_volume:
        tempfile.tempdir = str(incoming)
        log.info("DIMSE receives into %s (on the data volume)", incoming)


def _check_ae_titles(event: Any, settings: Settings, gateway: Gateway) -> None:
    """``evt.EVT_REQUESTED``: reject an association addressed to another AE title, or from an
    AE title the configuration does not know.  Sources may store, query and retrieve; C-MOVE
    destinations (a viewing station pulling studies to itself) may query and retrieve, and
    their C-STOREs are refused."""
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling_ae = str(primitive.calling_ae_title).strip()
    called_ae = str(primitive.called_ae_title).strip()
    if not settings.dimse.accept_any_called_ae and called_ae != settings.dimse.ae_title.strip():
        # A sender configured for another archive (or a port scan) must not store here by
        # mistake: the called AE title says whom the association is for (PS3.8 7.1.1.4).
        _reject(
            assoc,
            gateway,
            calling_ae,
            "rejected-called-ae",
            _CALLED_AE_NOT_RECOGNIZED,
            f"called AE title not recognised ({called_ae!r}; this archive is"
            f" {settings.dimse.ae_title!r})",
        )
        return
    if settings.source_for_ae(calling_ae) is not None:
        return
    if settings.move_destination(calling_ae) is not None:
        return
    _reject(
        assoc,
        gateway,
        calling_ae,
        "rejected-calling-ae",
        _CALLING_AE_NOT_RECOGNIZED,
        "calling AE title not recognized (neither a source nor a destination declares it)",
    )


def _reject(
    assoc: Any, gateway: Gateway, calling_ae: str, result: str, diagnostic: int, reason: str
) -> None:
    gateway.archive.metrics.dimse_associations.labels(result).inc()
    log.warning(
        "association from %s (%s) rejected: %s", calling_ae, assoc.requestor.address, reason
    )
    assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, diagnostic)
    assoc.kill()
    # A security alert (PS3.15 A.5.3.11, node authentication); a failure to record it is
    # counted and logged by the trail, and the association is rejected regardless.
    trail = AuditTrail(gateway.archive.db, gateway.archive.metrics)
    try:
        gateway.run(
            trail.security_event(
                calling_ae,
                str(assoc.requestor.address),
                ASSOCIATION_REJECTED,
                {"reason": reason.split(" (")[0], "protocol": "dimse"},
            )
        )
    except Exception as exc:  # the archive is stopping
        log.warning("could not audit the rejected association: %s", exc)


def _count_association(event: Any, metrics: Metrics, result: str) -> None:
    """``evt.EVT_ACCEPTED`` / ``evt.EVT_REJECTED``: associations by result, for /metrics."""
    metrics.dimse_associations.labels(result).inc()


#: Statuses that announce more responses to the same request (PS3.7 C.4.1: Pending).
_PENDING = (0xFF00, 0xFF01)


def _count_operation(event: Any, metrics: Metrics) -> None:
    """``evt.EVT_DIMSE_SENT``: every final response the archive sends (``C_STORE_RSP``...)
    counts one operation of its type with its status; pending C-FIND, C-MOVE and C-GET
    responses and the archive's own requests (C-GET sub-operations) do not."""
    kind = type(event.message).__name__
    if not kind.endswith("_RSP"):
        return
    status = getattr(event.message.command_set, "Status", None)
    if status is None or int(status) in _PENDING:
        return
    operation = kind.removesuffix("_RSP").replace("_", "-")
    metrics.dimse_operations.labels(operation, f"{int(status):04X}").inc()
