"""``vna serve``: the archive with its DICOMweb (and DIMSE) gateways until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from vna.archive import Archive
from vna.config import Settings
from vna.errors import ConfigError
from vna.gateway.dimse import DimseListener
from vna.gateway.handoff_site import HandoffSite
from vna.gateway.hl7 import Hl7Listener
from vna.gateway.web import PREFIX, create_app
from vna.security.authn import (
    Authenticator,
    check_dimse_exposure,
    check_http_exposure,
    is_loopback_host,
)
from vna.security.tls import http_context
from vna.server_lock import ServerLock
from vna.ui import app as console

log = logging.getLogger(__name__)


def use_io_threads(settings: Settings) -> None:
    """Size the default thread pool for blocking I/O (fsync, renames, object reads); ingest
    parses and hashes in a thread of its own (vna.ingest.pipeline).

    asyncio's default is cores + 4 threads; with 2 cores that is 6, and fsync-bound ingest
    then queues behind a handful of threads while the disk could take more writes at once.
    """
    loop = asyncio.get_running_loop()
    workers = settings.ingest.concurrency + settings.dimse.max_associations + 4
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vna-io"))


#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> None:
    """Keep ingest's half-megabyte buffers (a CT slice read for examining, multipart chunks)
    in the allocator instead of handing them back to the kernel after each instance.

    By default glibc serves allocations of that size with fresh mappings, or trims them from
    the top of a thread's heap once freed, so every instance page-faulted its buffers in
    again (about 3 % of a worker's CPU, kernel page clearing).  Buffers under 4 MiB now come
    from the heap and up to 32 MiB of free heap stays mapped per arena; larger buffers (an
    examined multi-frame instance) are still mapped and returned.  Measured: about 0.5 ms
    less server CPU per CT slice in the 4-client STOW-RS benchmark, peak memory within its
    target.  Nothing happens off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 32 << 20)


def freeze_startup_objects() -> None:
    """Take what start-up built (modules, pydicom's data dictionary, the application) out of
    the cyclic garbage collector's view.

    Those objects live as long as the process, yet every full collection walked all of them
    again, and ingest allocates enough (a parsed header is thousands of objects) to run one
    every few dozen instances.  Freezing them is what ``gc.freeze`` is for; collection of
    everything created afterwards is unchanged."""
    gc.collect()
    gc.freeze()


async def serve(
    settings: Settings,
    worker: int | None = None,
    http_fd: int | None = None,
    dimse_fd: int | None = None,
) -> None:
    """Run until SIGTERM.  ``worker`` is this process's index under the supervisor
    (vna/supervisor.py): migrations are then already applied, and only worker 0 runs the
    lifecycle engine.  ``http_fd`` and ``dimse_fd`` are the Unix sockets the supervisor passes
    this worker its HTTP connections and DIMSE associations on (vna.handoff)."""
    if settings.dimse.enabled:
        # Before the catalogue starts: refusing is quick and leaves nothing running.
        check_dimse_exposure(settings)
    if worker is not None:
        # The supervisor holds the data directory's lock for its workers.
        await _serve(settings, worker, http_fd, dimse_fd)
        return
    with ServerLock(settings):
        await _serve(settings, worker, http_fd, dimse_fd)


async def _serve(
    settings: Settings, worker: int | None, http_fd: int | None, dimse_fd: int | None
) -> None:
    use_io_threads(settings)
    tune_allocator()
    archive = await Archive.open(settings, apply_migrations=worker is None)
    runner: web.AppRunner | None = None
    dimse: DimseListener | None = None
    hl7: Hl7Listener | None = None
    try:
        # Configuration errors first, before anything listens.
        ssl_context = http_context(settings)
        open_archive = await check_http_exposure(Authenticator(archive.db, settings))
        if settings.dimse.enabled:
            # Before HTTP, so that a healthy /healthz means both gateways are listening.
            dimse = DimseListener(archive, handoff_fd=dimse_fd)
            await dimse.start()
        if settings.hl7.enabled and not worker:
            # One listener per server (the first worker): MLLP connections are few and
            # long-lived, and a message's duplicate check is in the catalogue anyway.
            hl7 = Hl7Listener(archive)
            await hl7.start()
        app = create_app(archive)
        console.register(app, archive)  # the operator web console at /ui/ (and / -> /ui/)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site: web.BaseSite
        if http_fd is not None:
            address = (settings.http.host, settings.http.port)
            site = HandoffSite(runner, http_fd, address, ssl_context=ssl_context)
        else:
            site = web.TCPSite(
                runner,
                settings.http.host,
                settings.http.port,
                backlog=1024,
                ssl_context=ssl_context,
            )
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.http.host}:{settings.http.port}"
                f" (http.port): {exc.strerror}"
            ) from exc
        log.info(
            "DICOMweb listening on %s://%s:%d%s",
            "https" if ssl_context is not None else "http",
            settings.http.host,
            settings.http.port,
            PREFIX,
        )
        if open_archive and not worker:
            log.warning(
                "no API tokens: %s without a token"
                " (create one: vna tokens create NAME --role reader|source|admin)",
                "DICOMweb serves every client (http.allow_unauthenticated), /admin loopback"
                " clients only,"
                if settings.http.allow_unauthenticated
                else "DICOMweb and /admin serve loopback clients only,",
            )
        if not settings.sources and not worker:
            # Once per server (the first worker), whatever the number of workers.
            log.warning(_no_sources_notice(settings))
        stop = _stop_event()
        freeze_startup_objects()
        lifecycle = None
        if settings.lifecycle.in_serve and not worker:
            # Only the composition roots (this module, vna/cli/) import lifecycle/; the rest
            # of vna/ never does.
            from lifecycle.worker import run_workers

            lifecycle = asyncio.create_task(run_workers(archive, stop), name="lifecycle")
        await stop.wait()
        log.info("stopping: finishing requests in flight")
        if lifecycle is not None:
            await lifecycle  # gives running jobs back to the queue
    finally:
        if hl7 is not None:
            await hl7.stop()
        if dimse is not None:
            # Associations in progress finish (or are aborted after a grace period) while the
            # archive is still open: their handlers run on this loop.
            await dimse.stop()
        if runner is not None:
            # Lets requests in flight finish (aiohttp's graceful shutdown) before the
            # catalogue closes, so nothing acknowledged is cut off.
            await runner.cleanup()
        await archive.close()
        log.info("stopped")


def _no_sources_notice(settings: Settings) -> str:
    """What an archive without sources accepts, and from where (closed by default)."""
    notice = "no sources declared: every sender is accepted and stored as source DEFAULT"
    if not settings.dimse.enabled:
        return notice
    host = settings.dimse_host
    if is_loopback_host(host):
        return f"{notice}; DIMSE listens on {host} only (declare [[sources]] to accept others)"
    return f"{notice}; DIMSE accepts any calling AE title on {host} (dimse.allow_any_caller)"


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
