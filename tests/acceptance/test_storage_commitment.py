"""Storage Commitment (PS3.4 Annex J) as a PACS uses it, against `vna serve`: a pynetdicom
PACS stores a study, asks for commitment, and receives the report on its own association or,
once it has released it, on a new association to its own port; bad requests get the DIMSE
statuses PS3.7 gives them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.acceptance.conftest import ArchiveProcess
from tests.conftest import free_port
from tests.factory import ct_study

PUSH_MODEL = "1.2.840.10008.1.20.1"
WELL_KNOWN = "1.2.840.10008.1.20.1.1"
PACS_AE = "PACSAE"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
NOT_A_STORAGE_CLASS = "1.2.840.10008.5.1.4.1.1.9999.1"
VNA = Path(sys.executable).parent / "vna"


class Pacs:
    """A PACS: C-STOREs to the archive, asks for commitment, and listens on its own port for
    reports sent on a new association (it accepts the archive in the SCP role, PS3.7 D.3.3.4)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reports: dict[str, tuple[int, Dataset, str]] = {}
        self._arrived = threading.Condition()
        ae = AE(ae_title=PACS_AE)
        ae.add_supported_context(PUSH_MODEL, scu_role=False, scp_role=True)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report, ["new-association"])],
        )

    def _on_report(self, event: Any, via: str) -> tuple[int, None]:
        info = event.event_information
        with self._arrived:
            self.reports[str(info.TransactionUID)] = (
                int(event.request.EventTypeID),
                info,
                via,
            )
            self._arrived.notify_all()
        return 0x0000, None  # PS3.7 10.1.1.1.8: success, no Event Reply

    def wait_report(self, transaction_uid: str, timeout: float = 60) -> tuple[int, Dataset, str]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while transaction_uid not in self.reports:
                left = deadline - time.monotonic()
                assert left > 0, f"no storage commitment report for {transaction_uid}"
                self._arrived.wait(left)
            return self.reports[transaction_uid]

    def associate(self, server: ArchiveProcess, ae_title: str = PACS_AE) -> Any:
        ae = AE(ae_title=ae_title)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(PUSH_MODEL)
        ae.dimse_timeout = 120
        assoc = ae.associate(
            "127.0.0.1",
            server.dimse_port,
            ae_title=server.ae_title,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report, ["same-association"])],
        )
        assert assoc.is_established
        return assoc

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()


@pytest.fixture(scope="module")
def pacs() -> Iterator[Pacs]:
    p = Pacs()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def server(pacs: Pacs) -> Iterator[ArchiveProcess]:
    root = Path(tempfile.mkdtemp(prefix="vna-accept-commit-"))
    config = root / "vna.toml"
    config.write_text(
        "[dimse]\ncommit_timeout_seconds = 20\n"
        # Objects stay as received, so that the test can damage one (see the last test).
        "[compression]\nlevel = 0\n"
        "[lifecycle]\npoll_seconds = 1\n"
        "[[sources]]\n"
        'name = "PACS"\n'
        f'ae_titles = ["{PACS_AE}"]\n'
        'issuer_of_patient_id = "PACS"\n'
        'host = "127.0.0.1"\n'
        f"port = {pacs.port}\n"
        # A viewer may query and retrieve, but it stored nothing: no commitment for it.
        "[[destinations]]\n"
        'name = "viewer"\n'
        'ae_title = "VIEWER"\n'
        'host = "127.0.0.1"\n'
        f"port = {free_port()}\n"
    )
    process = ArchiveProcess(root / "data", config=config)
    try:
        process.start()
        yield process
    finally:
        process.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stored(server: ArchiveProcess, pacs: Pacs) -> list[Dataset]:
    """A study the PACS has sent to the archive."""
    study = ct_study(series=1, slices=3, size=32)
    assoc = pacs.associate(server)
    try:
        for ds in study:
            status = assoc.send_c_store(ds)
            # B000: stored with the source's issuer of patient ID added (a success).
            assert status.Status in (0x0000, 0xB000)
    finally:
        assoc.release()
    return study


def request(refs: list[tuple[str, str]], transaction_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid or generate_uid()
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def refs_of(study: list[Dataset]) -> list[tuple[str, str]]:
    return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in study]


def committed(info: Dataset) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])}


def failed(info: Dataset) -> dict[str, int]:
    return {
        str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
        for i in info.get("FailedSOPSequence", [])
    }


def n_action(assoc: Any, info: Dataset | None, **overrides: Any) -> int:
    status, _reply = assoc.send_n_action(
        info,
        overrides.get("action", 1),
        overrides.get("sop_class", PUSH_MODEL),
        overrides.get("sop_instance", WELL_KNOWN),
    )
    return int(status.Status)


def test_report_on_the_same_association_all_committed(
    server: ArchiveProcess, pacs: Pacs, stored: list[Dataset]
) -> None:
    asked = request(refs_of(stored))
    assoc = pacs.associate(server)
    try:
        assert n_action(assoc, asked) == 0x0000
        event_type, info, via = pacs.wait_report(str(asked.TransactionUID))
    finally:
        assoc.release()
    assert via == "same-association"
    assert event_type == 1  # all committed (PS3.4 J.3.3.1)
    assert committed(info) == {str(ds.SOPInstanceUID) for ds in stored}
    assert "FailedSOPSequence" not in info


def test_released_association_gets_the_report_on_a_new_one_with_failure_reasons(
    server: ArchiveProcess, pacs: Pacs, stored: list[Dataset]
) -> None:
    unknown = generate_uid()
    unsupported = generate_uid()
    wrong_class = stored[0]
    refs = [
        *refs_of(stored[1:]),
        (CTImageStorage, unknown),  # never sent
        (MR_IMAGE_STORAGE, str(wrong_class.SOPInstanceUID)),  # stored as CT
        (NOT_A_STORAGE_CLASS, unsupported),
    ]
    asked = request(refs)
    assoc = pacs.associate(server)
    assert n_action(assoc, asked) == 0x0000
    assoc.release()  # the PACS does not wait: the report must come to its own port

    event_type, info, via = pacs.wait_report(str(asked.TransactionUID))
    assert via == "new-association"
    assert event_type == 2  # some failed
    assert committed(info) == {str(ds.SOPInstanceUID) for ds in stored[1:]}
    assert failed(info) == {
        unknown: 0x0112,  # no such object instance (PS3.3 C.14.1.1)
        str(wrong_class.SOPInstanceUID): 0x0119,  # class/instance conflict
        unsupported: 0x0122,  # referenced SOP class not supported
    }

    listed = subprocess.run(
        [str(VNA), "commitments", "list", "--format", "json"],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = {r["transaction_uid"]: r for r in json.loads(listed.stdout)}
    row = rows[str(asked.TransactionUID)]
    assert (row["state"], row["committed"], row["failed"], row["reported_via"]) == (
        "reported",
        2,
        3,
        "new-association",
    )
    table = subprocess.run(
        [str(VNA), "commitments", "list", "--state", "reported"],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    [line] = [ln for ln in table.splitlines() if ln.split()[0] == str(row["id"])]
    # ID, requested, source, calling AE, state, instances, committed, failed, via
    assert line.split()[2:] == ["PACS", PACS_AE, "reported", "5", "2", "3", "new-association"]
    metrics = requests.get(f"{server.base}/metrics", timeout=10).text
    assert 'vna_storage_commitments{state="pending"} 0.0' in metrics
    assert any(
        line.startswith('vna_storage_commitments{state="failed"}')
        and float(line.rsplit(" ", 1)[1]) >= 1
        for line in metrics.splitlines()
    )


def test_ten_thousand_references_answered_one_more_refused(
    server: ArchiveProcess, pacs: Pacs, stored: list[Dataset]
) -> None:
    unknown = [(CTImageStorage, generate_uid()) for _ in range(10_000 - len(stored))]
    asked = request([*refs_of(stored), *unknown])
    too_many = request([*refs_of(stored), *unknown, (CTImageStorage, generate_uid())])
    assoc = pacs.associate(server)
    try:
        # PS3.7 C.5: 0213 resource limitation, before any work; the limit is 10,000.
        assert n_action(assoc, too_many) == 0x0213
        assert n_action(assoc, asked) == 0x0000
        event_type, info, _via = pacs.wait_report(str(asked.TransactionUID), timeout=120)
    finally:
        assoc.release()
    assert event_type == 2
    assert committed(info) == {str(ds.SOPInstanceUID) for ds in stored}
    reasons = failed(info)
    assert len(reasons) == len(unknown)
    assert set(reasons.values()) == {0x0112}
    assert str(too_many.TransactionUID) not in pacs.reports


def test_bad_requests_get_their_dimse_status(
    server: ArchiveProcess, pacs: Pacs, stored: list[Dataset]
) -> None:
    good = request(refs_of(stored))
    no_transaction = request(refs_of(stored))
    del no_transaction.TransactionUID
    empty = request([])
    bad_uid = request([("1.2.840.10008.5.1.4.1.1.2", "not a uid")])
    assoc = pacs.associate(server)
    try:
        assert n_action(assoc, good, action=2) == 0x0123  # no such action
        assert n_action(assoc, good, sop_instance=generate_uid()) == 0x0112  # not well-known
        # PS3.7 10.1.4.1.10: invalid argument value (the Action Information).
        assert n_action(assoc, no_transaction) == 0x0115
        assert n_action(assoc, empty) == 0x0115
        assert n_action(assoc, bad_uid) == 0x0115  # invalid argument value
    finally:
        assoc.release()
    viewer = pacs.associate(server, ae_title="VIEWER")
    try:
        assert n_action(viewer, good) == 0x0124  # refused: not authorized (not a source)
    finally:
        viewer.release()
    assert str(good.TransactionUID) not in pacs.reports


def test_a_damaged_object_is_not_committed(
    server: ArchiveProcess, pacs: Pacs, stored: list[Dataset]
) -> None:
    """Committed means read back and verified now: damage every stored object on disk and the
    same request reports processing failure (0110) for each instance."""
    objects = [p for p in (server.data_dir / "objects").rglob("*") if p.is_file()]
    assert len(objects) >= len(stored)
    for path in objects:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    asked = request(refs_of(stored))
    assoc = pacs.associate(server)
    try:
        assert n_action(assoc, asked) == 0x0000
        event_type, info, _via = pacs.wait_report(str(asked.TransactionUID))
    finally:
        assoc.release()
    assert event_type == 2
    assert committed(info) == set()
    assert failed(info) == {str(ds.SOPInstanceUID): 0x0110 for ds in stored}
