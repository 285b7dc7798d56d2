"""HL7 v2 ADT messages to engine requests, and outcomes to ACKs: table tests of the pure
functions of vna.gateway.hl7.message, and the MLLP block reader on in-memory streams."""

from __future__ import annotations

import asyncio
import datetime as dt

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vna.admin.adt import ChangeIdentifier, Merge, Refusal, Unlink, UpdateDemographics
from vna.admin.patients import Identity
from vna.config import Hl7SenderSettings, Hl7Settings, Settings, SourceSettings
from vna.gateway.hl7.message import Unreadable, build_ack, decide, head_of, read_message
from vna.gateway.hl7.mllp import BlockReader, FramingError, wrap

SETTINGS = Settings(
    sources=(SourceSettings(name="HOSP1", issuer_of_patient_id="HOSP1"),),
    hl7=Hl7Settings(enabled=True, senders=(Hl7SenderSettings("HIS1", "HOSP1"),)),
)
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
P1 = Identity("P1", "HOSP1")


def msh(event: str, control: str = "C1", facility: str = "HIS1", charset: str = "") -> str:
    fields = ["MSH", "^~\\&", "ADT", facility, "VNA", "ARCHIVE", "20260101120000", "",
              f"ADT^{event}", control, "P", "2.5.1", "", "", "", "", "", charset]  # fmt: skip
    while fields[-1] == "":
        fields.pop()
    return "|".join(fields)


def message(event: str, *segments: str, **kw: str) -> bytes:
    return "\r".join([msh(event, **kw), f"EVN|{event}", *segments]).encode("utf-8") + b"\r"


def decision(raw: bytes) -> object:
    return decide(read_message(raw), SETTINGS)[0]


@pytest.mark.parametrize(
    ("pid", "expected"),
    [
        # Name XPN (family^given^middle^suffix^prefix) to PN (family^given^middle^prefix^suffix).
        (
            "PID|1||P1^^^HOSP1^MR||Doe^John^Q^Jr^Dr||19700102|M",
            UpdateDemographics(
                P1,
                {
                    "PatientName": "Doe^John^Q^Dr^Jr",
                    "PatientBirthDate": "19700102",
                    "PatientSex": "M",
                },
            ),
        ),
        # Only what is sent; a date with a time keeps its date; sex U is unknown (empty).
        (
            "PID|1||P1^^^HOSP1||||197001021230|U",
            UpdateDemographics(P1, {"PatientBirthDate": "19700102", "PatientSex": ""}),
        ),
        # The HL7 null ("") clears; a year alone is left as it is.
        (
            'PID|1||P1||""||1970|""',
            UpdateDemographics(P1, {"PatientName": "", "PatientSex": ""}),
        ),
        # Repetitions: the legal name wins; other authorities' identifiers are other IDs.
        (
            "PID|1||X9^^^OTHER~P1^^^HOSP1||Nick^N^^^^^N~Doe^Jane^^^^^L||19800101|F",
            UpdateDemographics(
                P1,
                {"PatientName": "Doe^Jane", "PatientBirthDate": "19800101", "PatientSex": "F"},
                (Identity("X9", "OTHER"),),
            ),
        ),
        # Escape sequences (2.7): delimiters, the escape itself, hexadecimal data, highlighting.
        (
            "PID|1||P1||O\\T\\Brien\\E\\x^Ren\\XC3A9\\^\\H\\B\\N\\",
            UpdateDemographics(P1, {"PatientName": "O&Brien x^René^B"}),
        ),
    ],
)
def test_demographics_events_become_updates(pid: str, expected: UpdateDemographics) -> None:
    for event in ("A01", "A04", "A08"):
        assert decision(message(event, pid)) == [expected]


def test_a_character_set_from_msh_18_decodes_the_message() -> None:
    raw = message("A08", "PID|1||P1||Müller^Jürgen", charset="8859/1")
    assert decision(raw.decode("utf-8").encode("latin-1")) == [
        UpdateDemographics(P1, {"PatientName": "Müller^Jürgen"})
    ]
    # Undeclared: UTF-8 (ASCII's superset) is read; other bytes are an error naming MSH-18.
    assert decision(message("A08", "PID|1||P1||Müller")) == [
        UpdateDemographics(P1, {"PatientName": "Müller"})
    ]
    with pytest.raises(Unreadable) as caught:
        read_message(message("A08", "PID|1||P1||Müller").decode().encode("latin-1"))
    assert caught.value.refusal.ack_code == "AE"
    assert "MSH-18" in caught.value.refusal.location.replace("^1^", "-")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            message("A40", "PID|1||P1^^^HOSP1", "MRG|P0^^^HOSP1"),
            [Merge(survivor=P1, prior=Identity("P0", "HOSP1"))],
        ),
        (  # Two PID/MRG groups: two merges.
            message("A40", "PID|1||P1", "MRG|P0", "PID|2||P7", "MRG|P8"),
            [
                Merge(survivor=P1, prior=Identity("P0", "HOSP1")),
                Merge(survivor=Identity("P7", "HOSP1"), prior=Identity("P8", "HOSP1")),
            ],
        ),
        (
            message("A47", "PID|1||NEW^^^HOSP1", "MRG|OLD^^^HOSP1"),
            [ChangeIdentifier(new=Identity("NEW", "HOSP1"), prior=Identity("OLD", "HOSP1"))],
        ),
        (
            message("A37", "PID|1||P1", "PID|2||P2"),
            [Unlink(P1, Identity("P2", "HOSP1"))],
        ),
    ],
)
def test_merge_change_and_unlink_events(raw: bytes, expected: list[object]) -> None:
    assert decision(raw) == expected


@pytest.mark.parametrize(
    ("raw", "ack", "code", "words"),
    [
        (message("A08", "PID|1||P1", facility="ELSEWHERE"), "AR", "207", "ELSEWHERE"),
        (message("A03", "PID|1||P1"), "AR", "201", "A03"),
        (message("A08", "PID|1||P1").replace(b"ADT^A08", b"ORU^R01"), "AR", "200", "ORU"),
        (message("A08", "PID|1||P1").replace(b"|P|2.5.1", b"|T|2.5.1"), "AR", "202", "training"),
        (message("A08", "PID|1||P1").replace(b"|P|2.5.1", b"|P|3.0"), "AR", "203", "3.0"),
        (message("A08"), "AE", "100", "no PID"),
        (message("A08", "PID|1||X1^^^OTHER"), "AE", "101", "HOSP1"),
        (message("A08", "PID|1||P1||||1970-01-02"), "AE", "102", "PID-7"),
        (message("A08", "PID|1||P1||||19701302"), "AE", "102", "PID-7"),
        (message("A08", "PID|1||P1|||||Q"), "AE", "102", "table 0001"),
        (message("A40", "PID|1||P1"), "AE", "100", "MRG"),
        (message("A37", "PID|1||P1"), "AE", "100", "two"),
        # Segments that do not use the declared field separator have no PID.
        (message("A08", "PID#1##P1"), "AE", "100", "no PID"),
    ],
)
def test_what_is_not_accepted_is_refused_with_a_code(
    raw: bytes, ack: str, code: str, words: str
) -> None:
    refused = decision(raw)
    assert isinstance(refused, Refusal)
    assert (refused.ack_code, refused.error_code) == (ack, code)
    assert words in refused.text


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"PID|1||P1\r", "does not begin with MSH"),
        (b"", "does not begin with MSH"),
        (b"\x00\xff garbage", "does not begin with MSH"),
        (b"MSH|^~|HIS|HIS1\rPID|1||P1\r", "MSH-1 and MSH-2"),
        (b"MSHA^~\\&A\r", "MSH-1 and MSH-2"),
        (message("A08", "PID|1||P1", charset="EBCDIC"), "not supported"),
    ],
)
def test_unreadable_messages(raw: bytes, words: str) -> None:
    with pytest.raises(Unreadable) as caught:
        read_message(raw)
    assert words in caught.value.refusal.text


def test_the_ack_answers_the_message() -> None:
    parsed = read_message(message("A08", "PID|1||P1", control="MSG-77"))
    ack = hl7.parse(build_ack(parsed, ack_code="AA", text="done", now=NOW).decode())
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "MSG-77"
    assert str(ack.segment("MSH")[9]) == "ACK^A08^ACK"
    # Addressed back: our application/facility are the message's receiving ones.
    assert [str(ack.segment("MSH")[i]) for i in (3, 4, 5, 6)] == ["VNA", "ARCHIVE", "ADT", "HIS1"]
    with pytest.raises(KeyError):
        ack.segment("ERR")


def test_an_error_ack_names_code_location_and_problem_escaped() -> None:
    parsed = read_message(message("A08", "PID|1||P1", charset="8859/1"))
    raw = build_ack(
        parsed,
        ack_code="AE",
        text="PID-3 has no ID | see ^ here & Müller",
        error_code="101",
        location="PID^1^3",
        now=NOW,
    )
    assert "Müller".encode("latin-1") in raw  # answered in the message's character set
    ack = hl7.parse(raw.decode("latin-1"))
    err = ack.segment("ERR")
    assert str(err[2]) == "PID^1^3"
    assert str(err[3]) == "101^Required field missing^HL70357"
    assert ack.unescape(str(err[8])) == "PID-3 has no ID | see ^ here & Müller"
    assert str(ack.segment("MSH")[18]) == "8859/1"


def test_an_ack_for_what_has_no_msh_still_parses() -> None:
    ack = hl7.parse(
        build_ack(None, ack_code="AR", text="no MSH", error_code="100", now=NOW).decode()
    )
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("ERR")[3]).startswith("100^")


def test_the_head_of_an_oversized_message_addresses_its_ack() -> None:
    head = head_of(message("A08", "PID|1||P1", control="BIG1")[:200])
    assert head is not None and head.envelope("").control_id == "BIG1"
    assert head_of(b"garbage") is None


# --- MLLP blocks ----------------------------------------------------------------------------


async def blocks_of(data: bytes, max_bytes: int = 1000) -> list[object]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    blocks = BlockReader(reader, max_bytes=max_bytes, timeout=5)
    out: list[object] = []
    while True:
        try:
            block = await blocks.next_block()
        except FramingError as exc:
            out.append(f"closed: {exc}")
            return out
        if block is None:
            return out
        out.append(block.content if not block.too_large else ("too large", block.content[:6]))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (wrap(b"MSH|one") + wrap(b"MSH|two"), [b"MSH|one", b"MSH|two"]),
        # Line ends between blocks are tolerated.
        (wrap(b"A") + b"\r\n" + wrap(b"B") + b"\n", [b"A", b"B"]),
        # An oversized block is skipped to its end; the next one is read.
        (wrap(b"MSH|x" + b"y" * 5000) + wrap(b"MSH|ok"), [("too large", b"MSH|xy"), b"MSH|ok"]),
        # 0x1C alone (without CR) is content, not the end.
        (wrap(b"A\x1cB"), [b"A\x1cB"]),
        ([], []),
    ],
)
async def test_mllp_blocks(data: bytes, expected: list[object]) -> None:
    assert await blocks_of(bytes(data)) == expected


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (wrap(b"MSH|one") + b"\x0bMSH|cut off", "truncated"),
        (b"MSH|no framing\r", "outside an MLLP block"),
        (wrap(b"A") + b"junk" + wrap(b"B"), "outside an MLLP block"),
    ],
)
async def test_broken_framing_closes_the_connection(data: bytes, words: str) -> None:
    out = await blocks_of(data)
    assert isinstance(out[-1], str) and words in out[-1]


async def test_a_silent_peer_times_out() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"\x0bMSH|half")
    blocks = BlockReader(reader, max_bytes=1000, timeout=0.05)
    with pytest.raises(TimeoutError):
        await blocks.next_block()


# --- whatever arrives, the answer is an ACK -----------------------------------------------------


_PIECES = st.sampled_from(
    ["MSH", "PID", "MRG", "EVN", "|", "^", "~", "\\", "&", "\r", "\n", "ADT", "A08", "A40",
     "HIS1", "P1", "HOSP1", '""', "\\X41\\", "\\", "8859/1", "2.5.1", "\x00", "é"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=60), st.binary(max_size=40))
def test_any_input_is_answered_with_an_ack_never_an_exception(
    pieces: list[str], noise: bytes
) -> None:
    raw = "MSH|^~\\&|A|HIS1|V|V|1||ADT^A08|C|P|2.5.1\r" if pieces[:1] == ["MSH"] else ""
    raw_bytes = (raw + "".join(pieces)).encode("utf-8") + noise
    try:
        parsed = read_message(raw_bytes)
    except Unreadable as exc:
        ack = build_ack(exc.head, ack_code=exc.refusal.ack_code, text=exc.refusal.text, now=NOW)
    else:
        outcome = decide(parsed, SETTINGS)[0]
        code = outcome.ack_code if isinstance(outcome, Refusal) else "AA"
        ack = build_ack(parsed, ack_code=code, text="t", now=NOW)
    assert b"\rMSA" in ack
