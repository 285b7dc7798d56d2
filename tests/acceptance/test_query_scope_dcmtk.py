"""Issue 23's first finding, replayed as the administrator met it: `vna serve` with two
hospitals declared, each PACS storing its own patient P00001 with storescu, then
``findscu -aet HOSP2PACS -k PatientID=P00001``.  Each PACS must get its own patient only,
told whose ID it is (IssuerOfPatientID); HOSP2, whose ``query_scope`` is ``linked``, gets both
once an administrator links the identities with ``vna patients link``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.acceptance.conftest import VNA, ArchiveProcess
from tests.factory import ct_study, part10

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        shutil.which("findscu") is None,
        reason="dcmtk's storescu/findscu are not installed (apt-get install dcmtk)",
    ),
]

CONFIG = """
[[sources]]
name = "HOSP1"
ae_titles = ["HOSP1PACS"]
issuer_of_patient_id = "HOSP1"

[[sources]]
name = "HOSP2"
ae_titles = ["HOSP2PACS"]
issuer_of_patient_id = "HOSP2"
query_scope = "linked"
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ArchiveProcess]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-scope-"))
    config = root / "vna.toml"
    config.write_text(CONFIG)
    process = ArchiveProcess(root / "data", config=config)
    try:
        process.start()
        yield process
    finally:
        process.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=False)


def address(server: ArchiveProcess) -> list[str]:
    return ["-aec", server.ae_title, "127.0.0.1", str(server.dimse_port)]


def storescu(server: ArchiveProcess, calling: str, study: list[Dataset], folder: Path) -> None:
    folder.mkdir(parents=True)
    files = []
    for i, ds in enumerate(study):
        path = folder / f"{i:03d}.dcm"
        path.write_bytes(part10(ds))
        files.append(str(path))
    done = run("storescu", "-aet", calling, *address(server), *files)
    assert done.returncode == 0, done.stdout + done.stderr


def findscu(server: ArchiveProcess, calling: str, out: Path) -> dict[str, str]:
    """Study Root C-FIND by PatientID alone, as most PACS ask: StudyInstanceUID -> the
    IssuerOfPatientID of each answer (not asked for)."""
    out.mkdir(parents=True)
    done = run(
        "findscu",
        "-S",
        "-aet",
        calling,
        *address(server),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientID=P00001",
        "-k",
        "StudyInstanceUID",
        "-X",
        "-od",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return {ds.StudyInstanceUID: ds.get("IssuerOfPatientID", "(none)") for ds in answers}


def test_findscu_without_issuer_sees_the_callers_patient_until_linked(
    server: ArchiveProcess, tmp_path: Path
) -> None:
    jane = ct_study(patient_id="P00001", patient_name="DOE^JANE", series=1, slices=1)
    richard = ct_study(patient_id="P00001", patient_name="ROE^RICHARD", series=1, slices=1)
    storescu(server, "HOSP1PACS", jane, tmp_path / "hosp1")
    storescu(server, "HOSP2PACS", richard, tmp_path / "hosp2")
    jane_study, richard_study = jane[0].StudyInstanceUID, richard[0].StudyInstanceUID

    assert findscu(server, "HOSP1PACS", tmp_path / "f1") == {jane_study: "HOSP1"}
    assert findscu(server, "HOSP2PACS", tmp_path / "f2") == {richard_study: "HOSP2"}

    # The administrator links the two identities on the archive's host.
    assert server.config is not None
    env = {**os.environ, **server.env()}
    command = [str(VNA), "--config", str(server.config), "patients", "link"]
    linked = subprocess.run(
        [*command, "P00001^^^HOSP1", "P00001^^^HOSP2", "--reason", "same person"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert linked.returncode == 0, linked.stdout + linked.stderr

    assert findscu(server, "HOSP2PACS", tmp_path / "f3") == {
        jane_study: "HOSP1",
        richard_study: "HOSP2",
    }
    assert findscu(server, "HOSP1PACS", tmp_path / "f4") == {jane_study: "HOSP1"}
