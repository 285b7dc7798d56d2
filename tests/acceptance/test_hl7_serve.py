"""The HIS as it meets the archive: ``vna serve`` with ``[hl7]`` configured (its own processes,
embedded PostgreSQL), a PACS storing a study over DIMSE, and ADT messages sent with
python-hl7's MLLP client.  The corrected name shows in QIDO-RS, garbage does not stop the
listener, and ``vna hl7 log`` tells the administrator what happened."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest
import requests
from hl7.client import MLLPClient
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from tests.acceptance.conftest import VNA, ArchiveProcess
from tests.conftest import free_port
from tests.factory import ct_study

CONFIG = """
[[sources]]
name = "HOSP1"
ae_titles = ["HOSP1PACS"]
issuer_of_patient_id = "HOSP1"

[hl7]
host = "127.0.0.1"
port = {port}

[[hl7.senders]]
sending_facility = "HIS1"
source = "HOSP1"
"""


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ArchiveProcess, int]]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-hl7-"))
    port = free_port()
    config = root / "vna.toml"
    config.write_text(CONFIG.format(port=port))
    process = ArchiveProcess(root / "data", config=config)
    try:
        process.start()
        yield process, port
    finally:
        process.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def adt(event: str, control: str, *segments: str) -> str:
    header = f"MSH|^~\\&|EPIC|HIS1|VNA|ARCHIVE|20260105101500||ADT^{event}|{control}|P|2.5.1"
    return "\r".join([header, f"EVN|{event}", *segments]) + "\r"


def msa(raw: bytes) -> tuple[str, str]:
    ack = hl7.parse(raw.strip(b"\x0b\x1c\r").decode())
    return str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])


def test_the_his_renames_a_patient_through_vna_serve(
    server: tuple[ArchiveProcess, int],
) -> None:
    process, port = server
    study = ct_study(patient_id="H-100", patient_name="DOE^JANE", series=1, slices=2)
    pacs = AE(ae_title="HOSP1PACS")
    pacs.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = pacs.associate("127.0.0.1", process.dimse_port, ae_title=process.ae_title)
    assert assoc.is_established
    try:
        # 0xB000: stored with coercion (the source's issuer of patient ID added).
        assert [int(assoc.send_c_store(ds).Status) for ds in study] == [0xB000, 0xB000]
    finally:
        assoc.release()

    # Garbage first, on a connection of its own: closed, nothing else affected.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"not MLLP at all\r\n")
        assert s.recv(4096) == b""

    with MLLPClient("127.0.0.1", port) as client:
        no_msh = msa(client.send_message("PID|1||H-100\r"))
        rename = msa(client.send_message(adt("A08", "ACC-1", "PID|1||H-100^^^HOSP1||Roe^Jane")))
        again = msa(client.send_message(adt("A08", "ACC-1", "PID|1||H-100^^^HOSP1||Roe^Jane")))
    assert no_msh[0] == "AR"
    assert rename == ("AA", "ACC-1")
    assert again == ("AA", "ACC-1")

    found = requests.get(f"{process.url}/studies?PatientID=H-100", timeout=30).json()
    assert [f["00100010"]["Value"][0]["Alphabetic"] for f in found] == ["Roe^Jane"]

    env = {**os.environ, "VNA_DATA_DIR": str(process.data_dir)}
    assert process.config is not None
    log = subprocess.run(
        [str(VNA), "--config", str(process.config), "hl7", "log"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert log.returncode == 0, log.stderr
    acc = [line for line in log.stdout.splitlines() if " ACC-1 " in line]
    assert len(acc) == 1 and "applied" in acc[0] and " 2 " in acc[0]  # two receipts, one change
    assert "malformed" in log.stdout
