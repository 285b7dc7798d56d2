"""``vna serve`` with several worker processes sharing the listening port.

Parsing DICOM headers and talking to PostgreSQL are Python work bound to one core by the GIL;
the archive uses every core by running one server process per core, all accepting on the
same HTTP port (SO_REUSEPORT: the kernel spreads connections among them).  The supervisor
owns what must exist once: the embedded PostgreSQL, the schema migrations and the metrics
directory.  It also listens on the DIMSE port and deals each association to the worker with
the fewest (vna.handoff): associations are few and long, and hashing would
often put most of them on one worker.  Worker 0 runs the lifecycle engine.

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
import ssl
import subprocess
import sys
import time
import urllib.request

from vna.catalog.database import Database, EmbeddedPostgres
from vna.catalog.migrate import migrate
from vna.config import Settings
from vna.errors import ConfigError, VnaError
from vna.handoff import Dispatcher

log = logging.getLogger(__name__)

#: prometheus_client's multiprocess mode: every worker writes its metrics to files here and
#: /metrics (on any worker) sums them.  Read by prometheus_client at import.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the name is prometheus_client's
_PR_SET_PDEATHSIG = 1


def worker_count(settings: Settings) -> int:
    if settings.http.port == 0:
        return 1  # each process would get its own random port
    return settings.http.workers or min(os.cpu_count() or 1, 8)


def supervise(settings: Settings, config_path: str | None, workers: int) -> int:
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if settings.embedded_database:
        embedded = EmbeddedPostgres(settings.data_dir / "pg")
        url = embedded.start()
    children: list[subprocess.Popen[bytes]] = []
    dispatcher: Dispatcher | None = None
    try:
        asyncio.run(_migrate(url))
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = dict(os.environ)
        env["VNA_DATABASE_URL"] = url
        env[METRICS_DIR_ENV] = str(metrics_dir.resolve())

        stop = _stop_on_signals()
        if settings.dimse.enabled:
            try:
                dispatcher = Dispatcher(settings.dimse.host, settings.dimse.port, workers)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {settings.dimse.host}:{settings.dimse.port}"
                    f" (dimse.port): {exc.strerror}"
                ) from exc
            # The port bound (dimse.port may be 0), for what the workers report.
            env["VNA_DIMSE_PORT"] = str(dispatcher.port)
        for index in range(workers):
            fd = dispatcher.worker_fds[index] if dispatcher else None
            children.append(_spawn(index, config_path, env, fd))
            if index == 0:
                # Worker 0 alone holds the HTTP port until it answers: then a healthy
                # /healthz means it is serving, whichever worker answers later.
                _wait_healthy(settings, children[0], stop)
        if dispatcher:
            dispatcher.workers_started()
        log.info("%d workers serving", workers)
        while not stop.wait_for(0.5):
            for child in children:
                if child.poll() is not None:
                    raise VnaError(f"worker process {child.pid} exited with {child.returncode}")
        return 0
    finally:
        if dispatcher:
            dispatcher.close()  # refuse new associations while the workers finish theirs
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


async def _migrate(url: str) -> None:
    db = await Database.connect(url, min_size=1, max_size=1)
    try:
        async with db.session() as conn:
            applied = await migrate(conn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    finally:
        await db.close()


def _spawn(
    index: int, config_path: str | None, env: dict[str, str], dimse_fd: int | None
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "vna.cli"]
    if config_path:
        args += ["--config", config_path]
    args += ["serve", "--worker", str(index)]
    if dimse_fd is not None:
        args += ["--dimse-fd", str(dimse_fd)]
    return subprocess.Popen(
        args,
        env=env,
        preexec_fn=_die_with_parent,
        pass_fds=() if dimse_fd is None else (dimse_fd,),
    )


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.  A supervisor that stops normally sends SIGTERM
    # itself (a graceful stop); one that dies takes its workers with it at once, as a crash of
    # a single-process server would: nothing acknowledged is lost (acknowledged means
    # durable), and no worker keeps serving on its own.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_healthy(settings: Settings, child: subprocess.Popen[bytes], stop: _Stop) -> None:
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if settings.http.tls_cert else "http"
    url = f"{scheme}://{host}:{settings.http.port}/healthz"
    # Only "is it up?": the certificate is the worker's own, for the names clients use.
    context = ssl._create_unverified_context() if scheme == "https" else None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not stop.is_set():
        if child.poll() is not None:
            raise ConfigError(f"the first worker exited with {child.returncode} at start-up")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    if not stop.is_set():
        raise VnaError(f"the first worker did not answer {url} within 300 s")


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
