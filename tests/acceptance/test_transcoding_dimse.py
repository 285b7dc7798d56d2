"""DIMSE fallback (issue 18) as a PACS administrator sees it: `vna serve` holding JPEG-LS,
JPEG 2000 and RLE instances sends them to peers that accept only uncompressed syntaxes,
decompressed on the way: dcmtk's getscu proposing uncompressed syntaxes only, movescu to a
dcmtk storescp accepting Implicit VR Little Endian only (+xi), Orthanc configured to accept
uncompressed syntaxes only; and a destination declared with ``transfer_syntax`` receives that
syntax even when it would accept the stored one."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

from tests.acceptance.conftest import ArchiveProcess
from tests.conftest import free_port
from tests.factory import ct_study, part10, stow_body
from tests.orthanc import ORTHANC, Orthanc

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        shutil.which("getscu") is None or shutil.which("storescp") is None,
        reason="dcmtk's getscu/movescu/storescp are not installed (apt-get install dcmtk)",
    ),
]

EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


class StoreSCP:
    """dcmtk's storescp writing what it receives to a directory."""

    def __init__(self, root: Path, ae_title: str, *options: str) -> None:
        self.port = free_port()
        self.ae_title = ae_title
        self.out = root / ae_title
        self.out.mkdir()
        self.log = (root / f"{ae_title}.log").open("wb")
        self.proc = subprocess.Popen(
            ["storescp", "-aet", ae_title, *options, "-od", str(self.out), str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def received(self, count: int, timeout: float = 30) -> list[Dataset]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(self.out.iterdir())
            if len(files) >= count:
                time.sleep(0.3)  # the last one written whole
                return [pydicom.dcmread(p) for p in sorted(self.out.iterdir())]
            time.sleep(0.2)
        raise AssertionError(f"{self.ae_title} received {len(list(self.out.iterdir()))} files")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.implicit_only = StoreSCP(root, "IMPLICITONLY", "+xi")
        # Accepts every syntax dcmtk knows, JPEG-LS included, yet is declared to receive
        # Explicit VR Little Endian.
        self.forced = StoreSCP(root, "ALWAYSELE", "+xa")
        # Orthanc accepting uncompressed transfer syntaxes only.
        self.orthanc = (
            Orthanc(root, name="uncompressed-only", AcceptedTransferSyntaxes=[IMPLICIT, EXPLICIT])
            if ORTHANC.exists()
            else None
        )
        config = root / "vna.toml"
        lines = []
        for name, ae, port, extra in [
            ("implicit-only", "IMPLICITONLY", self.implicit_only.port, ""),
            ("always-ele", "ALWAYSELE", self.forced.port, f'transfer_syntax = "{EXPLICIT}"\n'),
        ] + ([("orthanc", "ORTHANC", self.orthanc.dicom_port, "")] if self.orthanc else []):
            lines.append(
                f'[[destinations]]\nname = "{name}"\nae_title = "{ae}"\n'
                f'host = "127.0.0.1"\nport = {port}\n{extra}'
            )
        config.write_text("\n".join(lines))
        self.archive = ArchiveProcess(root / "data", config=config)
        self.archive.start()

    def stop(self) -> None:
        self.archive.shutdown()
        self.implicit_only.stop()
        self.forced.stop()
        if self.orthanc is not None:
            self.orthanc.stop()


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    # Not under pytest's basetemp (see archive_process in conftest.py).
    root = Path(tempfile.mkdtemp(prefix="vna-accept-transcode-"))
    made = Setup(root)
    try:
        yield made
    finally:
        made.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def study(setup: Setup) -> dict[str, np.ndarray]:
    """A CT study stored compressed (JPEG-LS, JPEG 2000, RLE): its pixels by SOP UID."""
    datasets = ct_study(series=1, slices=3, size=64)
    for ds, syntax in zip(datasets, (JPEG_LS, J2K, RLE), strict=True):
        plugin = {JPEG_LS: "pyjpegls", J2K: "pylibjpeg", RLE: "pydicom"}[syntax]
        ds.compress(syntax, encoding_plugin=plugin, generate_instance_uid=False)
    body, content_type = stow_body([part10(ds) for ds in datasets])
    r = requests.post(
        f"{setup.archive.url}/studies",
        data=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    pixels = {ds.SOPInstanceUID: ds.pixel_array for ds in datasets}
    pixels["study"] = datasets[0].StudyInstanceUID  # type: ignore[assignment]
    return pixels


def address(server: ArchiveProcess) -> list[str]:
    return ["-aec", server.ae_title, "127.0.0.1", str(server.dimse_port)]


def study_keys(study_uid: str) -> list[str]:
    return ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]


def check(received: list[Dataset], study: dict[str, Any], syntaxes: set[str]) -> None:
    got = {ds.SOPInstanceUID: ds for ds in received}
    assert set(got) == set(study) - {"study"}
    for uid, ds in got.items():
        assert ds.file_meta.TransferSyntaxUID in syntaxes, ds.file_meta.TransferSyntaxUID
        assert np.array_equal(ds.pixel_array, study[uid]), uid


def test_getscu_proposing_uncompressed_only_gets_them_decompressed(
    setup: Setup, study: dict[str, Any], tmp_path: Path
) -> None:
    # getscu's default (+x=) and +xe propose the uncompressed syntaxes only for the
    # storage sub-operations on its association.
    done = run(
        "getscu", "-v", "-S", "+xe", "-aet", "VIEWER", *address(setup.archive),
        *study_keys(study["study"]), "-od", str(tmp_path),
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "Number of Completed Suboperations : 3" in log, log
    assert "Number of Failed Suboperations    : 0" in log, log
    check([pydicom.dcmread(p) for p in tmp_path.iterdir()], study, {EXPLICIT, IMPLICIT})


def test_movescu_to_a_storescp_taking_implicit_vr_only(setup: Setup, study: dict[str, Any]) -> None:
    done = run(
        "movescu", "-v", "-S", "-aet", "PACS", "-aem", "IMPLICITONLY",
        *address(setup.archive), *study_keys(study["study"]),
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "Received Final Move Response (Success)" in log, log
    check(setup.implicit_only.received(3), study, {IMPLICIT})


def test_a_destination_declared_with_a_syntax_receives_that_syntax(
    setup: Setup, study: dict[str, Any]
) -> None:
    done = run(
        "movescu", "-v", "-S", "-aet", "PACS", "-aem", "ALWAYSELE",
        *address(setup.archive), *study_keys(study["study"]),
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "Final Move Response (Success)" in log, log
    check(setup.forced.received(3), study, {EXPLICIT})


@pytest.mark.skipif(
    not ORTHANC.exists(), reason="Orthanc is not installed (apt-get install orthanc)"
)
def test_orthanc_taking_uncompressed_only_receives_them_by_c_move(
    setup: Setup, study: dict[str, Any]
) -> None:
    orthanc = setup.orthanc
    assert orthanc is not None
    done = run(
        "movescu", "-v", "-S", "-aet", "PACS", "-aem", "ORTHANC",
        *address(setup.archive), *study_keys(study["study"]),
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "Final Move Response (Success)" in log, log
    received = [
        pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{i}/file")))
        for i in orthanc.get("/instances")
    ]
    check(received, study, {EXPLICIT, IMPLICIT})


def test_dicomweb_client_asks_for_other_syntaxes(setup: Setup, study: dict[str, Any]) -> None:
    """The same stored study over `vna serve`'s WADO-RS, as dicomweb-client asks: a series in
    Explicit VR Little Endian, one instance in JPEG 2000, decoded frames."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(setup.archive.url)
    series = client.search_for_series(study["study"])[0]["0020000E"]["Value"][0]
    got = client.retrieve_series(
        study["study"], series, media_types=(("application/dicom", EXPLICIT),)
    )
    check(got, study, {EXPLICIT})
    sop = got[0].SOPInstanceUID
    one = client.retrieve_instance(
        study["study"], series, sop, media_types=(("application/dicom", "1.2.840.10008.1.2.4.90"),)
    )
    assert one.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(one.pixel_array, study[sop])
    (frame,) = client.retrieve_instance_frames(
        study["study"], series, sop, frame_numbers=[1],
        media_types=(("application/octet-stream", EXPLICIT),),
    )  # fmt: skip
    assert frame == study[sop].astype("<u2").tobytes()
