"""Several archive nodes on one catalogue and one bucket (issue 21): the harness.

Each node is a ``vna serve`` process of its own (its HTTP and DIMSE ports, its data directory,
its ``node_name``), all on the same ``database_url`` (the test's real PostgreSQL database) and
the same ``storage_url`` (a bucket on the moto S3 server, in server mode).  Lifecycle workers are
separate ``vna lifecycle run`` processes on the same catalogue and bucket, as the Terraform
deployment runs them.  Clients pick nodes round-robin (``Cluster.next_node``), as a load
balancer in front of the gateway tasks does.

One server process per node (``VNA_HTTP_WORKERS=1``) keeps N nodes affordable on a 2-core
machine; the supervisor's dealing to several workers is tested on its own (test_workers.py).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import requests
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.conftest import free_port
from tests.factory import part10, stow_body

VNA = Path(sys.executable).parent / "vna"
ACCEPT_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # the child writes to it; closed with the child
    try:
        return subprocess.Popen(args, env=env, stdout=log, stderr=log)
    finally:
        log.close()


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


class Process:
    """A ``vna`` command started in the background with an environment of its own."""

    def __init__(self, name: str, root: Path, env: dict[str, str], args: Sequence[str]) -> None:
        self.name = name
        self.data_dir = root / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = root / f"{name}.log"
        self.args = [str(VNA), *args]
        self.env = dict(os.environ)
        self.env.update(env)
        self.env["VNA_DATA_DIR"] = str(self.data_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.proc = _spawn(self.args, self.env, self.log_path)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group member we started: a crash, no clean-up."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, as a service manager stops it; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        code = self.proc.returncode
        self.proc = None
        return code

    def log(self) -> str:
        return _tail(self.log_path)


class Node(Process):
    """One archive node: ``vna serve`` with its own ports and data directory."""

    def __init__(self, name: str, root: Path, env: dict[str, str]) -> None:
        self.http_port = free_port()
        self.dimse_port = free_port()
        super().__init__(
            name,
            root,
            {
                **env,
                "VNA_NODE_NAME": name,
                "VNA_HTTP_PORT": str(self.http_port),
                "VNA_DIMSE_PORT": str(self.dimse_port),
                "VNA_DIMSE_HOST": "127.0.0.1",
                "VNA_HTTP_WORKERS": "1",
                "VNA_LIFECYCLE_IN_SERVE": "false",
            },
            ["serve"],
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise AssertionError(f"{self.name} exited ({code}):\n{self.log()}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not answer in {timeout} s:\n{self.log()}")


class Worker(Process):
    """``vna lifecycle run``: lifecycle workers on the shared catalogue and bucket."""

    def __init__(self, name: str, root: Path, env: dict[str, str], once: bool = False) -> None:
        super().__init__(name, root, env, ["lifecycle", "run", *(["--once"] if once else [])])

    def run_once(self, timeout: float = 120) -> tuple[int, str]:
        self.start()
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        return code, self.log()


class Cluster:
    """N nodes and M lifecycle workers on one catalogue (``database_url``) and one bucket."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        storage_url: str,
        *,
        config_toml: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.storage_url = storage_url
        self.env = {
            "VNA_DATABASE_URL": database_url,
            "VNA_STORAGE_URL": storage_url,
            "VNA_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        if config_toml:
            self.env["VNA_CONFIG_TOML"] = config_toml
        self.nodes: list[Node] = []
        self.workers: list[Worker] = []
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def add_nodes(self, count: int, *, start: bool = True) -> list[Node]:
        new = [Node(f"node-{len(self.nodes) + i}", self.root, self.env) for i in range(count)]
        self.nodes.extend(new)
        if start:
            for node in new:
                node.start()
            for node in new:
                node.wait_ready()
        return new

    def add_workers(self, count: int, *, start: bool = True, **env: str) -> list[Worker]:
        new = [
            Worker(f"worker-{len(self.workers) + i}", self.root, {**self.env, **env})
            for i in range(count)
        ]
        self.workers.extend(new)
        if start:
            for worker in new:
                worker.start()
        return new

    def worker_once(self, name: str = "once", **env: str) -> tuple[int, str]:
        """``vna lifecycle run --once`` on the shared catalogue (a scheduler pass and every
        ready job), for assertions that need the queue drained."""
        return Worker(name, self.root, {**self.env, **env}, once=True).run_once()

    def cli(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """A ``vna`` command on the shared catalogue and bucket (``vna verify --all``...)."""
        full = dict(os.environ)
        full.update(self.env)
        full.update(env)
        full["VNA_DATA_DIR"] = str(self.root / "cli")
        return subprocess.run(
            [str(VNA), *args], env=full, capture_output=True, text=True, timeout=timeout
        )

    def cli_start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """A ``vna`` command started in the background (two of them at once)."""
        full = dict(os.environ)
        full.update(self.env)
        full.update(env)
        full["VNA_DATA_DIR"] = str(self.root / "cli")
        return subprocess.Popen(
            [str(VNA), *args],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def next_node(self) -> Node:
        """Round-robin over the nodes that are up, as a load balancer deals requests."""
        with self._lock:
            for _ in range(len(self.nodes)):
                node = self.nodes[next(self._turn) % len(self.nodes)]
                if node.running:
                    return node
        raise AssertionError("no node is running")

    def shutdown(self) -> None:
        for proc in [*self.workers, *self.nodes]:
            try:
                proc.stop(timeout=30)
            except Exception:  # clean-up goes on for the others
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in [*self.nodes, *self.workers])


# --- clients -----------------------------------------------------------------------------------


def stow(node: Node, datasets: Iterable[Dataset], timeout: float = 60) -> requests.Response:
    body, ctype = stow_body([part10(ds) for ds in datasets])
    return requests.post(
        f"{node.url}/studies", data=body, headers={"Content-Type": ctype}, timeout=timeout
    )


def stow_outcome(response: requests.Response) -> tuple[set[str], set[str]]:
    """SOP Instance UIDs a STOW-RS response acknowledged (ReferencedSOPSequence) and those it
    refused (FailedSOPSequence)."""
    if response.status_code not in (200, 202, 409):
        return set(), set()
    body = response.json()

    def uids(tag: str) -> set[str]:
        items = body.get(tag, {}).get("Value", [])
        return {item["00081155"]["Value"][0] for item in items}

    return uids("00081199"), uids("00081198")


def c_store_association(node: Node, calling: str = "MULTISCU"):  # an Association
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", node.dimse_port, ae_title="VNA")


def c_store(node: Node, datasets: Iterable[Dataset]) -> dict[str, int | None]:
    """Status of each instance sent over one association (None: no answer)."""
    out: dict[str, int | None] = {}
    assoc = c_store_association(node)
    if not assoc.is_established:
        return {str(ds.SOPInstanceUID): None for ds in datasets}
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except Exception:  # a killed node: no answer
                out[str(ds.SOPInstanceUID)] = None
                continue
            out[str(ds.SOPInstanceUID)] = int(status.Status) if "Status" in status else None
    finally:
        if assoc.is_established:
            assoc.release()
    return out


def retrieve_instance(node: Node, study: str, series: str, sop: str) -> requests.Response:
    return requests.get(
        f"{node.url}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": ACCEPT_ANY},
        timeout=60,
    )


def s3_keys(storage_url: str, prefix: str = "") -> list[str]:
    """Every key of the bucket behind ``storage_url`` (s3://bucket?endpoint_url=...)."""
    from urllib.parse import parse_qs, urlparse

    import boto3

    parts = urlparse(storage_url)
    endpoint = parse_qs(parts.query)["endpoint_url"][0]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=parts.netloc, Prefix=prefix
    ):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys
