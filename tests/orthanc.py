"""Orthanc (the Debian package) as a peer in tests: a hospital PACS, a C-MOVE destination, a
forwarding target.  On free loopback ports (or a given DICOM port), SQLite index and storage
under a test directory, no plugins.  Tests that need it skip with ``MISSING`` when it is not
installed (``.ci/run`` installs it)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.conftest import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
MISSING = "Orthanc is not installed (apt-get install orthanc)"


class Orthanc:
    """A running Orthanc; ``config`` entries are added to (or replace) the defaults."""

    def __init__(
        self,
        root: Path,
        *,
        name: str = "test-pacs",
        ae_title: str = "ORTHANC",
        dicom_port: int | None = None,
        **config: Any,
    ) -> None:
        self.http_port = free_port()
        self.dicom_port = dicom_port or free_port()
        self.root = root
        self.log = root / f"orthanc-{name}.log"
        settings = {
            "Name": name,
            "StorageDirectory": str(root / f"orthanc-{name}-storage"),
            "IndexDirectory": str(root / f"orthanc-{name}-index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {},
            "SaveJobs": False,
            "Plugins": [],
            **config,
        }
        path = root / f"orthanc-{name}.json"
        path.write_text(json.dumps(settings))
        self.proc = subprocess.Popen(
            [str(ORTHANC), str(path)],
            cwd=root,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {self.log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        """GET a REST path: JSON decoded, anything else as bytes."""
        r = requests.get(f"{self.url}{path}", timeout=60)
        r.raise_for_status()
        return r.json() if "json" in r.headers.get("Content-Type", "") else r.content

    def call(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        """A REST call that must answer 200; its JSON (None when empty)."""
        r = requests.request(method, f"{self.url}{path}", json=body, timeout=timeout)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
