"""``vna serve`` with several worker processes.

Parsing DICOM headers and talking to PostgreSQL are Python work bound to one core by the GIL;
the archive uses every core by running one server process per core.  The supervisor owns what
must exist once: the embedded PostgreSQL, the schema migrations, the metrics directory and the
listening ports.  It accepts each HTTP connection and DIMSE association itself and deals it to
the worker with the fewest open (vna.handoff): clients hold a handful of long connections,
and the kernel's hashing (SO_REUSEPORT) would often put most of them on one worker.  Worker 0
runs the lifecycle engine.

A worker that dies is a failure of the whole server (a service manager restarts it); workers
die with the supervisor, even when it is killed with SIGKILL (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

from vna.catalog.database import Database, EmbeddedPostgres
from vna.catalog.migrate import migrate
from vna.config import Settings
from vna.errors import ConfigError, VnaError
from vna.handoff import Dispatcher
from vna.security.authn import check_dimse_exposure
from vna.server_lock import ServerLock

log = logging.getLogger(__name__)

#: prometheus_client's multiprocess mode: every worker writes its metrics to files here and
#: /metrics (on any worker) sums them.  Read by prometheus_client at import.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the name is prometheus_client's
_PR_SET_PDEATHSIG = 1
#: A worker's start-up: opening the catalogue and the store, and the DIMSE server.
_START_SECONDS = 300


def worker_count(settings: Settings) -> int:
    if settings.http.port == 0:
        return 1  # each process would get its own random port
    return settings.http.workers or min(os.cpu_count() or 1, 8)


def supervise(settings: Settings, config_path: str | None, workers: int) -> int:
    # Before anything starts: closed by default, loopback only while no sources are declared.
    dimse_host = check_dimse_exposure(settings) if settings.dimse.enabled else ""
    # One server per data directory (and node): held until this process exits, released by
    # the kernel however it exits.
    with ServerLock(settings):
        return _supervise(settings, config_path, workers, dimse_host)


def _supervise(settings: Settings, config_path: str | None, workers: int, dimse_host: str) -> int:
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if settings.embedded_database:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        url = embedded.start()
    children: list[subprocess.Popen[bytes]] = []
    dispatchers: list[Dispatcher] = []
    try:
        asyncio.run(_migrate(url, settings.database_statement_cache_size))
        # Per node: nodes sharing a data directory must not clear each other's.
        metrics_dir = settings.data_dir / (
            f"metrics-{settings.node_name}" if settings.node_name else "metrics"
        )
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = dict(os.environ)
        env["VNA_DATABASE_URL"] = url
        env[METRICS_DIR_ENV] = str(metrics_dir.resolve())

        stop = _stop_on_signals()
        http = _listen("HTTP", settings.http.host, settings.http.port, workers, "http.port")
        dispatchers.append(http)
        if settings.dimse.enabled:
            dimse = _listen("DIMSE", dimse_host, settings.dimse.port, workers, "dimse.port")
            dispatchers.append(dimse)
            # The port bound (dimse.port may be 0), for what the workers report.
            env["VNA_DIMSE_PORT"] = str(dimse.port)
        for index in range(workers):
            fds = [d.worker_fds[index] for d in dispatchers]
            children.append(_spawn(index, config_path, env, fds))
        for dispatcher in dispatchers:
            dispatcher.workers_started()
        _wait_ready(dispatchers, children, stop)
        log.info("%d workers serving", workers)
        while not stop.wait_for(0.5):
            for child in children:
                if child.poll() is not None:
                    raise VnaError(f"worker process {child.pid} exited with {child.returncode}")
        return 0
    finally:
        for dispatcher in dispatchers:
            # New connections are refused while the workers finish theirs.
            dispatcher.close()
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=120)
            if child.poll() is None:
                child.kill()
        if embedded is not None:
            embedded.stop()


def _listen(name: str, host: str, port: int, workers: int, setting: str) -> Dispatcher:
    try:
        # A large backlog: clients that connect while the workers start wait in it.
        return Dispatcher(name, host, port, workers, backlog=1024)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({setting}): {exc.strerror}") from exc


async def _migrate(url: str, statement_cache_size: int) -> None:
    db = await Database.connect(
        url, min_size=1, max_size=1, statement_cache_size=statement_cache_size
    )
    try:
        async with db.session() as conn:
            applied = await migrate(conn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    finally:
        await db.close()


def _spawn(
    index: int, config_path: str | None, env: dict[str, str], channel_fds: list[int]
) -> subprocess.Popen[bytes]:
    """Worker ``index``, given its ends of the HTTP channel and, when DIMSE is on, the DIMSE
    channel (in that order)."""
    args = [sys.executable, "-m", "vna.cli"]
    if config_path:
        args += ["--config", config_path]
    args += ["serve", "--worker", str(index), "--http-fd", str(channel_fds[0])]
    if len(channel_fds) > 1:
        args += ["--dimse-fd", str(channel_fds[1])]
    return subprocess.Popen(args, env=env, preexec_fn=_die_with_parent, pass_fds=tuple(channel_fds))


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.  A supervisor that stops normally sends SIGTERM
    # itself (a graceful stop); one that dies takes its workers with it at once, as a crash of
    # a single-process server would: nothing acknowledged is lost (acknowledged means
    # durable), and no worker keeps serving on its own.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_ready(
    dispatchers: list[Dispatcher], children: list[subprocess.Popen[bytes]], stop: _Stop
) -> None:
    """Until every worker serves both ports (nothing is dealt before: vna.handoff)."""
    deadline = time.monotonic() + _START_SECONDS
    while not stop.is_set():
        for child in children:
            if child.poll() is not None:
                raise ConfigError(f"a worker exited with {child.returncode} at start-up")
        if all(d.all_ready() for d in dispatchers):
            return
        if time.monotonic() > deadline:
            raise VnaError(f"the workers did not all start within {_START_SECONDS} s")
        time.sleep(0.1)


class _Stop:
    def __init__(self) -> None:
        self._flag = False

    def set(self, *_: object) -> None:
        self._flag = True

    def is_set(self) -> bool:
        return self._flag

    def wait_for(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self._flag and time.monotonic() < end:
            time.sleep(0.05)
        return self._flag


def _stop_on_signals() -> _Stop:
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, stop.set)
    return stop
