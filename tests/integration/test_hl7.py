"""HL7 v2 ADT over MLLP against a real archive: python-hl7's MLLP client (the one behind its
``mllp_send`` command) sends to the listener ``vna serve`` starts, and the changes show where
a user looks: QIDO-RS, WADO-RS metadata, C-FIND (pynetdicom), ``vna hl7 log`` and the audit
trail."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import hl7
import pytest
from hl7.client import MLLPClient
from pydicom.dataset import Dataset
from pynetdicom import AE

from tests.factory import ct_study
from tests.integration.lifecycle_support import ingest
from tests.integration.test_security_tls import Pki, client_context, pki  # noqa: F401 - fixture
from vna.admin import patients
from vna.admin.patients import Identity
from vna.archive import Archive
from vna.cli import main
from vna.config import DimseSettings, Hl7SenderSettings, Hl7Settings, Settings, SourceSettings
from vna.gateway.dimse import DimseListener
from vna.gateway.hl7 import Hl7Listener

pytestmark = pytest.mark.asyncio

HOSP1 = SourceSettings(name="HOSP1", ae_titles=("HOSP1PACS",), issuer_of_patient_id="HOSP1")
HOSP2 = SourceSettings(name="HOSP2", ae_titles=("HOSP2PACS",), issuer_of_patient_id="HOSP2")
MAX_BYTES = 1024 * 1024
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.fixture
def archive_settings(archive_settings: Settings) -> Settings:
    return dataclasses.replace(
        archive_settings,
        sources=(HOSP1, HOSP2),
        dimse=DimseSettings(host="127.0.0.1", port=0, ae_title="VNA", network_timeout=30),
        hl7=Hl7Settings(
            enabled=True,
            host="127.0.0.1",
            port=0,
            max_message_bytes=MAX_BYTES,
            idle_timeout=30,
            senders=(Hl7SenderSettings(sending_facility="HIS1", source="HOSP1"),),
        ),
    )


@pytest.fixture
async def listener(archive: Archive) -> AsyncIterator[Hl7Listener]:
    started = Hl7Listener(archive)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def dimse(archive: Archive) -> AsyncIterator[DimseListener]:
    started = DimseListener(archive)
    await started.start()
    try:
        yield started
    finally:
        await started.stop(grace_seconds=5)


def adt(event: str, control: str, *segments: str, facility: str = "HIS1") -> str:
    header = (
        f"MSH|^~\\&|EPIC|{facility}|VNA|ARCHIVE|20260105101500||ADT^{event}^ADT_A01|{control}"
        "|P|2.5.1"
    )
    return "\r".join([header, f"EVN|{event}|20260105101500", *segments]) + "\r"


async def send(listener: Hl7Listener, *messages: str | bytes) -> list[Any]:
    """Each message over one MLLP connection (python-hl7's client); the parsed ACKs."""

    def exchange() -> list[Any]:
        with MLLPClient("127.0.0.1", listener.port) as client:
            return [_parse_ack(client.send_message(m)) for m in messages]

    return await asyncio.to_thread(exchange)


def _parse_ack(raw: bytes) -> Any:
    assert raw.startswith(b"\x0b") and raw.endswith(b"\x1c\x0d"), raw
    return hl7.parse(raw[1:-2].decode("utf-8"))


def ack_code(ack: Any) -> str:
    return str(ack.segment("MSA")[1])


def err_code(ack: Any) -> str:
    return str(ack.segment("ERR")[3]).split("^")[0]


async def qido(url: str, query: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/studies?{query}") as resp:
        assert resp.status in (200, 204), await resp.text()
        return [] if resp.status == 204 else list(await resp.json())


async def metadata(url: str, study_uid: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/studies/{study_uid}/metadata") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return list(await resp.json())


def name_of(item: dict[str, Any]) -> str:
    return str(item["00100010"]["Value"][0]["Alphabetic"])


async def store(
    archive: Archive, patient_id: str, name: str, source: SourceSettings = HOSP1
) -> str:
    study = ct_study(patient_id=patient_id, patient_name=name, series=1, slices=2)
    await ingest(archive, study, source)
    return str(study[0].StudyInstanceUID)


async def rows(archive: Archive, sql: str, *args: Any) -> list[dict[str, Any]]:
    async with archive.db.acquire() as conn:
        return [dict(r) for r in await conn.fetch(sql, *args)]


async def hl7_audit(archive: Archive) -> list[dict[str, Any]]:
    return await rows(
        archive, "SELECT outcome, detail FROM audit WHERE action = 'hl7-message' ORDER BY id"
    )


# --- the acceptance points --------------------------------------------------------------------


async def test_a08_changes_the_name_that_qido_and_wado_metadata_show(
    archive: Archive, listener: Hl7Listener, dicomweb: str
) -> None:
    study_uid = await store(archive, "P100", "DOE^JANE")
    (ack,) = await send(
        listener,
        adt("A08", "MSG-A08-1", "PID|1||P100^^^HOSP1^MR||Smith^Jane^Q||19800203|F"),
    )
    assert ack_code(ack) == "AA"
    assert str(ack.segment("MSA")[2]) == "MSG-A08-1"

    (found,) = await qido(dicomweb, "PatientID=P100")
    assert name_of(found) == "Smith^Jane^Q"
    for item in await metadata(dicomweb, study_uid):
        assert name_of(item) == "Smith^Jane^Q"
        assert item["00100030"]["Value"] == ["19800203"]
        assert item["00100040"]["Value"] == ["F"]
        # The correction path: the previous values kept in Original Attributes Sequence.
        previous = [
            name_of(entry["04000550"]["Value"][0])
            for entry in item["04000561"]["Value"]
            if entry.get("04000565", {}).get("Value") == ["CORRECT"]
            and "00100010" in entry["04000550"]["Value"][0]
        ]
        assert previous == ["DOE^JANE"]

    # Undoable like any correction: the change is the engine's.
    (logged,) = await patients.list_changes(archive.db)
    assert logged["kind"] == "update" and logged["actor"] == "hl7:HIS1"
    await patients.undo_change(archive, logged["id"], actor="test")
    (found,) = await qido(dicomweb, "PatientID=P100")
    assert name_of(found) == "DOE^JANE"

    (audited,) = await hl7_audit(archive)
    assert audited["outcome"] == "success"
    assert audited["detail"]["control_id"] == "MSG-A08-1"
    assert audited["detail"]["changes"] == [logged["id"]]


async def test_a40_merges_and_c_find_by_the_prior_id_finds_nothing(
    archive: Archive, listener: Hl7Listener, dimse: DimseListener
) -> None:
    prior_study = await store(archive, "P-OLD", "DOE^J")
    survivor_study = await store(archive, "P-NEW", "DOE^JOHN")
    (ack,) = await send(
        listener, adt("A40", "MSG-A40-1", "PID|1||P-NEW^^^HOSP1||DOE^JOHN", "MRG|P-OLD^^^HOSP1")
    )
    assert ack_code(ack) == "AA", str(ack)

    def c_find(patient_id: str) -> tuple[list[Dataset], int]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patient_id
        query.IssuerOfPatientID = ""
        query.StudyInstanceUID = ""
        query.PatientName = ""
        # As the hospital's PACS (a declared source's AE title), over a real association.
        scu = AE(ae_title="HOSP1PACS")
        scu.add_requested_context(STUDY_ROOT_FIND)
        assoc = scu.associate("127.0.0.1", dimse.port, ae_title="VNA")
        assert assoc.is_established
        found: list[Dataset] = []
        final = -1
        try:
            for status, ds in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if status.Status in (0xFF00, 0xFF01) and ds is not None:
                    found.append(ds)
                else:
                    final = int(status.Status)
        finally:
            assoc.release()
        return found, final

    gone, status = await asyncio.to_thread(c_find, "P-OLD")
    assert (gone, status) == ([], 0x0000)
    both, status = await asyncio.to_thread(c_find, "P-NEW")
    assert status == 0x0000
    assert {str(d.StudyInstanceUID) for d in both} == {prior_study, survivor_study}
    assert {str(d.PatientName) for d in both} == {"DOE^JOHN"}


async def test_malformed_messages_are_answered_or_cut_off_and_the_listener_goes_on(
    archive: Archive, listener: Hl7Listener
) -> None:
    good = "PID|1||P200^^^HOSP1||DOE^JO"
    await store(archive, "P200", "DOE^JO")
    acks = await send(
        listener,
        "PID|1||P200^^^HOSP1||Doe^Jo\r",  # no MSH
        adt("A08", "BAD-SEP", good).replace("MSH|^~\\&|", "MSH|^~|", 1),  # separators
        adt("A03", "BAD-EVENT", good),  # an event the archive does not take
        adt("A08", "BAD-FACILITY", good, facility="STRANGER"),
        adt("A08", "BAD-PID", "PID|1||X1^^^ELSEWHERE"),  # no HOSP1 identifier
    )
    assert [ack_code(a) for a in acks] == ["AR", "AR", "AR", "AR", "AE"]
    assert [err_code(a) for a in acks] == ["100", "102", "201", "207", "101"]
    assert "STRANGER" in str(acks[3].segment("ERR")[8])

    # 10 MB in one block: skipped to its end and refused; the connection still serves.  A
    # plain socket: python-hl7's client hands its data to one socket.send, which may send
    # only part of 10 MB.
    big = adt("A08", "BIG", good + "^" + "x" * (10 * 1024 * 1024)).encode()

    def oversized_then_good() -> tuple[Any, Any]:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=60) as s:
            s.sendall(b"\x0b" + big + b"\x1c\x0d")
            first = _read_block(s)
            s.sendall(b"\x0b" + adt("A08", "AFTER-BIG", good).encode() + b"\x1c\x0d")
            return _parse_ack(first), _parse_ack(_read_block(s))

    too_big, after = await asyncio.to_thread(oversized_then_good)
    assert (ack_code(too_big), str(too_big.segment("MSA")[2])) == ("AR", "BIG")
    assert "larger than" in str(too_big.segment("ERR")[8])
    assert ack_code(after) == "AA"

    # A truncated block and bytes outside any block: that connection is closed, unanswered.
    def cut_off(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return s.recv(4096)

    assert await asyncio.to_thread(cut_off, b"\x0b" + adt("A08", "CUT", good).encode()[:40]) == b""
    assert await asyncio.to_thread(cut_off, b"GET / HTTP/1.1\r\n\r\n") == b""

    # After all that, a good message on a new connection: AA.
    (ack,) = await send(listener, adt("A08", "GOOD-1", "PID|1||P200^^^HOSP1||Roe^Jo"))
    assert ack_code(ack) == "AA"
    (patient,) = await patients.find_patients(archive.db, Identity("P200", "HOSP1"))
    assert patient["patient_name"] == "Roe^Jo"

    # Every message is in the log and the audit trail, the refused ones too.
    logged = await rows(archive, "SELECT * FROM hl7_messages")
    log = {r["control_id"]: r for r in logged}
    assert log["BAD-FACILITY"]["outcome"] == "refused"
    assert log["BAD-EVENT"]["ack_code"] == "AR"
    assert log["BAD-PID"]["outcome"] == "error"
    assert log["GOOD-1"]["outcome"] == "applied"
    assert log["AFTER-BIG"]["outcome"] == "unchanged"  # the name it sends is already there
    malformed = [r for r in logged if r["outcome"] == "malformed"]
    assert len(malformed) == 3  # no MSH, bad separators, too large
    audited = await hl7_audit(archive)
    assert len(audited) == len(logged)
    assert {a["detail"].get("control_id") for a in audited} >= {
        "BAD-FACILITY",
        "BAD-EVENT",
        "BAD-PID",
        "GOOD-1",
        "AFTER-BIG",
    }


def _read_block(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\x1c\x0d"):
        chunk = s.recv(4096)
        assert chunk, "connection closed before the ACK"
        data += chunk
    return data


async def test_a_replayed_control_id_does_nothing_twice(
    archive: Archive, listener: Hl7Listener
) -> None:
    await store(archive, "P300", "DOE^ANN")
    first = adt("A08", "MSG-REPLAY", "PID|1||P300^^^HOSP1||Smith^Ann")
    # The same control ID again, even with other content, is not applied again.
    replay = adt("A08", "MSG-REPLAY", "PID|1||P300^^^HOSP1||Jones^Ann")
    acks = await send(listener, first, first, replay)
    assert [ack_code(a) for a in acks] == ["AA", "AA", "AA"]
    assert "already received" in str(acks[1].segment("MSA")[3])
    (patient,) = await patients.find_patients(archive.db, Identity("P300", "HOSP1"))
    assert patient["patient_name"] == "Smith^Ann"
    assert len(await patients.list_changes(archive.db)) == 1
    (logged,) = await rows(archive, "SELECT * FROM hl7_messages")
    assert logged["receipts"] == 3
    audited = await hl7_audit(archive)
    assert [a["detail"]["duplicate"] for a in audited] == [False, True, True]


async def test_unknown_patients_are_acknowledged_and_recorded(
    archive: Archive, listener: Hl7Listener
) -> None:
    (ack,) = await send(listener, adt("A01", "MSG-NEW", "PID|1||P999^^^HOSP1||New^Patient"))
    assert ack_code(ack) == "AA"
    (logged,) = await rows(archive, "SELECT * FROM hl7_messages")
    assert logged["outcome"] == "unknown-patient"
    assert logged["patient"] == "P999^^^HOSP1"


async def test_a47_changes_the_identifier_and_a37_unlinks(
    archive: Archive, listener: Hl7Listener, dicomweb: str
) -> None:
    study_uid = await store(archive, "TMP-1", "DOE^KIM")
    await store(archive, "P401", "DOE^KIM")
    await store(archive, "P402", "DOE^KIM")
    await patients.link(
        archive.db, Identity("P401", "HOSP1"), Identity("P402", "HOSP1"), reason="t", actor="t"
    )
    acks = await send(
        listener,
        adt("A47", "MSG-A47", "PID|1||MRN-1^^^HOSP1||DOE^KIM", "MRG|TMP-1^^^HOSP1"),
        adt("A37", "MSG-A37", "PID|1||P401^^^HOSP1", "PID|2||P402^^^HOSP1"),
        adt("A37", "MSG-A37-AGAIN", "PID|1||P401^^^HOSP1", "PID|2||P402^^^HOSP1"),
    )
    assert [ack_code(a) for a in acks] == ["AA", "AA", "AA"]
    assert await qido(dicomweb, "PatientID=TMP-1") == []
    (found,) = await qido(dicomweb, "PatientID=MRN-1")
    assert found["0020000D"]["Value"] == [study_uid]
    links = await patients.links_of(archive.db, Identity("P401", "HOSP1"))
    assert links["links"] == []
    assert "were not linked" in str(acks[2].segment("MSA")[3])


async def test_vna_hl7_log_lists_messages_with_their_outcome(
    archive: Archive,
    listener: Hl7Listener,
    archive_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await store(archive, "P500", "DOE^LEE")
    await send(
        listener,
        adt("A08", "LOG-1", "PID|1||P500^^^HOSP1||Poe^Lee"),
        adt("A08", "LOG-2", "PID|1||P500", facility="NOBODY"),
    )
    monkeypatch.setenv("VNA_DATABASE_URL", archive_settings.database_url)
    monkeypatch.setenv("VNA_DATA_DIR", str(archive_settings.data_dir))
    assert await asyncio.to_thread(main, ["hl7", "log"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["id", "received_at", "sending_facility", "control_id"]
    lines = {line.split()[3]: line for line in out[1:]}
    assert "AA" in lines["LOG-1"] and "applied" in lines["LOG-1"]
    assert "AR" in lines["LOG-2"] and "refused" in lines["LOG-2"]
    assert await asyncio.to_thread(main, ["hl7", "log", "--outcome", "refused"]) == 0
    refused = capsys.readouterr().out
    assert "LOG-2" in refused and "LOG-1" not in refused
    log_id = lines["LOG-1"].split()[0]
    assert await asyncio.to_thread(main, ["hl7", "show", log_id]) == 0
    shown = capsys.readouterr().out
    assert "PID|1||P500^^^HOSP1||Poe^Lee" in shown.splitlines()
    assert await asyncio.to_thread(main, ["hl7", "show", "999999"]) == 1
    assert "no HL7 message 999999" in capsys.readouterr().err


async def test_mllp_over_tls_with_client_certificates(
    archive: Archive,
    archive_settings: Settings,
    pki: Pki,  # noqa: F811 - the fixture imported above
) -> None:
    """``tls_cert``/``tls_key``/``tls_ca`` as for DIMSE: a sender with a certificate the CA
    signed is served; one without, or speaking plain TCP, gets nothing."""
    settings = dataclasses.replace(
        archive_settings,
        hl7=dataclasses.replace(
            archive_settings.hl7,
            tls_cert=pki.server_cert,
            tls_key=pki.server_key,
            tls_ca=pki.ca,
        ),
    )
    secured = Hl7Listener(dataclasses.replace(archive, settings=settings))
    await secured.start()
    await store(archive, "P600", "DOE^TLS")
    block = b"\x0b" + adt("A08", "TLS-1", "PID|1||P600^^^HOSP1||Roe^Tls").encode() + b"\x1c\x0d"

    def over_tls(context: ssl.SSLContext) -> bytes:
        with (
            socket.create_connection(("127.0.0.1", secured.port), timeout=30) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.sendall(block)
            return _read_block(s)

    def plain() -> bytes:
        with socket.create_connection(("127.0.0.1", secured.port), timeout=30) as s:
            s.sendall(block)
            try:
                return s.recv(4096)
            except ConnectionResetError:
                return b""

    try:
        trusted = client_context(pki, pki.client_cert, pki.client_key)
        assert ack_code(_parse_ack(await asyncio.to_thread(over_tls, trusted))) == "AA"
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            await asyncio.to_thread(over_tls, client_context(pki))
        assert b"MSA" not in await asyncio.to_thread(plain)
    finally:
        await secured.stop()
    (patient,) = await patients.find_patients(archive.db, Identity("P600", "HOSP1"))
    assert patient["patient_name"] == "Roe^Tls"


async def test_other_identifiers_in_pid_3_link_the_identities_the_archive_holds(
    archive: Archive, listener: Hl7Listener
) -> None:
    await store(archive, "P700", "DOE^MAY")
    await store(archive, "B-700", "DOE^MAY", HOSP2)
    (ack,) = await send(
        listener,
        adt("A08", "MSG-IDS", "PID|1||B-700^^^HOSP2~P700^^^HOSP1~NOPE^^^HOSP3||DOE^MAY"),
    )
    assert ack_code(ack) == "AA"
    links = await patients.links_of(archive.db, Identity("P700", "HOSP1"))
    assert links["same_person"] == ["B-700^^^HOSP2", "P700^^^HOSP1"]
    assert [link["created_by"] for link in links["links"]] == ["hl7:HIS1"]
    # Sent again under a new control ID: already linked, nothing more.
    (ack,) = await send(
        listener, adt("A08", "MSG-IDS-2", "PID|1||P700^^^HOSP1~B-700^^^HOSP2||DOE^MAY")
    )
    assert "already up to date" in str(ack.segment("MSA")[3])


async def test_connections_beyond_the_limit_are_closed_and_the_others_served(
    archive: Archive,
) -> None:
    limited = Hl7Listener(archive, max_connections=2)
    await limited.start()
    await store(archive, "P800", "DOE^MAX")
    block = b"\x0b" + adt("A08", "LIMIT-1", "PID|1||P800^^^HOSP1||Roe^Max").encode() + b"\x1c\x0d"
    try:
        held = [socket.create_connection(("127.0.0.1", limited.port), timeout=30) for _ in (1, 2)]
        await asyncio.sleep(0.2)  # both accepted and counted

        def third() -> bytes:
            with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as s:
                try:
                    s.sendall(block)
                    return s.recv(4096)
                except ConnectionError:
                    return b""

        assert await asyncio.to_thread(third) == b""
        held[0].sendall(block)
        ack = _parse_ack(await asyncio.to_thread(_read_block, held[0]))
        assert ack_code(ack) == "AA"
    finally:
        for s in held:
            s.close()
        await limited.stop()
