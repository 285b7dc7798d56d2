"""One ``vna serve`` per data directory (issue 23, item 3): a second one is refused with one line
and exit 2, a crashed one leaves no stale lock, and two nodes of one deployment (``node_name``,
shared catalogue) may share a data directory.

Real ``vna serve`` processes on loopback ports, with this test's catalogue database (an
external ``database_url``, so that no embedded PostgreSQL has to start for each server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port

VNA = Path(sys.executable).parent / "vna"


class Server:
    def __init__(self, data_dir: Path, database_url: str, **env: str) -> None:
        self.http_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            VNA_DATA_DIR=str(data_dir),
            VNA_DATABASE_URL=database_url,
            VNA_HTTP_PORT=str(self.http_port),
            VNA_DIMSE_PORT=str(free_port()),
            VNA_LIFECYCLE_IN_SERVE="false",
            VNA_LOG_LEVEL="WARNING",
            **env,
        )
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            [str(VNA), "serve"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.proc

    def wait_ready(self, timeout: float = 90) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vna serve exited {self.proc.returncode}: {self.stderr()}")
            try:
                url = f"http://127.0.0.1:{self.http_port}/healthz"
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"vna serve did not answer in {timeout} s")

    def run_to_exit(self, timeout: float = 60) -> tuple[int, str]:
        """Start, and wait for it to exit (a refused server exits at once)."""
        proc = self.start()
        try:
            _, err = proc.communicate(timeout=timeout)
        finally:
            self.proc = None
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, err

    def stderr(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read() if self.proc.stderr else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def test_a_second_serve_on_the_same_data_directory_is_refused(
    tmp_path: Path, database_url: str, servers: list[Server]
) -> None:
    data_dir = tmp_path / "data"
    # The first one under the supervisor (two workers), which holds the lock for its workers.
    first = Server(data_dir, database_url, VNA_HTTP_WORKERS="2")
    servers.append(first)
    first.start()
    first.wait_ready()
    assert first.proc is not None

    second = Server(data_dir, database_url, VNA_HTTP_WORKERS="1")  # other ports
    code, err = second.run_to_exit()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "already running on data directory" in lines[0]
    assert f"pid {first.proc.pid}" in lines[0]
    # The first one is untouched.
    assert requests.get(f"http://127.0.0.1:{first.http_port}/healthz", timeout=5).ok

    # A crash releases the lock: the kernel drops a dead process's flock.
    first.proc.kill()
    first.proc.wait()
    third = Server(data_dir, database_url, VNA_HTTP_WORKERS="1")
    servers.append(third)
    third.start()
    third.wait_ready()


def test_nodes_of_one_deployment_share_a_data_directory(
    tmp_path: Path, database_url: str, servers: list[Server]
) -> None:
    data_dir = tmp_path / "shared"
    nodes = [
        Server(data_dir, database_url, VNA_HTTP_WORKERS="1", VNA_NODE_NAME=name)
        for name in ("node-a", "node-b")
    ]
    servers.extend(nodes)
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()
    # The same node twice is still one too many.
    code, err = Server(
        data_dir, database_url, VNA_HTTP_WORKERS="1", VNA_NODE_NAME="node-a"
    ).run_to_exit()
    assert code == 2 and "as node 'node-a'" in err, err


def test_a_node_name_needs_a_shared_catalogue(tmp_path: Path) -> None:
    env = dict(os.environ, VNA_DATA_DIR=str(tmp_path / "data"), VNA_NODE_NAME="node-a")
    env.pop("VNA_DATABASE_URL", None)
    result = subprocess.run(
        [str(VNA), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vna: configuration error: 'node_name' needs a shared catalogue: set database_url"
        " (an embedded PostgreSQL belongs to one server)"
    ]


def test_serve_says_once_that_dimse_is_loopback_only(
    tmp_path: Path, database_url: str, servers: list[Server]
) -> None:
    """Closed by default (issue 23, item 4), said at start-up, once for all workers."""
    server = Server(tmp_path / "data", database_url, VNA_HTTP_WORKERS="2")
    servers.append(server)
    proc = server.start()
    server.wait_ready()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    server.proc = None
    said = [line for line in err.splitlines() if "no sources declared" in line]
    assert len(said) == 1, err
    assert "DIMSE listens on 127.0.0.1 only" in said[0]
